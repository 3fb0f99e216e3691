#!/usr/bin/env bash
# `make demo`: the ecom demo end to end on this machine. Starts the local control plane, runs the
# scenario (simulated node with CoreDNS and kube-proxy, the pods' traffic, the real sniffer and
# operator) showing progress, prints the map (`kubectl trafficmap list`, `kubectl get
# observedtraffic`) and tears everything down. It starts from a fresh control plane.
#
#   e2e/demo.sh            run, print the map, tear down; exit 0 only if the map is exact
#   KEEP=1 e2e/demo.sh     leave it all running for kubectl; `e2e/demo.sh stop` (make down) ends it
#   e2e/demo.sh stop       stop a kept demo (idempotent)
#
# SCENARIO=path.yaml picks another scenario file. NODE=real runs it on the real node
# (e2e/node/node.sh: kubelet, containerd, runc; trafficmap installed with helm) instead of the
# node simulator; it needs the images of `make images`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"
SCENARIO="${SCENARIO:-e2e/scenarios/ecom-demo.yaml}"
NODE_BIN="$ROOT/target/debug/trafficmap-node"
NODE="${NODE:-sim}"
REAL_NODE="$ROOT/e2e/node/node.sh"
CONTROL_PLANE="$ROOT/e2e/controlplane/controlplane.sh"
LOG="$ROOT/target/e2e-logs/demo.log"
PIDFILE="$ROOT/.run/demo.pid"
export KUBECONFIG="$ROOT/.run/kubeconfig"
# kubectl finds the plugin `kubectl-trafficmap` on PATH.
export PATH="$ROOT/target/debug:$PATH"

say() { echo "demo: $*" >&2; }

# pid of a running demo runner, else empty.
runner_pid() {
  local pid
  pid="$(cat "$PIDFILE" 2>/dev/null || true)"
  if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null \
    && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "trafficmap-node scenario"; then
    echo "$pid"
  fi
}

# Interrupts the runner (it tears its node, pods and processes down) and waits for it.
stop_runner() {
  local pid
  pid="$(runner_pid)"
  if [[ -n "$pid" ]]; then
    say "stopping the scenario (pods, node, sniffer, operator)"
    kill -INT "$pid" 2>/dev/null || true
    for _ in $(seq 1 120); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    if kill -0 "$pid" 2>/dev/null; then
      say "the runner did not stop in 120 s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$PIDFILE"
}

if [[ "${1:-}" == stop ]]; then
  stop_runner
  exit 0
fi

[[ "$NODE" == sim || "$NODE" == real ]] || { say "NODE must be sim or real, not $NODE"; exit 1; }
for f in "$NODE_BIN" "$ROOT/target/debug/kubectl-trafficmap" "$SCENARIO"; do
  [[ -e "$f" ]] || { say "$f is missing (run through make demo, which builds it)"; exit 1; }
done
if [[ "$(id -u)" != 0 ]]; then
  say "needs root: pods are network namespaces, veth pairs, nftables rules and cgroups"
  exit 1
fi

stop_runner
# A fresh control plane, so the map shows this demo's calls only.
"$REAL_NODE" down >/dev/null 2>&1 || true
"$CONTROL_PLANE" down >/dev/null 2>&1 || true
"$CONTROL_PLANE" up >/dev/null
if [[ "$NODE" == real ]]; then
  say "bringing up the real node (kubelet, containerd, CNI, kube-proxy, CoreDNS)"
  "$REAL_NODE" up >/dev/null
fi
mkdir -p "$(dirname "$LOG")" "$(dirname "$PIDFILE")"
: >"$LOG"
setsid "$NODE_BIN" scenario --keep --node "$NODE" "$SCENARIO" >"$LOG" 2>&1 </dev/null &
echo $! >"$PIDFILE"
pid=$!

finish() {
  local rc=$?
  if [[ -z "${KEEP:-}" || $rc -ne 0 ]]; then
    stop_runner
    "$REAL_NODE" down >/dev/null 2>&1 || true
    "$CONTROL_PLANE" down >/dev/null 2>&1 || true
  fi
  exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT TERM

# Follow the runner's output until it has scored the map (the runner keeps running after that).
shown=0
while :; do
  lines=$(wc -l <"$LOG")
  if ((lines > shown)); then
    sed -n "$((shown + 1)),${lines}p" "$LOG" | grep -v '^scenario: still running' || true
    shown=$lines
  fi
  if grep -q '^recall=' "$LOG" && grep -q '^scenario: still running' "$LOG"; then
    break
  fi
  if ! kill -0 "$pid" 2>/dev/null; then
    say "the scenario runner exited early; its output is above and in $LOG"
    exit 1
  fi
  sleep 1
done
sed -n "$((shown + 1)),\$p" "$LOG" | grep -v '^scenario: still running' || true

echo
echo "\$ kubectl trafficmap list"
kubectl trafficmap list
echo
echo "\$ kubectl get observedtraffic"
kubectl get observedtraffic

score="$(grep '^recall=' "$LOG" | tail -1)"
perfect=0
[[ "$score" == "recall=1.000 precision=1.000"* ]] && perfect=1

if [[ -n "${KEEP:-}" ]]; then
  cat <<EOF

The demo keeps running (pods, node, sniffer, operator; log: $LOG).
  export KUBECONFIG=$KUBECONFIG PATH=$ROOT/target/debug:\$PATH
  kubectl trafficmap export                                 # the draft ClientIntents, as YAML
  kubectl trafficmap export --output-type dir -o intents/   # one file per workload, for Git
  kubectl trafficmap diff                                   # observed calls vs ClientIntents
  kubectl trafficmap diff -f intents/                       # ... vs the files
  kubectl trafficmap visualize --format svg -o map.svg      # the graph (dot, svg or png)
  kubectl get clientintents -A
Stop it with: make down
EOF
fi
((perfect)) || { say "the map is not exact: $score"; exit 1; }
