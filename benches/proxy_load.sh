#!/usr/bin/env bash
# Reverse-proxy requests per second: the load_balancer example (release
# build, one worker thread) against nginx as a reverse proxy (one worker,
# proxy_pass with upstream keepalive), both in front of the same upstream
# (a second nginx answering GET / with a 19-byte body), measured in the
# same run by the same client over HTTP/1.1 keep-alive:
#   h2load --h1 -c 50 -D <seconds>
# Loopback only.
#
# Usage: bash benches/proxy_load.sh [seconds-per-proxy]   (default 10)
# Needs: nginx and h2load (nghttp2-client).
SECS="${1:-10}"
source "$(dirname "${BASH_SOURCE[0]}")/common.sh" load_balancer

UP=$(free_port)
nginx_start upstream "server { listen 127.0.0.1:$UP; location / { return 200 \"hello from pingora\n\"; } }"
wait_port "$UP"

NGINX=$(free_port)
nginx_start proxy "upstream up { server 127.0.0.1:$UP; keepalive 64; }
    server { listen 127.0.0.1:$NGINX;
        location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"
wait_port "$NGINX"

OURS=$(free_port)
printf 'version: 1\nthreads: 1\nupstream_keepalive_pool_size: 128\n' > "$DIR/conf.yaml"
"$BIN" -c "$DIR/conf.yaml" --listen "127.0.0.1:$OURS" --upstream "127.0.0.1:$UP" 2>"$DIR/ours.log" &
PIDS+=($!)
wait_port "$OURS"

rate() {
    h2load --h1 -c 50 -D "$SECS" --warm-up-time=1 "http://127.0.0.1:$1/" 2>/dev/null \
        | awk '/^finished in/ { gsub(",", "", $4); printf "%.0f", $4 }'
}
echo "h2load --h1 -c 50 -D ${SECS}s, GET / (19-byte body) through a reverse proxy, one worker each"
ours=$(rate "$OURS")
theirs=$(rate "$NGINX")
echo "ours:  $ours req/s"
echo "nginx: $theirs req/s"
awk -v a="$ours" -v b="$theirs" 'BEGIN { printf "ours / nginx = %.2f\n", a / b }'
