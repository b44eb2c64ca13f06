#!/usr/bin/env bash
# Proxy throughput and latency: direct vs harbormaster vs nginx vs haproxy.
#
# One backend (nginx returning a small fixed body) and three proxies in front
# of it, measured with wrk in interleaved rounds so drift hits all alike.
# Peers are configured as their docs advise for speed: upstream keep-alive
# on, 2 workers/threads. Prints requests/s, p50/p99 latency, the ratios
# harbormaster/nginx, harbormaster/haproxy, harbormaster/direct, the CPU
# time each proxy spent per request (utime + stime of the process and its
# worker children from /proc over the measured window: the fairest figure
# on a 2-core machine where client, backend and proxy share the cores), and
# harbormaster's RSS idle and under load. Stops everything it started.
#
# TLS case (after the plain one): harbormaster's [gateway.tls] and an nginx
# `listen … ssl` server with the same certificate (EC P-256, made here with
# openssl), each proxying to the same backend: new TLS handshakes per second
# (wrk with `Connection: close`, so every request is a new connection and a
# full handshake: wrk does not resume sessions) and kept-alive requests per
# second over TLS.
#
# Usage: bench/proxy.sh [ROUNDS=3] [SECONDS=10] [CONNECTIONS=64]
#        HM_BIN=/path/to/harbormaster bench/proxy.sh …   (measure another build)
#        CASES=tls bench/proxy.sh …   (only the TLS case; default "plain tls")
set -euo pipefail
ROUNDS=${1:-3}
DURATION=${2:-10}
CONNS=${3:-64}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/hm-bench.XXXXXX)
BACKEND=127.0.0.1:18101 NGINX=127.0.0.1:18102 HAPROXY=127.0.0.1:18103 HM=127.0.0.1:18104
NGINX_TLS=127.0.0.1:18105 HM_TLS=127.0.0.1:18106
CASES=${CASES:-plain tls}
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

need() { command -v "$1" >/dev/null 2>&1; }
if ! need nginx || ! need haproxy || ! need wrk; then
  echo "installing nginx, haproxy, wrk from the OS packages" >&2
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light haproxy wrk >/dev/null \
    || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx haproxy wrk >/dev/null
fi
NGINX_BIN=$(command -v nginx || echo /usr/sbin/nginx)
if [ -z "${HM_BIN:-}" ]; then
  (cd "$ROOT" && cargo build --release -q -p harbormaster)
  HM_BIN=$ROOT/target/release/harbormaster
fi

mkdir -p "$WORK/backend" "$WORK/proxy"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
  -subj /CN=bench.test -addext subjectAltName=DNS:bench.test,IP:127.0.0.1 \
  -keyout "$WORK/site.key" -out "$WORK/site.pem" 2>/dev/null
cat > "$WORK/backend/nginx.conf" <<CONF
worker_processes 1;
error_log $WORK/backend/error.log warn;
pid $WORK/backend/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server { listen $BACKEND; location / { return 200 "hello from the backend\n"; } }
}
CONF
cat > "$WORK/proxy/nginx.conf" <<CONF
worker_processes 2;
error_log $WORK/proxy/error.log warn;
pid $WORK/proxy/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream backend { server $BACKEND; keepalive 128; }
  server {
    listen $NGINX;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
  server {
    listen $NGINX_TLS ssl http2;
    ssl_certificate $WORK/site.pem;
    ssl_certificate_key $WORK/site.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
CONF
cat > "$WORK/haproxy.cfg" <<CONF
global
  nbthread 2
  maxconn 4096
defaults
  mode http
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
  http-reuse always
frontend fe
  bind $HAPROXY
  default_backend be
backend be
  server b1 $BACKEND
CONF
cat > "$WORK/harbormaster.toml" <<CONF
[gateway]
listen = ["$HM"]
[apps.backend]
routes = [{ path = "/" }]
upstreams = ["$BACKEND"]
[gateway.tls]
listen = ["$HM_TLS"]
certificates = [{ cert = "$WORK/site.pem", key = "$WORK/site.key" }]
CONF

"$NGINX_BIN" -c "$WORK/backend/nginx.conf" -p "$WORK/backend" -g 'daemon off;' & PIDS+=($!)
"$NGINX_BIN" -c "$WORK/proxy/nginx.conf" -p "$WORK/proxy" -g 'daemon off;' & NGINX_PID=$!; PIDS+=($NGINX_PID)
haproxy -f "$WORK/haproxy.cfg" -q & HAPROXY_PID=$!; PIDS+=($HAPROXY_PID)
"$HM_BIN" run -c "$WORK/harbormaster.toml" --log-level warn & HM_PID=$!; PIDS+=($HM_PID)

for url in http://$BACKEND http://$NGINX http://$HAPROXY http://$HM https://$NGINX_TLS https://$HM_TLS; do
  for _ in $(seq 100); do curl -kfsS "$url/" >/dev/null 2>&1 && break; sleep 0.05; done
  curl -kfsS "$url/" >/dev/null || { echo "$url does not answer" >&2; exit 1; }
done
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$HM_PID/status"; }
IDLE_RSS=$(rss)

# CPU ticks (utime + stime) of a process and its children (nginx workers).
TICK=$(getconf CLK_TCK)
cpu_ticks() {
  local total=0 p
  for p in "$1" $(pgrep -P "$1" || true); do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo "$total"
}
declare -A RPS P50 P99 CPU
to_ms() { awk -v v="$1" 'BEGIN { if (v ~ /us$/) { sub(/us$/,"",v); print v/1000 } else if (v ~ /ms$/) { sub(/ms$/,"",v); print v } else if (v ~ /s$/) { sub(/s$/,"",v); print v*1000 } else print v }'; }
LOAD_RSS=0
case " $CASES " in *" plain "*) PLAIN_ROUNDS=$ROUNDS;; *) PLAIN_ROUNDS=0;; esac
for round in $(seq "$PLAIN_ROUNDS"); do
  for target in direct harbormaster nginx haproxy; do
    case $target in direct) addr=$BACKEND pid=;; harbormaster) addr=$HM pid=$HM_PID;; nginx) addr=$NGINX pid=$NGINX_PID;; haproxy) addr=$HAPROXY pid=$HAPROXY_PID;; esac
    [ -n "$pid" ] && before=$(cpu_ticks "$pid")
    out=$(wrk -t2 -c"$CONNS" -d"${DURATION}s" --latency "http://$addr/")
    if [ -n "$pid" ]; then
      ticks=$(( $(cpu_ticks "$pid") - before ))
      requests=$(echo "$out" | awk '/requests in/ {print $1}')
      CPU[$target]+="$(awk -v t="$ticks" -v hz="$TICK" -v n="$requests" 'BEGIN { printf "%.2f", t * 1e6 / hz / n }') "
    fi
    if [ "$target" = harbormaster ]; then r=$(rss); [ "$r" -gt "$LOAD_RSS" ] && LOAD_RSS=$r; fi
    RPS[$target]+="$(echo "$out" | awk '/Requests\/sec/ {print $2}') "
    P50[$target]+="$(to_ms "$(echo "$out" | awk '$1=="50%" {print $2}')") "
    P99[$target]+="$(to_ms "$(echo "$out" | awk '$1=="99%" {print $2}')") "
    errors=$(echo "$out" | awk '/Non-2xx|Socket errors/ {print}')
    [ -n "$errors" ] && echo "round $round $target: $errors" >&2
  done
