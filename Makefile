# trafficmap: the commands the README names. Run `make help` for the list.

SHELL := /bin/bash
CONTROL_PLANE := e2e/controlplane/controlplane.sh
CARGO ?= cargo
NODE := target/debug/trafficmap-node
SCENARIO ?= e2e/scenarios/ecom-demo.yaml

.PHONY: help build go-binaries test unit-test e2e-test lint crds control-plane-up control-plane-down \
	down demo scenario

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-20s %s\n", $$1, $$2}'

build: go-binaries ## Build every crate, the local control plane and CoreDNS
	$(CARGO) build --workspace --all-targets

go-binaries: ## Build the local control plane (and kube-proxy) and CoreDNS from their Go modules
	$(CONTROL_PLANE) build
	cd e2e/coredns && go build -buildvcs=false -o ../../target/go/coredns .

test: unit-test e2e-test ## Unit, integration and e2e tests (starts and stops the control plane)

unit-test: ## Tests that need no control plane (the sniffer's need root for network namespaces)
	$(CARGO) test --workspace --exclude trafficmap-e2e

e2e-test: go-binaries ## Integration and e2e tests (scenarios included; root) on a control plane started for the run
	$(CARGO) build --workspace --bins
	$(CONTROL_PLANE) up
	bash e2e/controlplane/smoke.sh && $(CARGO) test -p trafficmap-e2e; rc=$$?; $(CONTROL_PLANE) down; exit $$rc

lint: ## rustfmt, clippy (warnings are errors), go vet, and stale generated CRDs
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	cd e2e/controlplane && go vet ./...
	cd e2e/coredns && go vet ./...
	$(CARGO) test -q -p trafficmap-api --test crd_yaml_is_current

crds: ## Regenerate crds/yaml from the Rust types
	$(CARGO) run -q -p trafficmap-api --bin crdgen -- --write crds/yaml

control-plane-up: ## Build (first time) and start the local control plane; prints the kubeconfig path
	$(CONTROL_PLANE) up

control-plane-down: ## Stop the local control plane and remove its data
	$(CONTROL_PLANE) down

scenario: go-binaries ## Run one scenario (SCENARIO=path.yaml, SCENARIO_FLAGS=--sniffer-late; root); prints recall and precision
	$(CARGO) build --workspace --bins
	$(CONTROL_PLANE) up >/dev/null
	$(NODE) scenario $(SCENARIO_FLAGS) $(SCENARIO)

demo: go-binaries ## The ecom demo end to end, then the map (KEEP=1 leaves it running; root)
	$(CARGO) build --workspace --bins
	KEEP=$(KEEP) SCENARIO=$(SCENARIO) e2e/demo.sh

down: ## Stop everything the project started (a kept demo, a killed run's leftovers, the control plane)
	-e2e/demo.sh stop
	-[ ! -x $(NODE) ] || $(NODE) cleanup
	$(CONTROL_PLANE) down
