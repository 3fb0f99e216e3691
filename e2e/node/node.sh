#!/usr/bin/env bash
# A real single-node cluster on this machine: the local control plane (controlplane.sh), plus a
# kubelet (built from the Kubernetes Go modules), containerd v2 (built from its Go module) with
# Debian's runc, CNI (Debian's bridge, host-local, loopback and portmap plugins), kube-proxy
# (nftables mode) and CoreDNS as a Deployment. Images come only from target/images/ (make images):
# they are imported into containerd, nothing is pulled.
#
#   node.sh build    build the kubelet (in the control plane binary) and containerd
#   node.sh up       start it all (idempotent); last line = kubeconfig path
#   node.sh down     stop it and remove everything it made, also after a killed run (idempotent)
#   node.sh status   "running ..." (exit 0) or "not running" (exit 1)
#   node.sh restart kubelet|containerd
#                    kill one daemon (SIGKILL, as a crash) and start it again
#   node.sh usage NAMESPACE
#                    memory and CPU time of that namespace's containers, from their cgroups
#
# Everything it makes is named tm-* or lives under /var/lib/trafficmap-node, /run/trafficmap-node
# or the cgroup /trafficmap-node, so `down` finds it without a record.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
ROOT="$(cd "$HERE/../.." && pwd -P)"
CONTROL_PLANE="$ROOT/e2e/controlplane/controlplane.sh"
CP_BIN="$ROOT/target/go/controlplane"
BIN_DIR="$ROOT/target/go/node"
IMAGES="$ROOT/target/images"
CP_DIR="$ROOT/.run/controlplane"
KUBECONFIG_ADMIN="$ROOT/.run/kubeconfig"

NODE_NAME=tm-real
# The node's address (kubelet --node-ip, hostNetwork pods), on a link of its own.
NODE_LINK=tm-node0
NODE_IP=10.255.1.1
# Pods: the node's podCIDR (set on the Node as node-ipam would) on the CNI bridge.
POD_CIDR=10.244.1.0/24
POD_GATEWAY=10.244.1.1
# host-local hands addresses out round robin: in a /24 one is reused only after 253 others. A
# range of 32 (more than any scenario runs at once) makes pods reuse freed addresses within a few
# scenarios, as on a busy node, so the suite exercises IP reuse on this node too.
POD_RANGE_START=10.244.1.2
POD_RANGE_END=10.244.1.33
CLUSTER_POD_CIDR=10.244.0.0/16
CNI_BRIDGE=tm-cni0
CLUSTER_DNS=10.96.0.10
NFT_TABLE=trafficmap-real-node
LIB=/var/lib/trafficmap-node
RUN=/run/trafficmap-node
CGROUP=trafficmap-node
SOCK="$RUN/containerd/containerd.sock"
READY_TIMEOUT="${NODE_READY_TIMEOUT:-180}"
KUBELET_HEALTHZ=10248

log() { echo "node: $*" >&2; }
die() { log "$*"; exit 1; }

build() {
  bash "$CONTROL_PLANE" build
  mkdir -p "$BIN_DIR"
  (cd "$HERE/containerd" && CGO_ENABLED=0 go build -buildvcs=false -trimpath \
    -tags "no_btrfs no_devmapper no_zfs" -ldflags "-s -w" -o "$BIN_DIR/" \
    github.com/containerd/containerd/v2/cmd/containerd \
    github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 \
    github.com/containerd/containerd/v2/cmd/ctr)
}

kubectl_admin() { kubectl --kubeconfig "$KUBECONFIG_ADMIN" "$@"; }
ctr_() { "$BIN_DIR/ctr" --address "$SOCK" -n k8s.io "$@"; }

# pid of a daemon we started if it still runs (pidfile + matching command line).
daemon_pid() {
  local pid
  pid="$(cat "$RUN/$1.pid" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null \
    && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$2" && echo "$pid"
  return 0
}

# start_daemon NAME MATCH CMD...: run CMD in its own session, log to LIB/logs/NAME.log.
start_daemon() {
  local name="$1" match="$2"
  shift 2
  [[ -z "$(daemon_pid "$name" "$match")" ]] || return 0
  mkdir -p "$LIB/logs"
  setsid "$@" </dev/null >>"$LIB/logs/$name.log" 2>&1 &
  echo $! >"$RUN/$name.pid"
  log "started $name (pid $!), log $LIB/logs/$name.log"
}

