#!/usr/bin/env bash
# Python's `prometheus_client` (its text-format parser checks `/metrics` in
# tests/metrics.rs), in the shared venv at target/peers/venv. Only adds this
# one package (other installers may put theirs in the same venv); a second
# run does nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=target/peers/venv
if [ ! -x "$VENV/bin/python" ]; then
    if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
        rm -rf "$VENV"
        SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
        $SUDO apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
        python3 -m venv "$VENV"
    fi
fi
"$VENV/bin/python" -c 'import prometheus_client' 2>/dev/null && exit 0
"$VENV/bin/python" -m pip install -q --disable-pip-version-check prometheus_client
