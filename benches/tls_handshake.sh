#!/usr/bin/env bash
# Full TLS 1.3 handshakes per second: our listener (the https_server
# example, release build, one worker thread) against nginx (one worker)
# with the same certificate, measured in the same run by the same client
# (`openssl s_time -new`: a new connection and full handshake each time,
# no session reuse). Loopback only.
#
# Usage: bash benches/tls_handshake.sh [seconds-per-server]   (default 10)
# Needs: nginx and openssl (the CLI); prints both rates and the ratio.
SECS="${1:-10}"
source "$(dirname "${BASH_SOURCE[0]}")/common.sh" https_server

OURS=$(free_port)
printf 'version: 1\nthreads: 1\n' > "$DIR/conf.yaml"
"$BIN" -c "$DIR/conf.yaml" --listen "127.0.0.1:$OURS" --cert-dir "$DIR/certs" 2>"$DIR/ours.log" &
PIDS+=($!)
wait_port "$OURS"

NGINX=$(free_port)
nginx_start nginx "
    server {
        listen 127.0.0.1:$NGINX ssl;
        ssl_certificate $DIR/certs/a.test.crt;
        ssl_certificate_key $DIR/certs/a.test.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_tickets off;
        ssl_session_cache off;
        location / { return 200 \"hello\\n\"; }
    }"
wait_port "$NGINX"

rate() {
    # "N connections in T real seconds" -> N / T
    openssl s_time -connect "127.0.0.1:$1" -new -time "$SECS" 2>/dev/null \
        | awk '/connections in .* real seconds/ { printf "%.0f", $1 / $4 }'
}
echo "openssl s_time -new, ${SECS}s each, TLS 1.3, ECDSA P-256 certificate"
ours=$(rate "$OURS")
theirs=$(rate "$NGINX")
echo "ours:  $ours handshakes/s"
echo "nginx: $theirs handshakes/s"
awk -v a="$ours" -v b="$theirs" 'BEGIN { printf "ours / nginx = %.2f\n", a / b }'