# wait_for WHAT SECONDS CMD...: retry CMD every 0.5 s.
wait_for() {
  local what="$1" limit="$2" deadline=$((SECONDS + $2))
  shift 2
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      log "$what: not ready after ${limit}s"
      tail_logs
      return 1
    fi
    sleep 0.5
  done
}

tail_logs() {
  local f
  for f in "$LIB"/logs/*.log; do
    [[ -f "$f" ]] || continue
    echo "===== tail $f =====" >&2
    tail -n 25 "$f" >&2
  done
}

network() {
  # The nftables tables that exist before the node: `down` removes the ones it added (the
  # kubelet's iptables-nft tables, kube-proxy's, ours) and no others.
  [[ -f "$LIB/nft-tables.before" ]] || nft list tables >"$LIB/nft-tables.before"
  ip link show "$NODE_LINK" >/dev/null 2>&1 || ip link add "$NODE_LINK" type bridge
  ip addr replace "$NODE_IP/32" dev "$NODE_LINK"
  ip link set "$NODE_LINK" up
  [[ -f "$LIB/ip_forward.orig" ]] || cat /proc/sys/net/ipv4/ip_forward >"$LIB/ip_forward.orig"
  echo 1 >/proc/sys/net/ipv4/ip_forward
  # Routed traffic only between our own tm-* links: nothing a pod sends leaves the machine.
  nft -f - <<EOF
table inet $NFT_TABLE {}
delete table inet $NFT_TABLE
table inet $NFT_TABLE {
  chain forward {
    type filter hook forward priority -10; policy accept;
    iifname "tm-*" oifname != "tm-*" counter drop
    oifname "tm-*" iifname != "tm-*" counter drop
  }
}
EOF
}

containerd_config() {
  cat <<EOF
version = 3
root = "$LIB/containerd"
state = "$RUN/containerd"

[grpc]
  address = "$SOCK"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "$(image_ref pause)"

[plugins.'io.containerd.cri.v1.runtime']
  netns_mounts_under = "$RUN/netns"
  # Root here lacks CAP_SYS_RESOURCE (not in this machine's bounding set), so no process may
  # lower its oom_score_adj below 0, and runc fails on the -998 the kubelet asks for sandboxes.
  # Clamp at containerd's own score, as for rootless containerd.
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "${RUNC:-$(command -v runc)}"
        Root = "$RUN/runc"
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "$LIB/cni/net.d"

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
EOF
}

# image_ref NAME: the name target/images/NAME.tar carries (docker-archive RepoTags or an OCI
# index's io.containerd.image.name annotation), under which ctr imports it.
image_ref() {
  local tar="$IMAGES/$1.tar" ref
  [[ -f "$tar" ]] || die "no $tar: run make images"
  ref="$( (tar -xOf "$tar" manifest.json 2>/dev/null || true) \
    | grep -o '"RepoTags":\["[^"]*"' | sed 's/.*\["//; s/"$//' | head -n 1)"
  [[ -n "$ref" ]] || ref="$( (tar -xOf "$tar" index.json 2>/dev/null || true) \
    | grep -o '"io.containerd.image.name":"[^"]*"' | sed 's/.*:"//; s/"$//' | head -n 1)"
  [[ -n "$ref" ]] || die "$tar names no image (no RepoTags, no io.containerd.image.name)"
  echo "$ref"
}

start_containerd() {
  mkdir -p "$LIB/cni/net.d" "$RUN/containerd" "$RUN/netns"
  containerd_config >"$LIB/containerd.toml"
  start_daemon containerd "$BIN_DIR/containerd" \
    env PATH="$BIN_DIR:$PATH" "$BIN_DIR/containerd" --config "$LIB/containerd.toml"
  wait_for containerd 60 ctr_ version
}

import_images() {
  local tar
  for tar in "$IMAGES"/*.tar; do
    [[ -f "$tar" ]] || die "no images in $IMAGES: run make images"
    ctr_ images import "$tar" >/dev/null 2>>"$LIB/logs/ctr.log"
  done
  log "images: $(ctr_ images ls -q | grep -v '^sha256:' | tr '\n' ' ')"
}

kubelet_config() {
  cat <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine's cgroups are v1 (the host's, left as they are).
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /$CGROUP
containerRuntimeEndpoint: unix://$SOCK
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $CP_DIR/ca.crt}
authorization: {mode: Webhook}
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ
clusterDNS: [$CLUSTER_DNS]
clusterDomain: cluster.local
resolvConf: $LIB/resolv.conf
podLogsDir: $LIB/pod-logs
failSwapOn: false
# Images cannot be pulled here: never garbage-collect them, never evict for disk.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "0%", imagefs.available: "0%", nodefs.inodesFree: "0%"}
mergeDefaultEvictionSettings: false
serializeImagePulls: false
EOF
}

# The kubelet's cgroup root, /$CGROUP, in every v1 hierarchy the host mounts (new children of
# their roots; nothing existing changes). A new cpuset child starts with no CPUs or memory nodes:
# it gets its parent's.
cgroup_root() {
  local h
  for h in /sys/fs/cgroup/*/; do
    h="${h%/}"
    [[ "$(stat -f -c %T "$h")" == cgroupfs ]] || continue
    mkdir -p "$h/$CGROUP"
    if [[ -f "$h/cpuset.cpus" && ! -s "$h/$CGROUP/cpuset.cpus" ]]; then
      cat "$h/cpuset.cpus" >"$h/$CGROUP/cpuset.cpus"
      cat "$h/cpuset.mems" >"$h/$CGROUP/cpuset.mems"
    fi
  done
}

