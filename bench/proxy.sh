#!/usr/bin/env bash
# Proxy throughput and latency: direct vs harbormaster vs nginx vs haproxy.
#
# One backend (nginx returning a small fixed body) and three proxies in front
# of it, measured with wrk in interleaved rounds so drift hits all alike.
# Peers are configured as their docs advise for speed: upstream keep-alive
# on, 2 workers/threads, each pinned to its own CPU (PIN=0: not pinned). Prints requests/s, p50/p99 latency, the ratios
# harbormaster/nginx, harbormaster/haproxy, harbormaster/direct, the CPU
# time each proxy spent per request (utime + stime of the process and its
# worker children from /proc over the measured window: the fairest figure
# on a 2-core machine where client, backend and proxy share the cores), and
# harbormaster's RSS idle and under load.
#
# Then three more cases, each proxy against the others in the same run
# (rounds interleaved, medians), after the keep-alive case:
# - HTTP/2 from the client: h2load with prior knowledge, 4 connections × 16
#   streams = 64 streams in flight (the proxies speak HTTP/1.1 upstream);
# - 1,000 connections: wrk -c1000 (and harbormaster's RSS under it);
# - a large body: a 1 GiB response streamed from the backend through each
#   proxy to curl, in MB/s;
# - TLS: harbormaster's [gateway.tls] and an nginx `listen … ssl` server with
#   the same certificate (EC P-256, made here with openssl), each proxying to
#   the same backend: new TLS handshakes per second (wrk with `Connection:
#   close`, so every request is a new connection and a full handshake: wrk
#   does not resume sessions) and kept-alive requests per second over TLS.
# Stops everything it started; the whole run takes about 5 minutes with the
# defaults.
#
# Usage: bench/proxy.sh [ROUNDS=3] [SECONDS=10] [CONNECTIONS=64] [CASE_SECONDS=5]
#        HM_BIN=/path/to/harbormaster bench/proxy.sh …   (measure another build)
#        PIN=0 bench/proxy.sh …   (no proxy pinned; by default every proxy's
#          workers are pinned one per CPU, as each one's docs offer for speed:
#          nginx `worker_cpu_affinity auto`, haproxy `cpu-map`, harbormaster
#          `worker_cpu_affinity = "auto"`, which HM_BIN2 must then know too.
#          Unpinned, the tail latency is the scheduler's: bench/RESULTS.md)
#        HM_BIN2=/path/to/other bench/proxy.sh …          (and a second one beside it;
#          HM_BASE_BIN= is the same, the name earlier RESULTS rows used)
set -euo pipefail
ROUNDS=${1:-3}
DURATION=${2:-10}
CONNS=${3:-64}
CASE_SECONDS=${4:-5}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/hm-bench.XXXXXX)
BACKEND=127.0.0.1:18101 NGINX=127.0.0.1:18102 HAPROXY=127.0.0.1:18103 HM=127.0.0.1:18104
NGINX_H2=127.0.0.1:18105 HAPROXY_H2=127.0.0.1:18106 HM2=127.0.0.1:18107
NGINX_TLS=127.0.0.1:18108 HM_TLS=127.0.0.1:18109
HM_BIN2=${HM_BIN2:-${HM_BASE_BIN:-}}
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

need() { command -v "$1" >/dev/null 2>&1; }
if ! need nginx || ! need haproxy || ! need wrk || ! need h2load || ! need curl; then
  echo "installing nginx, haproxy, wrk, h2load (nghttp2-client), curl from the OS packages" >&2
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light haproxy wrk nghttp2-client curl >/dev/null \
    || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx haproxy wrk nghttp2-client curl >/dev/null
fi
# 1,000 client connections, and as many upstream: more descriptors.
ulimit -n 20000 2>/dev/null || true
NGINX_BIN=$(command -v nginx || echo /usr/sbin/nginx)
if [ -z "${HM_BIN:-}" ]; then
  (cd "$ROOT" && cargo build --release -q -p harbormaster)
  HM_BIN=$ROOT/target/release/harbormaster
fi

mkdir -p "$WORK/backend" "$WORK/proxy"
. "$ROOT/bench/backend.sh"
write_backend_conf "$WORK" "$BACKEND"
# 1 GiB, sparse: read from the page cache, no disk involved.
truncate -s 1G "$WORK/big.bin"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
  -subj /CN=bench.test -addext subjectAltName=DNS:bench.test,IP:127.0.0.1 \
  -keyout "$WORK/site.key" -out "$WORK/site.pem" 2>/dev/null
