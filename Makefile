# difi: the two entry points of the README, and a few helpers.
#   make demo   installs everything (first run: torch into .venv) and runs the main job
#   make test   installs everything and runs all tests

CARGO ?= cargo
DEMO_RUN ?= runs/demo

.PHONY: setup build demo test lint clean-runs

setup:
	./scripts/setup.sh

build: setup
	$(CARGO) build --release

# Distills the default config (the exact 8-mode Gaussian-mixture teacher) and
# measures the generator against exact teacher samples. Replaces runs/demo.
demo: build
	rm -rf $(DEMO_RUN)
	./target/release/difi distill configs/toy-gmm.ron --outdir $(DEMO_RUN)
	./target/release/difi evaluate --run $(DEMO_RUN)
	./target/release/difi sample --run $(DEMO_RUN) --n 10000 --out $(DEMO_RUN)/samples.npy

test: setup
	$(CARGO) test --workspace

lint: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean-runs:
	rm -rf runs
