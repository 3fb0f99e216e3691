#!/usr/bin/env bash
# Local Kubernetes control plane for the e2e tests (real etcd, kube-apiserver,
# kube-controller-manager and kube-scheduler v1.36.3, built from the Go modules;
# nodes come from the simulator or e2e/node). Needs root: the apiserver's address
# is on a link of its own.
#
#   controlplane.sh build    go build to <root>/target/go/controlplane
#   controlplane.sh up       start it (idempotent); last line = kubeconfig path
#   controlplane.sh down     stop it and delete its data (idempotent)
#   controlplane.sh status   "running ..." (exit 0) or "not running" (exit 1)
#   controlplane.sh restart-apiserver
#                            kill the kube-apiserver (SIGKILL, as a crash) and start it
#                            again on the same port and etcd data; returns once ready
#
# Files: <root>/.run/kubeconfig (admin), <root>/.run/controlplane/{ca.crt,
# state.json,kubeconfig,ready,*.log}.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
ROOT="$(cd "$HERE/../.." && pwd -P)"
BIN="$ROOT/target/go/controlplane"
RUN="$ROOT/.run"
DIR="$RUN/controlplane"
PIDFILE="$DIR/supervisor.pid"
KUBECONFIG_OUT="$RUN/kubeconfig"
READY_TIMEOUT="${CONTROLPLANE_READY_TIMEOUT:-180}"
K8S_VERSION=v1.36.3
# The kube-apiserver listens on, and advertises, API_IP on a link of its own: the
# `default/kubernetes` endpoints need an address that is not loopback (components.go:
# apiserverIP). The link is a bridge with no ports, as this kernel has no dummy links.
API_LINK=tm-apiserver
API_IP=10.255.255.1

log() { echo "controlplane: $*" >&2; }

build() {
  mkdir -p "$(dirname "$BIN")"
  local v=k8s.io/component-base/version
  (cd "$HERE" && go build -buildvcs=false -o "$BIN" \
    -ldflags "-s -w -X $v.gitVersion=$K8S_VERSION -X $v.gitMajor=1 -X $v.gitMinor=36 -X $v.gitTreeState=clean" .)
}

# pid of the recorded supervisor if it is alive and really ours, else empty.
supervisor_pid() {
  local pid
  pid="$(cat "$PIDFILE" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 0
  if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "controlplane up"; then
    echo "$pid"
  fi
}

apiserver_url() {
  sed -n 's/^ *"apiserver": *"\([^"]*\)".*/\1/p' "$DIR/state.json" 2>/dev/null || true
}

# pids of processes in process group $1 whose command line is this binary.
group_members() {
  ps -e -o pid=,pgid=,args= | awk -v g="$1" -v bin="$BIN" '$2 == g && index($0, bin) { print $1 }'
}

# 0 when the apiserver's /readyz answers ok.
readyz_ok() {
  local url
  url="$(apiserver_url)"
  [[ -n "$url" && -f "$DIR/ca.crt" ]] || return 1
  [[ "$(curl -sS --max-time 3 --cacert "$DIR/ca.crt" "$url/readyz" 2>/dev/null)" == ok ]]
}

print_logs() {
  local f
  for f in supervisor.log etcd.log apiserver.log controller-manager.log; do
    [[ -f "$DIR/$f" ]] || continue
    echo "===== tail $DIR/$f =====" >&2
    tail -n 40 "$DIR/$f" >&2
  done
}

# Wait until the supervisor writes DIR/ready; fail if it dies or times out.
wait_ready() {
  local pid="$1" deadline=$((SECONDS + READY_TIMEOUT))
  while [[ ! -f "$DIR/ready" ]]; do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "supervisor (pid $pid) exited before becoming ready"
      print_logs
      return 1
    fi
    if ((SECONDS >= deadline)); then
      log "not ready after ${READY_TIMEOUT}s"
      print_logs
      return 1
    fi
    sleep 0.2
  done
  cp "$DIR/kubeconfig" "$KUBECONFIG_OUT.tmp" && mv "$KUBECONFIG_OUT.tmp" "$KUBECONFIG_OUT"
  log "ready: $(apiserver_url)"
  echo "$KUBECONFIG_OUT"
}

