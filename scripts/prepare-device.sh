#!/usr/bin/env bash
# Copies what scripts/device-check.sh needs into .device/ (git-ignored): the
# release binary, the test binaries whose checks need a GPU, and a
# Fashion-MNIST test set. The GPU machine has torch in its python3 but no
# cargo; the reference fixtures travel with the repository (tests/fixtures/).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release
rm -rf .device && mkdir -p .device
cp target/release/difi .device/
# Tests that return early without a GPU, built here and run there by name.
test_binary() {
    cargo test --release --no-run --message-format=json "$@" 2>/dev/null | python3 -c '
import json, sys
print([m["executable"] for m in map(json.loads, sys.stdin) if m.get("executable")][-1])'
}
cp "$(test_binary -p difi-torch-ext --lib)" .device/test-torch-ext
cp "$(test_binary -p difi-train --test cuda_graph)" .device/test-cuda-graph
if [ -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ]; then
    ./target/release/difi --log warn dataset convert \
        --source /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz --dest .device/fashion-mnist-test.zip
fi
du -sh .device
