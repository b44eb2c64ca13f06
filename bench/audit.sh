#!/usr/bin/env bash
# Audit writer throughput into SQLite and into a throwaway PostgreSQL server
# (initdb in a temp dir, a free port, stopped at the end). Prints one line per
# sink; see bench/RESULTS.md.
#   bash bench/audit.sh [RECORDS] [PRODUCERS] [QUEUE]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100000}; P=${2:-8}; Q=${3:-10000}
bash scripts/deps/postgresql.sh
cargo build -q --release --example audit_bench
BIN=target/release/examples/audit_bench
TMP=$(mktemp -d /tmp/hm-audit-bench-XXXXXX)
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
AS=()
if [ "$(id -u)" -eq 0 ]; then
    chown postgres: "$TMP"
    AS=(setpriv --reuid=postgres --regid=postgres --init-groups --)
fi
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"${AS[@]}" "$PGBIN/initdb" -A trust -U hm -E UTF8 --no-sync -D "$TMP/data" >/dev/null
"${AS[@]}" "$PGBIN/postgres" -D "$TMP/data" -p "$PORT" -k "$TMP" -c listen_addresses=127.0.0.1 >"$TMP/pg.log" 2>&1 &
PG=$!
trap 'kill -INT $PG 2>/dev/null; wait $PG 2>/dev/null; rm -rf "$TMP"' EXIT
for _ in $(seq 100); do
    "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" && break
    sleep 0.1
done
"$PGBIN/psql" -q -h 127.0.0.1 -p "$PORT" -U hm -d postgres -c 'CREATE DATABASE bench' >/dev/null
echo "sqlite:   $($BIN sqlite "$TMP/audit.db" "$N" "$P" "$Q" 2>/dev/null)"
echo "postgres: $($BIN postgres "postgres://hm@127.0.0.1:$PORT/bench" "$N" "$P" "$Q" 2>/dev/null)"
