#!/bin/sh
# The reference MCP server (@modelcontextprotocol/server-everything), the
# upstream of the MCP tests, and supergateway, the peer gateway bench/mcp.py
# compares with. Installed under target/peers/npm; tests run them with node
# directly (never `npx -y`, which would go to the network each time).
set -eu
cd "$(dirname "$0")/../.."
prefix=target/peers/npm
if [ ! -f "$prefix/node_modules/@modelcontextprotocol/server-everything/package.json" ] ||
    [ ! -f "$prefix/node_modules/supergateway/package.json" ]; then
    mkdir -p "$prefix"
    npm install --silent --no-audit --no-fund --prefix "$prefix" \
        @modelcontextprotocol/server-everything supergateway >/dev/null
fi