done
PEAK_RSS=$(awk '/^VmHWM:/ {print $2}' "/proc/$HM_PID/status")

median() { echo "$1" | tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

if [[ " $CASES " == *" tls "* ]]; then
  declare -A HS KA
  for round in $(seq "$ROUNDS"); do
    for target in harbormaster nginx; do
      case $target in harbormaster) addr=$HM_TLS;; nginx) addr=$NGINX_TLS;; esac
      out=$(wrk -t2 -c"$CONNS" -d"${DURATION}s" -H 'Connection: close' "https://$addr/")
      HS[$target]+="$(echo "$out" | awk '/Requests\/sec/ {print $2}') "
      out=$(wrk -t2 -c"$CONNS" -d"${DURATION}s" "https://$addr/")
      KA[$target]+="$(echo "$out" | awk '/Requests\/sec/ {print $2}') "
      errors=$(echo "$out" | awk '/Non-2xx|Socket errors/ {print}')
      [ -n "$errors" ] && echo "round $round $target TLS: $errors" >&2
    done
  done
  echo
  echo "TLS (same EC P-256 certificate), wrk -t2 -c$CONNS -d${DURATION}s, $ROUNDS interleaved rounds, median; $(nproc) cores"
  printf '%-14s %16s %20s   %s | %s\n' target 'handshakes/s' 'kept-alive req/s' 'rounds (handshakes/s)' 'rounds (req/s)'
  for t in harbormaster nginx; do
    printf '%-14s %16.0f %20.0f   %s| %s\n' "$t" "$(median "${HS[$t]}")" "$(median "${KA[$t]}")" "${HS[$t]}" "${KA[$t]}"
  done
  [ "$PLAIN_ROUNDS" = 0 ] && exit 0
fi
echo
echo "wrk -t2 -c$CONNS -d${DURATION}s, $ROUNDS interleaved rounds, median of rounds; $(nproc) cores"
printf '%-14s %12s %10s %10s   %s | %s\n' target 'requests/s' 'p50 ms' 'p99 ms' 'rounds (req/s)' 'rounds (p99 ms)'
for t in direct harbormaster nginx haproxy; do
  printf '%-14s %12.0f %10.3f %10.3f   %s| %s\n' "$t" "$(median "${RPS[$t]}")" "$(median "${P50[$t]}")" "$(median "${P99[$t]}")" "${RPS[$t]}" "${P99[$t]}"
done
ratio() { awk -v a="$(median "${RPS[$1]}")" -v b="$(median "${RPS[$2]}")" 'BEGIN { printf "%.2f", a/b }'; }
echo
echo "requests/s ratio  harbormaster/nginx = $(ratio harbormaster nginx)   harbormaster/haproxy = $(ratio harbormaster haproxy)   harbormaster/direct = $(ratio harbormaster direct)"
echo "p99 ms            harbormaster = $(median "${P99[harbormaster]}")   nginx = $(median "${P99[nginx]}")   haproxy = $(median "${P99[haproxy]}")"
echo "CPU us/request    harbormaster = $(median "${CPU[harbormaster]}")   nginx = $(median "${CPU[nginx]}")   haproxy = $(median "${CPU[haproxy]}")   (rounds: ${CPU[harbormaster]}| ${CPU[nginx]}| ${CPU[haproxy]})"
echo "harbormaster RSS  idle = $((IDLE_RSS / 1024)) MiB ($IDLE_RSS KiB)   under load = $((LOAD_RSS / 1024)) MiB   peak = $((PEAK_RSS / 1024)) MiB"
