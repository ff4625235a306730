#!/bin/sh
# Interop: runs tests/scim_interop.rs against scim2-server (PyPI), a SCIM 2.0 server that no one
# here wrote. Makes a venv under the cargo target dir on first use.
set -eu
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh test # xmlsec1, openssl, python3-venv when missing
target="${CARGO_TARGET_DIR:-target}"
venv="$target/scim-venv"
if [ ! -x "$venv/bin/scim2-server" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "scim2-server==0.8.3"
fi
SCIM2_SERVER="$(cd "$venv/bin" && pwd)/scim2-server" exec cargo test --test scim_interop -- --ignored "$@"
