// Names only: gloo_declarations/README.md says why that is enough.
#pragma once

#include "gloo/forward.h"
