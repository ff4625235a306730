#!/bin/sh
# Interop: runs tests/saml_interop.rs with pysaml2 (PyPI) as the IdP, a SAML implementation no
# one here wrote. Makes a venv under the cargo target dir on first use; needs xmlsec1 and openssl.
set -eu
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh test # xmlsec1, openssl, python3-venv when missing
target="${CARGO_TARGET_DIR:-target}"
venv="$target/saml-venv"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import saml2" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "pysaml2==7.5.5"
fi
PYSAML2_PYTHON="$(cd "$venv/bin" && pwd)/python" exec cargo test --locked --test saml_interop -- --ignored "$@"
