#!/usr/bin/env bash
# Installs what difi needs into the project: a Python virtualenv with
# torch==2.11.0 (whose libtorch tch links against) and the Python packages the
# tests use to generate reference inputs, then links `.libtorch` to it.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv
# The stamp names the requirements it installed, so changing them reinstalls.
stamp="$venv/.difi-setup-$(sha256sum scripts/requirements.txt | cut -c1-16)"
if [ ! -f "$stamp" ]; then
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    echo "installing torch 2.11.0 and test requirements into $venv (first run only, ~5 GB)" >&2
    "$venv/bin/python" -m pip install --quiet -r scripts/requirements.txt
    touch "$stamp"
fi
# A relative link, so the checkout can move (binaries find libtorch through
# `$ORIGIN`-relative rpaths that pass through it).
torch_dir=$("$venv/bin/python" -c 'import os, torch; print(os.path.relpath(os.path.dirname(torch.__file__)))')
ln -sfn "$torch_dir" .libtorch

# The Fashion-MNIST tests and demo read Debian's dataset-fashion-mnist.
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && command -v apt-get >/dev/null 2>&1; then
    if [ "$(id -u)" = "0" ]; then
        sudo=""
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo="sudo"
    else
        sudo="none"
    fi
    if [ "$sudo" = "none" ]; then
        echo "note: install Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist) for the Fashion-MNIST tests" >&2
    else
        echo "installing Debian's dataset-fashion-mnist" >&2
        $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends dataset-fashion-mnist >/dev/null
    fi
fi
