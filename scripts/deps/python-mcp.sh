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
# A file check, not `import mcp` (which takes seconds).
if ! ls "$venv"/lib/python3*/site-packages/mcp-*.dist-info >/dev/null 2>&1; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check 'mcp>=1.20'
fi
