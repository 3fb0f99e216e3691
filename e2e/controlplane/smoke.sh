#!/usr/bin/env bash
# Smoke test of the local control plane: brings it up (controlplane.sh up),
# checks the API, workload controllers, TokenRequest/TokenReview, RBAC,
# Services/EndpointSlices and namespace deletion with kubectl, then leaves it
# running (run `controlplane.sh down` to stop it). Exits non-zero on failure.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
export KUBECONFIG
KUBECONFIG="$(bash "$HERE/controlplane.sh" up | tail -n 1)"
NS="smoke-$$"
pass=0
fail=0

check() { # check NAME CMD...: run CMD, count the result
  local name="$1"
  shift
  if "$@"; then
    echo "ok   $name"
    pass=$((pass + 1))
  else
    echo "FAIL $name"
    fail=$((fail + 1))
  fi
}

# eventually SECONDS CMD...: retry CMD every 0.25 s for up to SECONDS.
eventually() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 0.25
  done
}

readyz() { [[ "$(kubectl get --raw /readyz)" == ok ]]; }
server_version() { kubectl version -o json | grep -q '"gitVersion": "v1.36.3"'; }
rs_owned() {
  [[ "$(kubectl -n "$NS" get rs -l app=web -o jsonpath='{.items[0].metadata.ownerReferences[0].kind}')" == Deployment ]]
}
pods_pending() {
  [[ "$(kubectl -n "$NS" get pods -l app=web -o jsonpath='{.items[*].status.phase}')" == "Pending Pending" ]]
}
token_review() { # token_review AUDIENCE -> prints authenticated/username
  kubectl create -o jsonpath='{.status.authenticated}/{.status.user.username}' -f - <<EOF
apiVersion: authentication.k8s.io/v1
kind: TokenReview
spec:
  token: $TOKEN
  audiences: [$1]
EOF
}
review_ok() { [[ "$(token_review trafficmap)" == "true/system:serviceaccount:$NS:sniffer" ]]; }
review_other_rejected() { [[ "$(token_review other)" == "/" ]]; }
rbac_denies() { [[ "$(kubectl auth can-i list pods -n "$NS" --as "system:serviceaccount:$NS:sniffer" || true)" == no ]]; }
cluster_ip_in_cidr() { [[ "$(kubectl -n "$NS" get svc web -o jsonpath='{.spec.clusterIP}')" == 10.96.* ]]; }
slice_exists() { [[ -n "$(kubectl -n "$NS" get endpointslices -l kubernetes.io/service-name=web -o name)" ]]; }
ns_gone() { ! kubectl get ns "$NS" >/dev/null 2>&1; }

check "apiserver /readyz" readyz
check "server version v1.36.3" server_version
kubectl create namespace "$NS" >/dev/null
check "default ServiceAccount created" eventually 20 kubectl -n "$NS" get sa default
check "kube-root-ca.crt published" eventually 20 kubectl -n "$NS" get configmap kube-root-ca.crt
kubectl -n "$NS" create deployment web --image=registry.invalid/web:1 --replicas=2 --port=8080 >/dev/null
check "ReplicaSet owned by the Deployment" eventually 20 rs_owned
check "two Pending pods" eventually 20 pods_pending
kubectl -n "$NS" create serviceaccount sniffer >/dev/null
TOKEN="$(kubectl -n "$NS" create token sniffer --audience trafficmap)"
check "TokenReview, audience trafficmap: authenticated" review_ok
check "TokenReview, audience other: rejected" review_other_rejected
check "RBAC denies the SA listing pods" rbac_denies
kubectl -n "$NS" expose deployment web --port=80 --target-port=8080 >/dev/null
check "ClusterIP from 10.96.0.0/16" cluster_ip_in_cidr
check "EndpointSlice for the Service" eventually 20 slice_exists
kubectl delete namespace "$NS" --wait=false >/dev/null
check "namespace deletion completes" eventually 90 ns_gone

echo "$pass passed, $fail failed"
((fail == 0))
