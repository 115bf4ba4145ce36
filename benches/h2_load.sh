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
SECS="${1:-10}"
source "$(dirname "${BASH_SOURCE[0]}")/common.sh" http_server

OURS=$(free_port)
printf 'version: 1\nthreads: 1\n' > "$DIR/conf.yaml"
"$BIN" -c "$DIR/conf.yaml" --listen "127.0.0.1:$OURS" --h2c 2>"$DIR/ours.log" &
PIDS+=($!)
wait_port "$OURS"

NGINX=$(free_port)
nginx_start nginx "
    server {
        listen 127.0.0.1:$NGINX http2;
        http2_max_concurrent_streams 128;
        location / { return 200 \"hello from pingora\\n\"; }
    }"
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
