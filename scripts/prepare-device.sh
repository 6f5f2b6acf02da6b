#!/usr/bin/env bash
# Copies what scripts/device-check.sh needs into .device/ (git-ignored): the
# release binary and the reference fixtures. The GPU machine has torch in its
# python3 but neither cargo nor ../shared.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release
rm -rf .device && mkdir -p .device/fixtures
cp target/release/difi .device/
cp -r ../shared/fixtures/edm ../shared/fixtures/data .device/fixtures/
if [ -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ]; then
    ./target/release/difi --log warn dataset convert \
        --source /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz --dest .device/fashion-mnist-test.zip
fi
du -sh .device