# Serialise up/down (two concurrent `up`s must not start two supervisors).
# The lock lives next to the binary, so `down` leaves nothing in .run.
lock() {
  mkdir -p "$(dirname "$BIN")"
  exec 9>"$BIN.lock"
  flock 9
}

# The link that carries API_IP (idempotent).
ensure_api_link() {
  ip link show "$API_LINK" >/dev/null 2>&1 || ip link add "$API_LINK" type bridge
  ip addr replace "$API_IP/32" dev "$API_LINK"
  ip link set "$API_LINK" up
}

up() {
  local pid
  lock
  pid="$(supervisor_pid)"
  if [[ -n "$pid" ]]; then
    if [[ ! -f "$DIR/ready" ]]; then
      log "supervisor $pid is still starting, waiting"
      wait_ready "$pid"
      return
    fi
    if readyz_ok; then
      [[ -f "$KUBECONFIG_OUT" ]] || cp "$DIR/kubeconfig" "$KUBECONFIG_OUT"
      echo "$KUBECONFIG_OUT"
      return 0
    fi
    log "supervisor $pid runs but /readyz fails: restarting"
  fi
  stop >/dev/null
  build
  ensure_api_link
  mkdir -p "$DIR"
  # setsid: the supervisor leads its own process group, which `down` can kill.
  setsid "$BIN" up --dir "$DIR" </dev/null >"$DIR/supervisor.log" 2>&1 9>&- &
  pid=$!
  echo "$pid" >"$PIDFILE"
  wait_ready "$pid"
}

down() {
  lock
  stop
}

# stop the supervisor and its children, delete the state (lock held).
stop() {
  local pid left i
  pid="$(cat "$PIDFILE" 2>/dev/null || true)"
  if [[ "$pid" =~ ^[0-9]+$ ]]; then
    if [[ -n "$(supervisor_pid)" ]]; then
      kill -TERM "$pid" 2>/dev/null || true
      for ((i = 0; i < 75; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    fi
    # The supervisor was started with setsid, so its process group id is its
    # pid: SIGKILL whatever of that group still runs this binary.
    for ((i = 0; i < 50; i++)); do
      left="$(group_members "$pid")"
      [[ -n "$left" ]] || break
      # shellcheck disable=SC2086
      kill -KILL $left 2>/dev/null || true
      sleep 0.1
    done
  fi
  rm -rf "$DIR" "$KUBECONFIG_OUT" "$KUBECONFIG_OUT.tmp"
  ip link del "$API_LINK" 2>/dev/null || true
  echo "controlplane: down"
}

restart_apiserver() {
  local pid i
  lock
  pid="$(supervisor_pid)"
  if [[ -z "$pid" || ! -f "$DIR/ready" ]]; then
    log "not running: nothing to restart"
    return 1
  fi
  kill -USR1 "$pid"
  for ((i = 0; i < 50; i++)); do [[ -f "$DIR/ready" ]] || break; sleep 0.1; done
  if [[ -f "$DIR/ready" ]]; then
    log "the supervisor did not start a restart"
    return 1
  fi
  wait_ready "$pid" >/dev/null
  log "kube-apiserver restarted"
}

status() {
  local pid
  pid="$(supervisor_pid)"
  if [[ -n "$pid" && -f "$DIR/ready" ]] && readyz_ok; then
    echo "running (pid $pid, apiserver $(apiserver_url), KUBECONFIG=$KUBECONFIG_OUT)"
    return 0
  fi
  if [[ -n "$pid" ]]; then
    echo "not running (supervisor $pid alive but not ready)"
  else
    echo "not running"
  fi
  return 1
}

case "${1:-}" in
  build) build ;;
  up) up ;;
  down) down ;;
  status) status ;;
  restart-apiserver) restart_apiserver ;;
  *)
    echo "usage: $0 build|up|down|status|restart-apiserver" >&2
    exit 2
    ;;
esac
