# trafficmap: the commands the README names. Run `make help` for the list.

SHELL := /bin/bash
CONTROL_PLANE := e2e/controlplane/controlplane.sh
CARGO ?= cargo
# Seconds each fuzz target runs under `make fuzz`.
FUZZ_SECONDS ?= 60
# <crate dir>/fuzz:<target>:<max input bytes>; set it to run a subset
FUZZ_TARGETS ?= sniffer/fuzz:packet_to_observations:9000 \
	operator/fuzz:report_ingest:65536 \
	crds/fuzz:render_client_intents:65536

.PHONY: help build test unit-test e2e-test lint crds fuzz chaos control-plane-up control-plane-down down demo

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-20s %s\n", $$1, $$2}'

build: ## Build every crate and the local control plane
	$(CARGO) build --workspace --all-targets
	$(CONTROL_PLANE) build

test: unit-test e2e-test ## Unit, integration and e2e tests (starts and stops the control plane)

unit-test: ## Tests that need no control plane (the sniffer's need root for network namespaces)
	$(CARGO) test --workspace --exclude trafficmap-e2e

e2e-test: ## Integration and e2e tests against a real kube-apiserver started for the run
	$(CARGO) build --workspace --bins
	$(CONTROL_PLANE) up
	bash e2e/controlplane/smoke.sh && $(CARGO) test -p trafficmap-e2e; rc=$$?; $(CONTROL_PLANE) down; exit $$rc

lint: ## rustfmt, clippy (warnings are errors), go vet, and stale generated CRDs
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	cd e2e/controlplane && go vet ./...
	$(CARGO) test -q -p trafficmap-api --test crd_yaml_is_current

crds: ## Regenerate crds/yaml from the Rust types
	$(CARGO) run -q -p trafficmap-api --bin crdgen -- --write crds/yaml

chaos: ## Chaos cases (hostile input, kills, restarts) against a local control plane; one "chaos: <case>: pass|fail" line each
	$(CARGO) build --workspace --bins
	$(CONTROL_PLANE) up
	target/debug/trafficmap-chaos; rc=$$?; $(CONTROL_PLANE) down; exit $$rc

fuzz: ## Fuzz each target FUZZ_SECONDS s (default 60); needs nightly Rust and cargo-fuzz, never run by test or CI
	@rustup run nightly rustc --version >/dev/null 2>&1 || { echo "make fuzz: needs a nightly toolchain: rustup toolchain install nightly" >&2; exit 2; }
	@command -v cargo-fuzz >/dev/null 2>&1 || { echo "make fuzz: needs cargo-fuzz: cargo install cargo-fuzz" >&2; exit 2; }
	@set -e; for spec in $(FUZZ_TARGETS); do \
	  IFS=: read -r dir target max_len <<< "$$spec"; \
	  mkdir -p "$$dir/corpus/$$target"; \
	  echo "fuzz: $$target ($$dir) for $(FUZZ_SECONDS) s"; \
	  ( cd "$$dir" && CARGO_TARGET_DIR="$(CURDIR)/target/fuzz" cargo +nightly fuzz run --debug-assertions "$$target" \
	      "corpus/$$target" "seeds/$$target" -- -max_total_time=$(FUZZ_SECONDS) -max_len=$$max_len \
	      -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 ) \
	    || { echo "fuzz: $$target: failed; the crashing input is in $$dir/artifacts/$$target/" >&2; exit 1; }; \
	done

control-plane-up: ## Build (first time) and start the local control plane; prints the kubeconfig path
	$(CONTROL_PLANE) up

control-plane-down: ## Stop the local control plane and remove its data
	$(CONTROL_PLANE) down

down: control-plane-down ## Stop everything the project started

demo: ## The ecom demo end to end (arrives with the end-to-end issue)
	@echo "make demo is not available yet: it needs the node simulator and scenario runner (issue #6)." >&2
	@echo "Today you can run: make control-plane-up" >&2
	@exit 1
