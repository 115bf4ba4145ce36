#!/usr/bin/env bash
# Graceful upgrades under load: do clients see any error?
#
# The load_balancer example (plain listener with h2c, TLS listener with
# HTTP/2 by ALPN) in front of an nginx upstream, under five loads at once
# for DURATION seconds:
#   - wrk, 20 keep-alive HTTP/1.1 connections;
#   - wrk, 10 connections with `Connection: close` (a new connection per
#     request);
#   - wrk over TLS, 10 keep-alive connections;
#   - h2load, 10 h2c connections with 5 streams each;
#   - h2load over TLS (ALPN h2), 10 connections with 5 streams each;
#   - benches/h2_retry_client.rs over h2c and over TLS, 50 requests at
#     once on shared connections (5 streams each): an HTTP/2 client that
#     sends a request the server refused (GOAWAY past its stream, closed
#     before any response byte) again on a new connection, as browsers and
#     curl do (RFC 9113 §8.7).
# Meanwhile UPGRADES graceful upgrades in a row: a new process started
# with `-u`, then SIGQUIT to the old one, which hands its sockets over and
# drains. Prints each load's errors (wrk: socket errors and non-2xx;
# h2load: failed requests) and the total. The target is 0. (h2load counts
# as failed each request it could not start on a connection after that
# connection's GOAWAY, instead of sending it on a new one as browsers and
# curl do; it does the same against nginx's graceful reload. The retrying
# client shows what clients that do resend see; its resent count is the
# requests the old process refused unprocessed.)
#
# Usage: bash benches/load/upgrade.sh [DURATION (20)] [UPGRADES (2)]
# Installs what it lacks (nginx, wrk, nghttp2-client, openssl). Loopback
# only; everything started is stopped by PID on exit.
set -euo pipefail
DURATION="${1:-20}"
UPGRADES="${2:-2}"
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

source "$(dirname "${BASH_SOURCE[0]}")/../common.sh" load_balancer
ensure_packages nginx wrk nghttp2-client openssl
RETRY=$(cargo bench --bench h2_retry_client --no-run 2>&1 |
    sed -n 's/.*Executable .*(\(.*h2_retry_client-[0-9a-f]*\)).*/\1/p' | tail -1)
[ -x "$RETRY" ] || { echo "could not build benches/h2_retry_client.rs" >&2; exit 1; }

BODY="$(head -c 99 /dev/zero | tr '\0' 'x')"
UP=$(free_port)
nginx_start upstream "server { listen 127.0.0.1:$UP; location / { return 200 \"$BODY\n\"; } }"
wait_port "$UP"

self_signed
PORT=$(free_port)
TPORT=$(free_port)
MPORT=$(free_port)
cat > "$DIR/conf.yaml" <<CONF
version: 1
threads: 2
upgrade_sock: $DIR/upgrade.sock
pid_file: $DIR/server.pid
CONF

# start [-u]: one proxy process; its PID in LAST.
start() {
    "$BIN" -c "$DIR/conf.yaml" "$@" --listen "127.0.0.1:$PORT" --h2c \
        --tls-listen "127.0.0.1:$TPORT" --cert "$DIR/cert.pem" --key "$DIR/key.pem" \
        --metrics "127.0.0.1:$MPORT" --upstream "127.0.0.1:$UP" \
        >>"$DIR/proxy.log" 2>&1 &
    LAST=$!
    PIDS+=("$LAST")
}

start
CURRENT=$LAST
wait_port "$PORT"
wait_port "$TPORT"

wrk -t1 -c20 -d"${DURATION}s" "http://127.0.0.1:$PORT/" >"$DIR/wrk_keepalive.txt" 2>&1 &
LOADS=($!)
wrk -t1 -c10 -d"${DURATION}s" -H "Connection: close" "http://127.0.0.1:$PORT/" \
    >"$DIR/wrk_new_conns.txt" 2>&1 &
LOADS+=($!)
wrk -t1 -c10 -d"${DURATION}s" "https://127.0.0.1:$TPORT/" >"$DIR/wrk_tls.txt" 2>&1 &
LOADS+=($!)
h2load -c10 -m5 -D "$DURATION" "http://127.0.0.1:$PORT/" >"$DIR/h2load_h2c.txt" 2>&1 &
LOADS+=($!)
h2load -c10 -m5 -D "$DURATION" "https://127.0.0.1:$TPORT/" >"$DIR/h2load_tls.txt" 2>&1 &
LOADS+=($!)
"$RETRY" "http://127.0.0.1:$PORT/" "$DURATION" 50 >"$DIR/retry_h2c.txt" 2>"$DIR/retry_h2c.err" &
LOADS+=($!)
"$RETRY" "https://127.0.0.1:$TPORT/" "$DURATION" 50 >"$DIR/retry_tls.txt" 2>"$DIR/retry_tls.err" &
LOADS+=($!)
PIDS+=("${LOADS[@]}")

# The upgrades, spread over the run.
step=$((DURATION / (UPGRADES + 1)))
for round in $(seq 1 "$UPGRADES"); do
    sleep "$step"
    rm -f "$DIR/upgrade.sock"
    start -u
    NEXT=$LAST
    for _ in $(seq 1 200); do [ -S "$DIR/upgrade.sock" ] && break; sleep 0.05; done
    [ -S "$DIR/upgrade.sock" ] || { echo "upgrade $round: the new process never opened its socket" >&2; exit 1; }
    kill -QUIT "$CURRENT"
    wait "$CURRENT" || true
    echo "upgrade $round: done"
    CURRENT=$NEXT
done
for p in "${LOADS[@]}"; do wait "$p" || true; done

total=0
for f in wrk_keepalive wrk_new_conns wrk_tls; do
    n=$(wrk_errors "$DIR/$f.txt")
    total=$((total + n))
    echo "$f: $(wrk_requests "$DIR/$f.txt") requests, $n errors (socket errors and non-2xx)"
done
for f in h2load_h2c h2load_tls; do
    n=$(h2load_failed "$DIR/$f.txt")
    total=$((total + n))
    echo "$f: $(grep -E '^requests:' "$DIR/$f.txt" || echo "requests: ?"); $n counted"
done
retrying=0
for f in retry_h2c retry_tls; do
    line=$(cat "$DIR/$f.txt")
    n=$(sed -n 's/.*errors \([0-9]*\).*/\1/p' <<<"$line")
    retrying=$((retrying + ${n:-1}))
    echo "$f (resends refused requests): $line"
    head -3 "$DIR/$f.err"
done
echo "client errors across $UPGRADES upgrades: $total (wrk and h2load); $retrying (HTTP/2 clients that resend)"
