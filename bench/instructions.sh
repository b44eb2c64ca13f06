#!/usr/bin/env bash
# Instructions per proxied request, counted by callgrind: a figure that does
# not move with the machine's load (bench/proxy.sh's timings do), so every
# change to the request path can be judged on a busy 2-core machine.
#
# harbormaster (release build) runs under `valgrind --tool=callgrind` in
# front of an nginx backend returning a 23-byte body; h2load sends WARMUP
# requests, the counters are zeroed, then REQUESTS more are sent over
# CONNECTIONS keep-alive connections and the counters dumped. Prints the
# total instructions ÷ REQUESTS and leaves the profile (for
# `callgrind_annotate --inclusive=yes`) in $OUT.
#
# With ATOMICS=1 the profile keeps per-instruction costs and
# bench/atomics.py also prints the atomic read-modify-write instructions
# per request (~20 cycles each: a figure instructions do not show).
#
# Usage: bench/instructions.sh [REQUESTS=20000] [CONNECTIONS=8] [h1|h2]
#        HM_BIN=/path/to/harbormaster OUT=/tmp/cg.out bench/instructions.sh …
#        ATOMICS=1 bench/instructions.sh …
set -euo pipefail
REQUESTS=${1:-20000}
CONNS=${2:-8}
PROTO=${3:-h1}
WARMUP=2000
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/hm-instr.XXXXXX)
OUT=${OUT:-$WORK/callgrind.out}
PORT_BASE=$((18200 + RANDOM % 500))
BACKEND=127.0.0.1:$PORT_BASE HM=127.0.0.1:$((PORT_BASE + 1))
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

for tool in valgrind callgrind_control h2load nginx ${ATOMICS:+objdump}; do
  command -v "$tool" >/dev/null || { echo "$tool is missing (apt-get install valgrind nghttp2-client nginx-light)" >&2; exit 1; }
done
if [ -z "${HM_BIN:-}" ]; then
  (cd "$ROOT" && cargo build --release -q -p harbormaster)
  HM_BIN=$ROOT/target/release/harbormaster
fi

. "$ROOT/bench/backend.sh"
write_backend_conf "$WORK" "$BACKEND"
cat > "$WORK/harbormaster.toml" <<CONF
[gateway]
listen = ["$HM"]
[apps.backend]
routes = [{ path = "/" }]
upstreams = ["$BACKEND"]
CONF
nginx -c "$WORK/backend/nginx.conf" -p "$WORK/backend" -g 'daemon off;' & PIDS+=($!)
CG_FLAGS=()
[ -n "${ATOMICS:-}" ] && CG_FLAGS=(--dump-instr=yes)
valgrind --tool=callgrind "${CG_FLAGS[@]}" --callgrind-out-file="$OUT" -q \
  "$HM_BIN" run -c "$WORK/harbormaster.toml" --log-level warn & HM_PID=$!; PIDS+=($HM_PID)
for _ in $(seq 600); do curl -fsS "http://$HM/" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fsS "http://$HM/" >/dev/null || { echo "harbormaster does not answer" >&2; exit 1; }

flags=(--h1)
[ "$PROTO" = h2 ] && flags=(-m 64)
h2load "${flags[@]}" -n "$WARMUP" -c "$CONNS" "http://$HM/" >/dev/null
callgrind_control -z "$HM_PID" >/dev/null 2>&1
out=$(h2load "${flags[@]}" -n "$REQUESTS" -c "$CONNS" "http://$HM/")
callgrind_control -d "$HM_PID" >/dev/null 2>&1
echo "$out" | grep -E '^requests:' >&2
ok=$(echo "$out" | awk '/^status codes:/ {print $3}')
[ "$ok" = "$REQUESTS" ] || { echo "only $ok of $REQUESTS requests got 2xx" >&2; exit 1; }
# The dump after zeroing is the one with the highest part number.
dump=$(ls -t "$OUT"* | head -1)
total=$(awk '/^summary:|^totals:/ {print $2; exit}' "$dump")
echo "$PROTO, $REQUESTS requests over $CONNS connections: $((total / REQUESTS)) instructions/request (profile: $dump)"
if [ -n "${ATOMICS:-}" ]; then
  python3 "$ROOT/bench/atomics.py" "$HM_BIN" "$dump" "$REQUESTS"
fi
