# The benchmarks' backend: one nginx worker returning a 23-byte body on `/`
# and streaming $WORK/big.bin on `/big` (sourced by proxy.sh and
# instructions.sh, so both measure in front of the same backend).
#
# Usage: write_backend_conf WORK ADDR   (writes WORK/backend/nginx.conf)
write_backend_conf() {
  local work=$1 addr=$2
  mkdir -p "$work/backend"
  cat > "$work/backend/nginx.conf" <<CONF
worker_processes 1;
error_log $work/backend/error.log warn;
pid $work/backend/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen $addr;
    location / { return 200 "hello from the backend\n"; }
    location = /big { alias $work/big.bin; }
  }
}
CONF
}
