#!/usr/bin/env bash
# HTTP/2 requests per second: our h2 server (the http_server example with
# --h2c, release build, one worker thread) against nginx (one worker,
# `listen ... http2`), both answering GET / with the same 19-byte body over
# h2c (prior knowledge), measured in the same run by the same client:
#   h2load -c 10 -m 100 -D <seconds>
# Loopback only.
#
# Usage: bash benches/h2_load.sh [seconds-per-server]   (default 10)
# Needs: nginx and h2load (nghttp2-client).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SECS="${1:-10}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pingora-target}"
cargo build --release -q --example http_server
BIN="$CARGO_TARGET_DIR/release/examples/http_server"

DIR=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$DIR"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 200); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }

OURS=$(free_port)
printf 'version: 1\nthreads: 1\n' > "$DIR/conf.yaml"
"$BIN" -c "$DIR/conf.yaml" --listen "127.0.0.1:$OURS" --h2c 2>"$DIR/ours.log" &
PIDS+=($!)
wait_port "$OURS"

NGINX=$(free_port)
mkdir -p "$DIR/nginx"
cat > "$DIR/nginx/nginx.conf" <<CONF
daemon off;
master_process off;
worker_processes 1;
pid $DIR/nginx/nginx.pid;
error_log $DIR/nginx/error.log;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $DIR/nginx/body;
    proxy_temp_path $DIR/nginx/proxy;
    fastcgi_temp_path $DIR/nginx/fastcgi;
    uwsgi_temp_path $DIR/nginx/uwsgi;
    scgi_temp_path $DIR/nginx/scgi;
    default_type text/plain;
    server {
        listen 127.0.0.1:$NGINX http2;
        http2_max_concurrent_streams 128;
        keepalive_requests 100000000;
        location / { return 200 "hello from pingora\n"; }
    }
}
CONF
nginx -p "$DIR/nginx" -c "$DIR/nginx/nginx.conf" &
PIDS+=($!)
wait_port "$NGINX"

rate() {
    h2load -c 10 -m 100 -D "$SECS" --warm-up-time=1 "http://127.0.0.1:$1/" 2>/dev/null \
        | awk '/^finished in/ { gsub(",", "", $4); printf "%.0f", $4 }'
}
echo "h2load -c 10 -m 100 -D ${SECS}s, h2c, GET / (19-byte body), one worker each"
ours=$(rate "$OURS")
theirs=$(rate "$NGINX")
echo "ours:  $ours req/s"
echo "nginx: $theirs req/s"
awk -v a="$ours" -v b="$theirs" 'BEGIN { printf "ours / nginx = %.2f\n", a / b }'
