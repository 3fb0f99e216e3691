#!/usr/bin/env bash
# Regenerates config/ (the plain-manifest install, a kustomize base) from chart/ with its default
# values: release `trafficmap` in namespace `trafficmap`. Each template becomes the file of the
# same path under config/ (templates/rbac/x.yaml -> config/rbac/x.yaml). Also refreshes the
# chart's copy of our CRD (files/crds) from crds/yaml first; the upstream ClientIntents CRD lives
# in files/crds itself (chart/files/crds/README.md).
# e2e/tests/packaging.rs fails when config/ or those copies are stale.
#
#   bash e2e/tools/render-config.sh [helm]     (`make config`)
set -euo pipefail
cd "$(dirname "$0")/../.."

helm="${1:-${HELM:-target/tools/helm}}"
[ -x "$helm" ] || command -v "$helm" >/dev/null || {
  echo "render-config: no helm at $helm; run: bash e2e/tools/install-helm.sh" >&2
  exit 1
}

RELEASE=trafficmap
NAMESPACE=trafficmap
MARKER="# Generated from chart/ by \`make config\` (e2e/tools/render-config.sh); do not edit."

cp crds/yaml/observedtraffics.trafficmap.io.yaml chart/files/crds/

rendered="$(mktemp)"
trap 'rm -f "$rendered"' EXIT
"$helm" template "$RELEASE" chart --namespace "$NAMESPACE" >"$rendered"

# Drop what an earlier run generated (a template may since have been removed or disabled).
grep -rlF --include='*.yaml' "$MARKER" config | xargs -r rm -f || true

# The folders are the templates' folders.
(cd chart/templates && find . -mindepth 1 -type d) | while read -r d; do mkdir -p "config/$d"; done

# Split on helm's `# Source: <chart>/templates/<path>` lines.
awk -v marker="$MARKER" -v prefix="# Source: trafficmap/templates/" '
  $0 == "---" { next }
  index($0, prefix) == 1 {
    out = "config/" substr($0, length(prefix) + 1)
    if (out in seen) { print "---" > out } else { seen[out] = 1; print marker > out }
    next
  }
  out != "" { print > out }
' "$rendered"

# One kustomization per folder, listing its files; config/kustomization.yaml lists the folders.
dirs=()
for dir in config/*/; do
  dir="${dir%/}"
  files=$(cd "$dir" && ls -1 *.yaml 2>/dev/null | grep -v '^kustomization.yaml$' | sort || true)
  [ -n "$files" ] || continue
  dirs+=("$(basename "$dir")")
  {
    echo "$MARKER"
    echo "apiVersion: kustomize.config.k8s.io/v1beta1"
    echo "kind: Kustomization"
    echo "resources:"
    # The namespace first, so `kubectl apply -k` creates it before what lives in it.
    for f in $files; do [ "$f" = namespace.yaml ] && echo "  - $f"; done
    for f in $files; do [ "$f" = namespace.yaml ] || echo "  - $f"; done
  } >"$dir/kustomization.yaml"
done
{
  echo "$MARKER"
  echo "# The chart's default install as plain manifests: kubectl apply -k config/"
  echo "apiVersion: kustomize.config.k8s.io/v1beta1"
  echo "kind: Kustomization"
  echo "resources:"
  for d in "${dirs[@]}"; do echo "  - $d"; done
} >config/kustomization.yaml
echo "render-config: config/ rendered from chart/ (release $RELEASE, namespace $NAMESPACE)"
