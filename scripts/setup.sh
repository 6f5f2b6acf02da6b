#!/usr/bin/env bash
# Installs what difi needs into the project: a Python virtualenv with
# torch==2.11.0 (whose libtorch tch links against) and the Python packages the
# tests use to generate reference inputs, then links `.libtorch` to it.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv
stamp="$venv/.difi-setup-1"
if [ ! -f "$stamp" ]; then
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    echo "installing torch 2.11.0 and test requirements into $venv (first run only, ~5 GB)" >&2
    "$venv/bin/python" -m pip install --quiet -r scripts/requirements.txt
    touch "$stamp"
fi
torch_dir=$("$venv/bin/python" -c 'import os, torch; print(os.path.dirname(torch.__file__))')
ln -sfn "$torch_dir" .libtorch
