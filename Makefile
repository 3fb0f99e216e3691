# trafficmap: the commands the README names. Run `make help` for the list.

SHELL := /bin/bash
CONTROL_PLANE := e2e/controlplane/controlplane.sh
CARGO ?= cargo

.PHONY: help build test unit-test e2e-test lint crds control-plane-up control-plane-down down demo bench

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

control-plane-up: ## Build (first time) and start the local control plane; prints the kubeconfig path
	$(CONTROL_PLANE) up

control-plane-down: ## Stop the local control plane and remove its data
	$(CONTROL_PLANE) down

bench: ## Issue 8 figures on release builds with a control plane of its own (~15 min, root; not part of test)
	$(CARGO) build --release --workspace --bins
	mkdir -p target/bench-logs
	$(CARGO) bench -p trafficmap-sniffer --bench dns_parse -- --warm-up-time 2 --measurement-time 5 >target/bench-logs/criterion.log 2>&1
	$(CONTROL_PLANE) up
	./target/release/trafficmap-bench all; rc=$$?; $(CONTROL_PLANE) down; exit $$rc

down: control-plane-down ## Stop everything the project started

demo: ## The ecom demo end to end (arrives with the end-to-end issue)
	@echo "make demo is not available yet: it needs the node simulator and scenario runner (issue #6)." >&2
	@echo "Today you can run: make control-plane-up" >&2
	@exit 1
