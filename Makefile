# difi: the two entry points of the README, and a few helpers.
#   make demo   installs everything (first run: torch into .venv) and runs the main job
#   make test   installs everything and runs all tests (and fuzzes the file readers)

CARGO ?= cargo
DIFI = ./target/release/difi
DEMO_RUN ?= runs/demo
TOY_RUN ?= runs/toy
FMNIST ?= /usr/share/datasets/fashion-mnist

.PHONY: setup build demo toy test lint fuzz teacher-data teacher clean-runs

setup:
	./scripts/setup.sh

build: setup
	$(CARGO) build --release

# Distills the embedded Fashion-MNIST teacher into a one-step generator
# without data (about 13 minutes on two CPU cores), then shows teacher and
# student side by side with their proxy-FIDs and speeds. Replaces runs/demo.
demo: build
	rm -rf $(DEMO_RUN)
	$(DIFI) distill configs/demo-fmnist.ron --outdir $(DEMO_RUN)
	$(DIFI) showcase $(DEMO_RUN) --out $(DEMO_RUN)/showcase.png
	$(DIFI) report $(DEMO_RUN)

# Distills an exact 8-mode Gaussian mixture and measures the generator against
# exact teacher samples (about a minute). Replaces runs/toy.
toy: build
	rm -rf $(TOY_RUN)
	$(DIFI) distill configs/toy-gmm.ron --outdir $(TOY_RUN)
	$(DIFI) evaluate --run $(TOY_RUN)

# All tests, then a bounded fuzzing run of every reader of untrusted files
# (FUZZ_SECONDS each; make test FUZZ_SECONDS=0 skips it).
test: setup
	$(CARGO) test --workspace
	[ "$(FUZZ_SECONDS)" = "0" ] || $(MAKE) fuzz

lint: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Fuzzes every reader of untrusted files for FUZZ_SECONDS each (difi-fuzz
# --list names them); fails if any target has findings, which are left in
# fuzz/findings/ (replay one with difi-fuzz TARGET --replay FILE).
FUZZ_SECONDS ?= 60
FUZZ_SEED ?= 1
fuzz: setup
	$(CARGO) build -p difi-fuzz
	status=0; for target in $$(./target/debug/difi-fuzz --list | cut -d' ' -f1); do \
		OMP_NUM_THREADS=1 ./target/debug/difi-fuzz $$target --seconds $(FUZZ_SECONDS) --seed $(FUZZ_SEED) || status=1; \
	done; exit $$status

# Fashion-MNIST (Debian's dataset-fashion-mnist) at 16x16, for training the teacher.
teacher-data: build
	mkdir -p datasets
	[ -f datasets/fashion-mnist-16x16-train.zip ] || $(DIFI) dataset convert \
		--source $(FMNIST)/train-images-idx3-ubyte.gz --dest datasets/fashion-mnist-16x16-train.zip --resolution 16x16
	[ -f datasets/fashion-mnist-16x16-test.zip ] || $(DIFI) dataset convert \
		--source $(FMNIST)/t10k-images-idx3-ubyte.gz --dest datasets/fashion-mnist-16x16-test.zip --resolution 16x16

# Trains the embedded teacher again (see docs/results.md for its cost).
teacher: teacher-data
	$(DIFI) train-teacher configs/teacher-fmnist.ron --outdir runs/teacher-fmnist

clean-runs:
	rm -rf runs
