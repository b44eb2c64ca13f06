#!/usr/bin/env bash
# Instructions per proxied request, from valgrind's callgrind: noise-free,
# unlike timings on a shared machine. One nginx backend (`return 200`),
# harbormaster under callgrind in front of it, `wrk -t1 -c8 -d10s` through
# it; total instructions of the whole run (startup included, < 2%) divided
# by the requests wrk counted. Each build given is measured in turn.
#
# Usage: bench/callgrind.sh /path/to/harbormaster [/path/to/other/harbormaster …]
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 HARBORMASTER_BIN [MORE_BINS…]" >&2; exit 2; }
command -v valgrind >/dev/null || { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null; }
WORK=$(mktemp -d /tmp/hm-callgrind.XXXXXX)
BACKEND=127.0.0.1:18111 HM=127.0.0.1:18114
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
cat > "$WORK/nginx.conf" <<CONF
worker_processes 1;
error_log $WORK/error.log warn;
pid $WORK/nginx.pid;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 1000000;
  server { listen $BACKEND; location / { return 200 "hello from the backend\n"; } } }
CONF
cat > "$WORK/harbormaster.toml" <<CONF
[gateway]
listen = ["$HM"]
[apps.backend]
routes = [{ path = "/" }]
upstreams = ["$BACKEND"]
CONF
"$(command -v nginx || echo /usr/sbin/nginx)" -c "$WORK/nginx.conf" -p "$WORK" -g 'daemon off;' & PIDS+=($!)
for bin in "$@"; do
  out="$WORK/callgrind.out"
  valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" run -c "$WORK/harbormaster.toml" --log-level warn 2>"$WORK/valgrind.log" & hm=$!
  for _ in $(seq 600); do curl -fsS "http://$HM/" >/dev/null 2>&1 && break; sleep 0.1; done
  requests=$(wrk -t1 -c8 -d10s "http://$HM/" | awk '/requests in/ {print $1}')
  kill -TERM "$hm"; wait "$hm" || true
  total=$(awk '/^(summary|totals):/ {print $2; exit}' "$out")
  awk -v b="$bin" -v t="$total" -v n="$requests" 'BEGIN { printf "%s: %d requests, %d instructions, %.0f instructions/request\n", b, n, t, t / n }'
done