chmod 755 "$WORK" "$WORK/backend"; chmod 644 "$WORK/big.bin"  # nginx workers run as nobody
PIN=${PIN-1}
[ "$PIN" = 0 ] && PIN=
cat > "$WORK/proxy/nginx.conf" <<CONF
worker_processes 2;
${PIN:+worker_cpu_affinity auto;}
error_log $WORK/proxy/error.log warn;
pid $WORK/proxy/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream backend { server $BACKEND; keepalive 128; }
  # Large responses stream through memory buffers, never a temp file.
  proxy_max_temp_file_size 0;
  server {
    listen $NGINX;
    listen $NGINX_H2 http2;
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
  ${PIN:+cpu-map auto:1/1-2 0-1}
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
  bind $HAPROXY_H2 proto h2
  default_backend be
backend be
  server b1 $BACKEND
CONF
cat > "$WORK/harbormaster.toml" <<CONF
[gateway]
listen = ["$HM"]
${PIN:+worker_cpu_affinity = \"auto\"}
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
TARGETS="direct harbormaster nginx haproxy"
ADDRS="$BACKEND $NGINX $HAPROXY $HM"
if [ -n "${HM_BIN2:-}" ]; then
  sed -e "s/$HM/$HM2/" -e '/^\[gateway.tls\]/,$d' "$WORK/harbormaster.toml" > "$WORK/harbormaster2.toml"
  "$HM_BIN2" run -c "$WORK/harbormaster2.toml" --log-level warn & HM2_PID=$!; PIDS+=($HM2_PID)
  TARGETS="$TARGETS hm2"
  ADDRS="$ADDRS $HM2"
  echo "hm2 = $HM_BIN2" >&2
fi

for url in $(printf 'http://%s ' $ADDRS) https://$NGINX_TLS https://$HM_TLS; do
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
for round in $(seq "$ROUNDS"); do
  for target in $TARGETS; do
    case $target in direct) addr=$BACKEND pid=;; harbormaster) addr=$HM pid=$HM_PID;; nginx) addr=$NGINX pid=$NGINX_PID;; haproxy) addr=$HAPROXY pid=$HAPROXY_PID;; hm2) addr=$HM2 pid=$HM2_PID;; esac
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
echo
echo "wrk -t2 -c$CONNS -d${DURATION}s, $ROUNDS interleaved rounds, median of rounds; $(nproc) cores"
printf '%-14s %12s %10s %10s   %s | %s\n' target 'requests/s' 'p50 ms' 'p99 ms' 'rounds (req/s)' 'rounds (p99 ms)'
for t in $TARGETS; do
  printf '%-14s %12.0f %10.3f %10.3f   %s| %s\n' "$t" "$(median "${RPS[$t]}")" "$(median "${P50[$t]}")" "$(median "${P99[$t]}")" "${RPS[$t]}" "${P99[$t]}"
done
ratio() { awk -v a="$(median "${RPS[$1]}")" -v b="$(median "${RPS[$2]}")" 'BEGIN { printf "%.2f", a/b }'; }
echo
echo "requests/s ratio  harbormaster/nginx = $(ratio harbormaster nginx)   harbormaster/haproxy = $(ratio harbormaster haproxy)   harbormaster/direct = $(ratio harbormaster direct)"
echo "p99 ms            harbormaster = $(median "${P99[harbormaster]}")   nginx = $(median "${P99[nginx]}")   haproxy = $(median "${P99[haproxy]}")"
echo "CPU us/request    harbormaster = $(median "${CPU[harbormaster]}")   nginx = $(median "${CPU[nginx]}")   haproxy = $(median "${CPU[haproxy]}")   (rounds: ${CPU[harbormaster]}| ${CPU[nginx]}| ${CPU[haproxy]})"
if [ -n "${HM_BIN2:-}" ]; then
  echo "second build      hm2/harbormaster = $(ratio hm2 harbormaster)   hm2/nginx = $(ratio hm2 nginx)   p99 hm2 = $(median "${P99[hm2]}") ms   CPU us/request hm2 = $(median "${CPU[hm2]}")   (rounds: ${CPU[hm2]})"
