#!/usr/bin/env bash
# Copies what scripts/device-check.sh needs into .device/ (git-ignored): the
# release binary and a Fashion-MNIST test set. The GPU machine has torch in
# its python3 but no cargo; the reference fixtures travel with the repository
# (tests/fixtures/).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release
rm -rf .device && mkdir -p .device
cp target/release/difi .device/
if [ -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ]; then
    ./target/release/difi --log warn dataset convert \
        --source /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz --dest .device/fashion-mnist-test.zip
fi
du -sh .device
