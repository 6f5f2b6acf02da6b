// Names only: see ../README.md (or ../../README.md) for why this is enough.
#pragma once

#include "gloo/forward.h"