start_kubelet() {
  cgroup_root
  mkdir -p "$LIB/kubelet" "$LIB/pod-logs"
  # Pods with dnsPolicy Default get this; the host's resolvers are never handed to pods.
  echo "nameserver $CLUSTER_DNS" >"$LIB/resolv.conf"
  kubelet_config >"$LIB/kubelet.yaml"
  [[ -f "$LIB/kubelet.kubeconfig" ]] \
    || "$CP_BIN" node-credentials --dir "$CP_DIR" --node "$NODE_NAME" --out "$LIB/kubelet.kubeconfig"
  start_daemon kubelet "$CP_BIN kubelet" "$CP_BIN" kubelet \
    --config "$LIB/kubelet.yaml" --kubeconfig "$LIB/kubelet.kubeconfig" \
    --root-dir "$LIB/kubelet" --cert-dir "$LIB/kubelet/pki" \
    --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" --v 1
  wait_for kubelet 90 curl -sf "http://127.0.0.1:$KUBELET_HEALTHZ/healthz"
  wait_for "node registration" 60 kubectl_admin get node "$NODE_NAME"
}

# The node's pod range, set once as the controller-manager's node-ipam would, and the CNI
# configuration that hands it out (the runtime reports its network ready from then on).
pod_network() {
  local cidr
  cidr="$(kubectl_admin get node "$NODE_NAME" -o jsonpath='{.spec.podCIDR}')"
  if [[ -z "$cidr" ]]; then
    kubectl_admin patch node "$NODE_NAME" --type merge \
      -p "{\"spec\":{\"podCIDR\":\"$POD_CIDR\",\"podCIDRs\":[\"$POD_CIDR\"]}}" >/dev/null
  fi
  cat >"$LIB/cni/net.d/10-trafficmap.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "trafficmap",
  "plugins": [
    {"type": "bridge", "bridge": "$CNI_BRIDGE", "isGateway": true, "ipMasq": false,
     "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$LIB/cni/ipam",
              "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$POD_GATEWAY",
                           "rangeStart": "$POD_RANGE_START", "rangeEnd": "$POD_RANGE_END"}]],
              "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "loopback"}
  ]
}
EOF
}

start_kube_proxy() {
  start_daemon kube-proxy "$CP_BIN kube-proxy" "$CP_BIN" kube-proxy \
    --kubeconfig "$KUBECONFIG_ADMIN" --hostname-override "$NODE_NAME" --proxy-mode nftables \
    --cluster-cidr "$CLUSTER_POD_CIDR" --nodeport-addresses "$NODE_IP/32" \
    --healthz-bind-address 127.0.0.1:10256 --metrics-bind-address 127.0.0.1:10249 \
    --conntrack-max-per-core 0 --conntrack-tcp-timeout-established 0 \
    --conntrack-tcp-timeout-close-wait 0 --v 1
  wait_for kube-proxy 60 curl -sf http://127.0.0.1:10256/healthz
}

coredns() {
  sed "s|@IMAGE@|$(image_ref coredns)|" "$HERE/coredns.yaml" | kubectl_admin apply -f - >/dev/null
  wait_for "CoreDNS" "$READY_TIMEOUT" kubectl_admin -n kube-system rollout status deploy/coredns --timeout 5s
}