fi
echo "harbormaster RSS  idle = $((IDLE_RSS / 1024)) MiB ($IDLE_RSS KiB)   under load = $((LOAD_RSS / 1024)) MiB   peak = $((PEAK_RSS / 1024)) MiB"

# ---- The three further cases: each proxy in the same run, rounds interleaved.
PROXIES="harbormaster nginx haproxy"
[ -n "${HM_BIN2:-}" ] && PROXIES="$PROXIES hm2"
pid_of() { case $1 in harbormaster) echo "$HM_PID";; nginx) echo "$NGINX_PID";; haproxy) echo "$HAPROXY_PID";; hm2) echo "$HM2_PID";; esac; }
declare -A H2 H2CPU C1K C1KP99 C1KCPU BIG
LOAD_RSS_1K=0
for round in $(seq "$ROUNDS"); do
  # HTTP/2, prior knowledge, 64 streams in flight.
  for target in $PROXIES; do
    case $target in harbormaster) addr=$HM;; nginx) addr=$NGINX_H2;; haproxy) addr=$HAPROXY_H2;; hm2) addr=$HM2;; esac
    pid=$(pid_of "$target"); before=$(cpu_ticks "$pid")
    out=$(h2load -c4 -m16 -D "$CASE_SECONDS" --warm-up-time=1 "http://$addr/" 2>&1)
    ticks=$(( $(cpu_ticks "$pid") - before ))
    done_n=$(echo "$out" | awk '/^requests:/ {print $8}')
    failed=$(echo "$out" | awk '/^requests:/ {print $10 + $12}')
    [ "${failed:-1}" = 0 ] || echo "round $round h2 $target: $(echo "$out" | grep -E '^requests:')" >&2
    H2[$target]+="$(echo "$out" | awk '/^finished in/ {print $4}') "
    H2CPU[$target]+="$(awk -v t="$ticks" -v hz="$TICK" -v n="$done_n" 'BEGIN { printf "%.2f", n ? t * 1e6 / hz / n : 0 }') "
  done
  # 1,000 connections.
  for target in $PROXIES; do
    case $target in harbormaster) addr=$HM;; nginx) addr=$NGINX;; haproxy) addr=$HAPROXY;; hm2) addr=$HM2;; esac
    pid=$(pid_of "$target"); before=$(cpu_ticks "$pid")
    wrk -t2 -c1000 -d"${CASE_SECONDS}s" --latency "http://$addr/" > "$WORK/wrk1k.out" 2>&1 &
    wrk_pid=$!
    if [ "$target" = harbormaster ]; then
      sleep "$(awk -v d="$CASE_SECONDS" 'BEGIN { print d / 2 }')"
      r=$(rss); [ "$r" -gt "$LOAD_RSS_1K" ] && LOAD_RSS_1K=$r
    fi
    wait "$wrk_pid"; out=$(cat "$WORK/wrk1k.out")
    ticks=$(( $(cpu_ticks "$pid") - before ))
    requests=$(echo "$out" | awk '/requests in/ {print $1}')
    C1K[$target]+="$(echo "$out" | awk '/Requests\/sec/ {print $2}') "
    C1KP99[$target]+="$(to_ms "$(echo "$out" | awk '$1=="99%" {print $2}')") "
    C1KCPU[$target]+="$(awk -v t="$ticks" -v hz="$TICK" -v n="$requests" 'BEGIN { printf "%.2f", t * 1e6 / hz / n }') "
    errors=$(echo "$out" | awk '/Non-2xx|Socket errors/ {print}')
    [ -n "$errors" ] && echo "round $round 1000 connections $target: $errors" >&2
  done
  # A 1 GiB response streamed through (curl reports bytes/s).
  for target in direct $PROXIES; do
    case $target in direct) addr=$BACKEND;; harbormaster) addr=$HM;; nginx) addr=$NGINX;; haproxy) addr=$HAPROXY;; hm2) addr=$HM2;; esac
    out=$(curl -sS -o /dev/null --max-time 60 -w '%{http_code} %{size_download} %{speed_download}' "http://$addr/big" || true)
    read -r code size speed <<<"$out"
    if [ "$code" != 200 ] || [ "$size" != 1073741824 ]; then
      echo "round $round large body $target: status $code, $size bytes" >&2; speed=0
    fi
    BIG[$target]+="$(awk -v b="$speed" 'BEGIN { printf "%.0f", b / 1e6 }') "
  done
