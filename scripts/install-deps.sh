#!/usr/bin/env bash
# Installs the Debian packages samlgate needs, only those missing; quiet when all are present.
# Usage: scripts/install-deps.sh [build|test|bench|e2e]...   (default: build)
set -euo pipefail

want=(pkg-config libxmlsec1-dev libclang1-14 libclang-common-14-dev)
for purpose in "${@:-build}"; do
  case "$purpose" in
    build) ;;
    test) want+=(redis-server redis-tools nginx-light python3-venv xmlsec1 openssl) ;;
    bench) want+=(nginx-light wrk util-linux valgrind) ;;
    e2e) want+=(chromium chromium-driver) ;;
    *) echo "install-deps: unknown purpose '$purpose' (build|test|bench|e2e)" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "install-deps: cargo is missing: install a Rust toolchain >= 1.85 (edition 2024), e.g. with rustup" >&2
  exit 1
fi