node_ready() {
  [[ "$(kubectl_admin get node "$NODE_NAME" \
    -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" == True ]]
}

up() {
  local start=$SECONDS
  [[ $EUID -eq 0 ]] || die "needs root (containers, mounts, cgroups, links)"
  # Both nodes' kube-proxies would program the same nftables tables.
  ! ip link show tm-br0 >/dev/null 2>&1 \
    || die "the simulated node is up (link tm-br0): stop it first (make down)"
  [[ -x "$BIN_DIR/containerd" && -x "$BIN_DIR/ctr" ]] || build
  image_ref pause >/dev/null
  bash "$CONTROL_PLANE" up >/dev/null
  # A simulated node's Node object outlives it and stays Ready until the node-lifecycle
  # controller's grace period ends: the scheduler would place pods on it. Its pods go with it.
  kubectl_admin delete node tm-node --ignore-not-found >/dev/null
  kubectl_admin delete pods -A --field-selector spec.nodeName=tm-node --force --grace-period=0 \
    >/dev/null 2>&1 || true
  mkdir -p "$LIB" "$RUN"
  network
  start_containerd
  import_images
  start_kubelet
  pod_network
  start_kube_proxy
  wait_for "node $NODE_NAME Ready" 60 node_ready
  coredns
  log "ready in $((SECONDS - start))s: node $NODE_NAME ($NODE_IP), pods $POD_CIDR"
  echo "$KUBECONFIG_ADMIN"
}

status() {
  if [[ -n "$(daemon_pid kubelet "$CP_BIN kubelet")" ]] && node_ready 2>/dev/null; then
    echo "running (node $NODE_NAME, KUBECONFIG=$KUBECONFIG_ADMIN)"
    return 0
  fi
  echo "not running"
  return 1
}

# restart kubelet|containerd: SIGKILL one daemon and start it again.
restart() {
  local pid
  case "$1" in
    kubelet) pid="$(daemon_pid kubelet "$CP_BIN kubelet")" ;;
    containerd) pid="$(daemon_pid containerd "$BIN_DIR/containerd")" ;;
    *) die "restart kubelet|containerd" ;;
  esac
  [[ -n "$pid" ]] || die "$1 is not running"
  kill -KILL "$pid"
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  case "$1" in
    kubelet) start_kubelet ;;
    containerd) start_containerd ;;
  esac
}

# usage NAMESPACE: each container's memory (rss and cache, from memory.stat) and CPU time
# (cpuacct.usage), read from the cgroups the kubelet made for the pods of NAMESPACE.
usage() {
  local ns="$1" pod uid dir cid rss cache cpu
  [[ -n "$ns" ]] || die "usage NAMESPACE"
  printf '%-45s %-14s %10s %10s %10s\n' POD CONTAINER RSS_MiB CACHE_MiB CPU_s
  while read -r pod uid; do
    dir="$(find /sys/fs/cgroup/memory/"$CGROUP"/kubepods -maxdepth 2 -type d -name "pod$uid" | head -n 1)"
    [[ -n "$dir" ]] || continue
    for cid in "$dir"/*/; do
      cid="$(basename "$cid")"
      [[ -f "$dir/$cid/memory.stat" ]] || continue
      rss="$(awk '$1 == "total_rss" { print $2 }' "$dir/$cid/memory.stat")"
      cache="$(awk '$1 == "total_cache" { print $2 }' "$dir/$cid/memory.stat")"
      cpu="$(cat "${dir/memory/cpuacct}/$cid/cpuacct.usage" 2>/dev/null || echo 0)"
      awk -v p="$pod" -v c="${cid:0:12}" -v r="$rss" -v k="$cache" -v u="$cpu" \
        'BEGIN { printf "%-45s %-14s %10.1f %10.1f %10.2f\n", p, c, r / 1048576, k / 1048576, u / 1e9 }'
    done
  done < <(kubectl_admin -n "$ns" get pods -o jsonpath='{range .items[*]}{.metadata.name} {.metadata.uid}{"\n"}{end}')
}

source "$HERE/cleanup.sh"

case "${1:-}" in
  build) build ;;
  up) up ;;
  down) down ;;
  status) status ;;
  restart) restart "${2:-}" ;;
  usage) usage "${2:-}" ;;
  *)
    echo "usage: $0 build|up|down|status|restart kubelet|containerd|usage NAMESPACE" >&2
    exit 2
    ;;
esac
