#!/usr/bin/env bash
# The set-up step every make target that builds or runs something calls first (and .ci/run too):
# checks for each tool that e2e/tools/requirements.txt lists for the given targets, and installs
# what is missing, saying what and why. Where it cannot install (not root, no apt-get, a tool we
# do not install), it stops before any build starts and prints the exact command to run.
#
#   bash e2e/tools/setup.sh TARGET...     TARGET: demo scenario test chaos bench fuzz lint images cluster
#
# Quiet when everything is there. Environment: SETUP_DRY_RUN=1 says what it would install and
# installs nothing (exit 1 when something is missing).
set -euo pipefail
cd "$(dirname "$0")/../.."

LIST=e2e/tools/requirements.txt
KNOWN="demo scenario test chaos bench fuzz lint images cluster"

say() { echo "setup: $*" >&2; }
die() { say "$*"; exit 1; }

[ $# -gt 0 ] || die "usage: bash e2e/tools/setup.sh TARGET... (of: $KNOWN)"
for t in "$@"; do
  [[ " $KNOWN " == *" $t "* ]] || die "unknown target '$t' (known: $KNOWN)"
done

# 0 when a line's comma-separated targets name one of the requested ones.
wanted() {
  local t
  [ "$1" = all ] && return 0
  for t in "${REQUESTED[@]}"; do
    [[ ",$1," == *",$t,"* ]] && return 0
  done
  return 1
}

# 0 when the tool a line checks for is present.
present() {
  local check="$1"
  case "$check" in
    root) [ "$(id -u)" = 0 ] ;;
    toolchain:*) command -v rustup >/dev/null && rustup run "${check#toolchain:}" rustc --version >/dev/null 2>&1 ;;
    target:*) command -v rustup >/dev/null && rustup target list --installed 2>/dev/null | grep -qx "${check#target:}" ;;
    */*) [ -x "$check" ] ;;
    *) command -v "$check" >/dev/null ;;
  esac
}

REQUESTED=("$@")
apt_pkgs=() apt_why=() rustup_comps=() rustup_targets=() cargo_crates=() toolchains=() helm_dest="" blockers=()
while read -r kind check source targets why; do
  case "$kind" in ''|'#'*) continue ;; esac
  wanted "$targets" || continue
  present "$check" && continue
  case "$kind" in
    apt) apt_pkgs+=("$source"); apt_why+=("$source ($check): $why") ;;
    rustup) rustup_comps+=("$source") ;;
    target) rustup_targets+=("$source") ;;
    cargo) cargo_crates+=("$source") ;;
    toolchain) toolchains+=("$source") ;;
    helm) helm_dest="$check" ;;
    need)
      if [ "$check" = root ]; then
        blockers+=("$why: run it as root (sudo make ${REQUESTED[*]})")
      else
        blockers+=("$check is missing ($why): install it, see $source")
      fi
      ;;
    *) die "$LIST: unknown kind '$kind'" ;;
  esac
done <"$LIST"

# What we cannot install ourselves: stop now, naming all of it at once.
if [ ${#apt_pkgs[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null; then
    blockers+=("no apt-get here: install the equivalents of these Debian packages: ${apt_pkgs[*]}")
  elif [ "$(id -u)" != 0 ]; then
    blockers+=("missing Debian packages, and not root to install them: sudo apt-get install -y ${apt_pkgs[*]}")
  fi
fi
rustup_needs=("${rustup_comps[@]}" "${rustup_targets[@]}" "${toolchains[@]}")
if [ ${#rustup_needs[@]} -gt 0 ] && ! command -v rustup >/dev/null; then
  blockers+=("rustup is missing, needed for: ${rustup_needs[*]} (https://rustup.rs)")
fi
if [ ${#blockers[@]} -gt 0 ]; then
  say "cannot set up for '${REQUESTED[*]}':"
  for b in "${blockers[@]}"; do echo "  - $b" >&2; done
  exit 1
fi

nothing_missing=1
[ ${#apt_pkgs[@]} -eq 0 ] && [ ${#rustup_comps[@]} -eq 0 ] && [ ${#rustup_targets[@]} -eq 0 ] \
  && [ ${#cargo_crates[@]} -eq 0 ] && [ ${#toolchains[@]} -eq 0 ] && [ -z "$helm_dest" ] || nothing_missing=0
[ "$nothing_missing" = 1 ] && exit 0

if [ -n "${SETUP_DRY_RUN:-}" ]; then
  say "would install, for '${REQUESTED[*]}':"
  for w in "${apt_why[@]}"; do echo "  - apt: $w" >&2; done
  for c in "${rustup_comps[@]}"; do echo "  - rustup component: $c" >&2; done
  for c in "${rustup_targets[@]}"; do echo "  - rustup target: $c" >&2; done
  for c in "${toolchains[@]}"; do echo "  - rustup toolchain: $c" >&2; done
  for c in "${cargo_crates[@]}"; do echo "  - cargo install: $c" >&2; done
  [ -z "$helm_dest" ] || echo "  - helm into $helm_dest" >&2
  exit 1
fi

if [ ${#apt_pkgs[@]} -gt 0 ]; then
  say "installing Debian packages for '${REQUESTED[*]}':"
  for w in "${apt_why[@]}"; do echo "  - $w" >&2; done
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${apt_pkgs[@]}" >/dev/null
fi
for c in "${rustup_comps[@]}"; do
  say "installing rustup component $c"
  rustup component add "$c"
done
for c in "${rustup_targets[@]}"; do
  say "installing the standard library for $c (rustup target add $c)"
  rustup target add "$c"
done
for c in "${toolchains[@]}"; do
  say "installing the $c toolchain (rustup toolchain install $c --profile minimal)"
  timeout 600 rustup toolchain install "$c" --profile minimal \
    || die "could not install the $c toolchain; run: rustup toolchain install $c"
done
for c in "${cargo_crates[@]}"; do
  say "installing $c from crates.io (cargo install --locked $c)"
  cargo install --locked "$c"
done
if [ -n "$helm_dest" ]; then
  say "installing helm into $helm_dest"
  bash e2e/tools/install-helm.sh "$helm_dest"
fi
say "ready for '${REQUESTED[*]}'"