done

rat() { awk -v a="$(median "$1")" -v b="$(median "$2")" 'BEGIN { printf "%.2f", b ? a/b : 0 }'; }
echo
echo "HTTP/2 (h2load -c4 -m16 -D${CASE_SECONDS}, prior knowledge, 64 streams; proxies speak HTTP/1.1 upstream)"
for t in $PROXIES; do
  printf '  %-14s %12.0f req/s   CPU %6.2f us/request   rounds: %s| %s\n' "$t" "$(median "${H2[$t]}")" "$(median "${H2CPU[$t]}")" "${H2[$t]}" "${H2CPU[$t]}"
done
echo "  ratio harbormaster/nginx = $(rat "${H2[harbormaster]}" "${H2[nginx]}")   harbormaster/haproxy = $(rat "${H2[harbormaster]}" "${H2[haproxy]}")"
echo
echo "1,000 connections (wrk -t2 -c1000 -d${CASE_SECONDS}s)"
for t in $PROXIES; do
  printf '  %-14s %12.0f req/s   p99 %8.3f ms   CPU %6.2f us/request   rounds: %s| %s\n' "$t" "$(median "${C1K[$t]}")" "$(median "${C1KP99[$t]}")" "$(median "${C1KCPU[$t]}")" "${C1K[$t]}" "${C1KP99[$t]}"
done
echo "  ratio harbormaster/nginx = $(rat "${C1K[harbormaster]}" "${C1K[nginx]}")   harbormaster/haproxy = $(rat "${C1K[harbormaster]}" "${C1K[haproxy]}")"
echo "  harbormaster RSS under 1,000 connections = $((LOAD_RSS_1K / 1024)) MiB ($LOAD_RSS_1K KiB)"
echo
echo "Large body (1 GiB response, curl to /dev/null)"
for t in direct $PROXIES; do
  printf '  %-14s %8.0f MB/s   rounds: %s\n' "$t" "$(median "${BIG[$t]}")" "${BIG[$t]}"
done
echo "  ratio harbormaster/nginx = $(rat "${BIG[harbormaster]}" "${BIG[nginx]}")   harbormaster/haproxy = $(rat "${BIG[harbormaster]}" "${BIG[haproxy]}")"
echo "harbormaster RSS  idle = $((IDLE_RSS / 1024)) MiB ($IDLE_RSS KiB)   peak over the whole run = $(( $(awk '/^VmHWM:/ {print $2}' "/proc/$HM_PID/status") / 1024 )) MiB"

# TLS: new handshakes/s and kept-alive requests/s, harbormaster and nginx
# with the same certificate, rounds interleaved.
declare -A HS KA
for round in $(seq "$ROUNDS"); do
  for target in harbormaster nginx; do
    case $target in harbormaster) addr=$HM_TLS;; nginx) addr=$NGINX_TLS;; esac
    out=$(wrk -t2 -c"$CONNS" -d"${CASE_SECONDS}s" -H 'Connection: close' "https://$addr/")
    HS[$target]+="$(echo "$out" | awk '/Requests\/sec/ {print $2}') "
    out=$(wrk -t2 -c"$CONNS" -d"${CASE_SECONDS}s" "https://$addr/")
    KA[$target]+="$(echo "$out" | awk '/Requests\/sec/ {print $2}') "
    errors=$(echo "$out" | awk '/Non-2xx|Socket errors/ {print}')
    [ -n "$errors" ] && echo "round $round $target TLS: $errors" >&2
  done
done
echo
echo "TLS (same EC P-256 certificate), wrk -t2 -c$CONNS -d${CASE_SECONDS}s"
printf '  %-14s %14s %18s   %s | %s\n' target 'handshakes/s' 'kept-alive req/s' 'rounds (handshakes/s)' 'rounds (req/s)'
for t in harbormaster nginx; do
  printf '  %-14s %14.0f %18.0f   %s| %s\n' "$t" "$(median "${HS[$t]}")" "$(median "${KA[$t]}")" "${HS[$t]}" "${KA[$t]}"
done
echo "  ratio harbormaster/nginx: handshakes = $(rat "${HS[harbormaster]}" "${HS[nginx]}")   kept-alive = $(rat "${KA[harbormaster]}" "${KA[nginx]}")"
