#!/bin/sh
# The official Python MCP SDK (`mcp`), the client the MCP tests drive.
# Installed into the shared test venv target/peers/venv (other peers may add
# their own packages to it); idempotent and quiet.
set -eu
cd "$(dirname "$0")/../.."
venv=target/peers/venv
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c 'import mcp' >/dev/null 2>&1; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check 'mcp>=1.20'
fi
