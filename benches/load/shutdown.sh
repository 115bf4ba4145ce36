#!/usr/bin/env bash
# Graceful shutdown (SIGTERM) under load: is any request lost?
#
# The load_balancer example (plain listener with h2c, TLS listener) in
# front of an nginx upstream, under these loads for DURATION seconds
# (HTTP/1.1 ones from benches/load/h1_client.py, which tells a refused
# connect from a request lost on an open connection; wrk cannot):
#   - 20 keep-alive HTTP/1.1 connections (100-byte answers);
#   - 10 clients with `Connection: close` (a connection per request);
#   - 10 keep-alive connections over TLS;
#   - 4 connections downloading 8 MB at 4 MB/s (two seconds each), so
#     downloads are in flight when the signal comes;
#   - h2load, 10 h2c connections with 5 streams each.
# Halfway through, SIGTERM: the proxy stops accepting, finishes what is
# in flight (keep-alive clients get `Connection: close` on their next
# answer, HTTP/2 ones GOAWAY) and exits. From then on new connections are
# refused, and those still in the accept queue when it closes are reset
# (as with nginx); both are expected and counted apart. Lost requests (an
# answer cut short) and unsent ones (a reused connection closed before any
# answer byte) should be 0; h2load's failed
# requests are shown too (its count includes requests it would not start
# after GOAWAY, as with upgrade.sh).
#
# Usage: bash benches/load/shutdown.sh [DURATION (10)]
# Installs what it lacks (nginx, nghttp2-client, openssl, python3). Loopback
# only; everything started is stopped by PID on exit.
set -euo pipefail
DURATION="${1:-10}"
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

source "$(dirname "${BASH_SOURCE[0]}")/../common.sh" load_balancer
ensure_packages nginx nghttp2-client openssl python3

BODY="$(head -c 99 /dev/zero | tr '\0' 'x')"
head -c $((8 << 20)) /dev/zero >"$DIR/big"
UP=$(free_port)
nginx_start upstream "server { listen 127.0.0.1:$UP;
    location / { return 200 \"$BODY\n\"; }
    location = /big { alias $DIR/big; limit_rate 4m; } }"
wait_port "$UP"

self_signed
PORT=$(free_port)
TPORT=$(free_port)
MPORT=$(free_port)
printf 'version: 1\nthreads: 2\npid_file: %s\n' "$DIR/server.pid" >"$DIR/conf.yaml"
"$BIN" -c "$DIR/conf.yaml" --listen "127.0.0.1:$PORT" --h2c \
    --tls-listen "127.0.0.1:$TPORT" --cert "$DIR/cert.pem" --key "$DIR/key.pem" \
    --metrics "127.0.0.1:$MPORT" --upstream "127.0.0.1:$UP" >>"$DIR/proxy.log" 2>&1 &
PROXY=$!
PIDS+=("$PROXY")
wait_port "$PORT"
wait_port "$TPORT"

CLIENT=benches/load/h1_client.py
python3 "$CLIENT" 127.0.0.1 "$PORT" "$DURATION" 20 / >"$DIR/keepalive.txt" 2>&1 &
LOADS=($!)
python3 "$CLIENT" 127.0.0.1 "$PORT" "$DURATION" 10 / close >"$DIR/new_conns.txt" 2>&1 &
LOADS+=($!)
python3 "$CLIENT" 127.0.0.1 "$TPORT" "$DURATION" 10 / tls >"$DIR/tls.txt" 2>&1 &
LOADS+=($!)
python3 "$CLIENT" 127.0.0.1 "$PORT" "$DURATION" 4 /big >"$DIR/downloads.txt" 2>&1 &
LOADS+=($!)
h2load -c10 -m5 -D "$DURATION" "http://127.0.0.1:$PORT/" >"$DIR/h2load_h2c.txt" 2>&1 &
LOADS+=($!)
PIDS+=("${LOADS[@]}")

sleep $((DURATION / 2))
signalled=$(date +%s.%N)
kill -TERM "$PROXY"
wait "$PROXY" || true
gone=$(date +%s.%N)
echo "SIGTERM: the proxy exited after $(awk -v a="$signalled" -v b="$gone" 'BEGIN { printf "%.2f", b - a }') s"
for p in "${LOADS[@]}"; do wait "$p" || true; done

lost=0
for f in keepalive new_conns tls downloads; do
    line=$(tail -1 "$DIR/$f.txt")
    n=$(sed -n 's/.*unsent=\([0-9]*\) lost=\([0-9]*\).*/\1 \2/p' <<<"$line")
    read -r u l <<<"${n:-1 1}"
    lost=$((lost + u + l))
    echo "$f: $line"
done
h=$(h2load_failed "$DIR/h2load_h2c.txt")
echo "h2load_h2c: $(grep -E '^requests:' "$DIR/h2load_h2c.txt" || echo "requests: ?"); $h counted"
echo "HTTP/1.1 requests lost or unsent across the shutdown: $lost (target 0)"
