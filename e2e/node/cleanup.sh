# Sourced by node.sh: `down`, which removes everything the real node made, from what exists
# rather than from a record, so that it also cleans up after a killed run.

# kill_group NAME MATCH: SIGTERM a daemon (its whole session), SIGKILL after 10 s.
kill_group() {
  local pid i
  pid="$(daemon_pid "$1" "$2")"
  [[ -n "$pid" ]] || return 0
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
}

# Every process whose command line runs one of our binaries (a daemon whose pidfile was lost).
kill_strays() {
  local pids
  pids="$(ps -e -o pid=,args= | awk -v a="$CP_BIN kubelet" -v b="$CP_BIN kube-proxy" -v c="$BIN_DIR/" \
    'index($0, a) || index($0, b) || index($0, c) { print $1 }')"
  # shellcheck disable=SC2086
  [[ -z "$pids" ]] || kill -KILL $pids 2>/dev/null || true
}

# The containers' processes: everything in the cgroup subtree /$CGROUP of every hierarchy,
# then the subtree itself, deepest first.
remove_cgroups() {
  local h dir pid i
  for ((i = 0; i < 20; i++)); do
    local left=0
    for h in /sys/fs/cgroup/*/"$CGROUP" /sys/fs/cgroup/unified/"$CGROUP"; do
      [[ -d "$h" ]] || continue
      while read -r pid; do
        [[ -n "$pid" ]] && { kill -KILL "$pid" 2>/dev/null || true; left=1; }
      done < <(find "$h" -name cgroup.procs -exec cat {} + 2>/dev/null)
    done
    ((left)) || break
    sleep 0.2
  done
  for h in /sys/fs/cgroup/*/"$CGROUP" /sys/fs/cgroup/unified/"$CGROUP"; do
    [[ -d "$h" ]] || continue
    find "$h" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
}

# Mounts under our directories (rootfs overlays, shm, projected volumes, netns), deepest first.
unmount_all() {
  local m
  awk '{ print $5 }' /proc/self/mountinfo | grep -E "^($LIB|$RUN)(/|$)" | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done
}

# The nftables tables the node added: kube-proxy's, ours, and those iptables-nft made for the
# kubelet's chains. Tables that existed before `up` (LIB/nft-tables.before) stay; without that
# record (a run killed before it was written) only kube-proxy's and ours go, and of the
# iptables-nft tables only the kubelet's KUBE-* chains.
remove_rules() {
  local t before="$LIB/nft-tables.before" added=("inet $NFT_TABLE" "ip kube-proxy" "ip6 kube-proxy")
  if [[ -f "$before" ]]; then
    while read -r t; do
      grep -qxF "table $t" "$before" || added+=("$t")
    done < <(nft list tables | sed -n 's/^table //p' | grep -E '^(ip|ip6) (filter|nat|mangle)$')
  else
    remove_kubelet_chains
  fi
  for t in "${added[@]}"; do
    # shellcheck disable=SC2086
    nft delete table $t 2>/dev/null || true
  done
}

remove_kubelet_chains() {
  local t rule chain
  command -v iptables-nft >/dev/null || return 0
  for t in mangle nat filter; do
    iptables-nft -t "$t" -S 2>/dev/null | awk '$1 == "-A" && ($2 ~ /^KUBE-/ || / -j KUBE-/)' \
      | sed 's/^-A/-D/' | while read -r rule; do
        # shellcheck disable=SC2086
        eval iptables-nft -t "$t" $rule 2>/dev/null || true
      done
    iptables-nft -t "$t" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^KUBE-/ { print $2 }' \
      | while read -r chain; do
        iptables-nft -t "$t" -F "$chain" 2>/dev/null || true
        iptables-nft -t "$t" -X "$chain" 2>/dev/null || true
      done
  done
}

# Our links. Pod veths need no step of their own: a veth goes with its pod's network namespace
# (unmounted above), and its host end with the bridge.
remove_links() {
  local l
  for l in "$CNI_BRIDGE" "$NODE_LINK"; do
    ip link del "$l" 2>/dev/null || true
  done
}

down() {
  kill_group kubelet "$CP_BIN kubelet"
  kill_group kube-proxy "$CP_BIN kube-proxy"
  kill_group containerd "$BIN_DIR/containerd"
  kill_strays
  remove_cgroups
  unmount_all
  local ns
  for ns in "$RUN"/netns/*; do
    [[ -e "$ns" ]] || continue
    umount "$ns" 2>/dev/null || true
  done
  remove_rules
  remove_links
  if [[ -f "$LIB/ip_forward.orig" ]]; then
    cat "$LIB/ip_forward.orig" >/proc/sys/net/ipv4/ip_forward
  fi
  rm -rf "$LIB" "$RUN"
  if [[ -f "$KUBECONFIG_ADMIN" ]]; then
    kubectl_admin delete node "$NODE_NAME" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  fi
  echo "node: down"
}
