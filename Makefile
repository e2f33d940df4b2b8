# llama-router: build, test, lint, bench and fetch the demo model.
# Run `make help` for the targets.

CARGO ?= cargo
PYTHON ?= python3
VENV ?= .venv
MODELS_CACHE ?= $(HOME)/.cache/llama-router/models
DEMO_MODEL := $(MODELS_CACHE)/gemma-3-270m-q4_k_m.gguf
BIN := target/release/llama-router
FUZZ_SECONDS ?= 60

.PHONY: help build demo demo-model venv test test-rust test-python lint bench fuzz clean

help:
	@echo "make demo        build, fetch the demo model, serve it and load it (the main job)"
	@echo "make test        every test: Rust unit + integration, Python conformance"
	@echo "make lint        cargo fmt --check and clippy -D warnings"
	@echo "make bench       benchmarks under bench/ (ratios against a baseline)"
	@echo "make build       release binary at $(BIN)"
	@echo "make demo-model  fetch Gemma 3 270M Q4_K_M into $(MODELS_CACHE)"
	@echo "make fuzz        run the GGUF parser fuzzer for FUZZ_SECONDS (needs cargo-fuzz)"

build:
	$(CARGO) build --release --locked

demo-model: $(DEMO_MODEL)

$(DEMO_MODEL):
	$(PYTHON) scripts/fetch_demo_model.py --dest $(MODELS_CACHE)

demo: build demo-model
	BIN=$(BIN) MODELS_CACHE=$(MODELS_CACHE) scripts/demo.sh

venv: $(VENV)/.installed

$(VENV)/.installed: integration/python/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r integration/python/requirements.txt
	touch $@

test: test-rust test-python

test-rust:
	$(CARGO) test --locked

# Uses the debug binary `cargo test` just built: one build serves every test.
test-python: demo-model venv
	$(CARGO) build --locked --bin llama-router
	ROUTER_TEST_BIN=$(CURDIR)/target/debug/llama-router DEMO_MODEL=$(DEMO_MODEL) \
		$(VENV)/bin/pytest -q integration/python

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

bench: demo-model
	DEMO_MODEL=$(DEMO_MODEL) $(CARGO) bench --locked --bench gguf_header
	DEMO_MODEL=$(DEMO_MODEL) $(CARGO) bench --locked --bench daemon

fuzz:
	mkdir -p fuzz/corpus/gguf_parse
	cd fuzz && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run gguf_parse corpus/gguf_parse seeds -- -max_total_time=$(FUZZ_SECONDS)

clean:
	$(CARGO) clean
	rm -rf $(VENV)
