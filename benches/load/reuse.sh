#!/usr/bin/env bash
# The seed's headline, measured: upstream connection reuse across threads.
# Ours (the load_balancer example, `threads: 2`, one pool shared by both
# threads) against nginx (2 worker processes, each with its own keep-alive
# cache), both in front of 100 upstream origins (one nginx listening on 100
# ports, 100-byte answers), with clients that open a new connection every
# 10 requests (wrk, a Lua script closing every 10th request). Reports per
# proxy: requests/s, p99, CPU per request (all threads or processes) and
# upstream connections opened per 1,000 requests (the upstream's
# stub_status accepts). Loopback only; everything is stopped by PID.
#
# Usage: bash benches/load/reuse.sh [seconds (10)] [rounds (2)]
#        NGINX_KEEPALIVE=N (default 64): nginx's keep-alive cache per worker
set -euo pipefail
SECS="${1:-10}"
ROUNDS="${2:-2}"
ORIGINS=100
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

source "$(dirname "${BASH_SOURCE[0]}")/../common.sh" load_balancer
ensure_packages nginx wrk python3 procps
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
TICK=$(getconf CLK_TCK)

# --- the origins: one nginx, 100 ports ---------------------------------------
BODY="$(head -c 99 /dev/zero | tr '\0' 'x')"
PORTS=$(python3 -c "
import socket
socks = [socket.socket() for _ in range($ORIGINS)]
for s in socks: s.bind(('127.0.0.1', 0))
print(' '.join(str(s.getsockname()[1]) for s in socks))")
LISTENS=""
SERVERS=""
UPSTREAM_ARGS=()
for p in $PORTS; do
    LISTENS+="listen 127.0.0.1:$p; "
    SERVERS+="server 127.0.0.1:$p; "
    UPSTREAM_ARGS+=(--upstream "127.0.0.1:$p")
done
STATUS=$(free_port)
nginx_start origins "server { $LISTENS location / { return 200 \"$BODY\n\"; } }
    server { listen 127.0.0.1:$STATUS; location / { stub_status; } }"
wait_port "$STATUS"
accepts() { curl -s "http://127.0.0.1:$STATUS/" | awk 'NR == 3 { print $1 }'; }

# --- nginx as the proxy: 2 workers, NGINX_KEEPALIVE (64) per worker ------------
NG=$(free_port)
mkdir -p "$DIR/px/logs"
cat > "$DIR/px/nginx.conf" <<CONF
daemon off;
worker_processes 2;
worker_rlimit_nofile 65536;
pid $DIR/px/nginx.pid;
error_log $DIR/px/error.log;
events { worker_connections 30000; }
http {
    access_log off;
    client_body_temp_path $DIR/px/body;
    proxy_temp_path $DIR/px/proxy;
    fastcgi_temp_path $DIR/px/fastcgi;
    uwsgi_temp_path $DIR/px/uwsgi;
    scgi_temp_path $DIR/px/scgi;
    upstream up { $SERVERS keepalive ${NGINX_KEEPALIVE:-64}; }
    server {
        listen 127.0.0.1:$NG;
        location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }
}
CONF
nginx -p "$DIR/px" -c "$DIR/px/nginx.conf" 2>"$DIR/px/stderr.log" &
NGINX_MASTER=$!
PIDS+=("$NGINX_MASTER")
wait_port "$NG"

# --- ours: threads: 2, one pool for both; health checks out of the way -------
OURS=$(free_port)
METRICS=$(free_port)
printf 'version: 1\nthreads: 2\nupstream_keepalive_pool_size: 128\n' > "$DIR/conf.yaml"
"$BIN" -c "$DIR/conf.yaml" --listen "127.0.0.1:$OURS" --metrics "127.0.0.1:$METRICS" \
    --health-check-secs 3600 "${UPSTREAM_ARGS[@]}" 2>"$DIR/ours.log" &
OURS_PID=$!
PIDS+=("$OURS_PID")
wait_port "$OURS"

# A new connection every 10 requests: the 10th asks to close.
cat > "$DIR/every10.lua" <<'LUA'
local n = 0
request = function()
    n = n + 1
    if n % 10 == 0 then
        return wrk.format(nil, nil, { ["Connection"] = "close" })
    end
    return wrk.format()
end
LUA

# CPU ticks of a process and its threads; for nginx, the master and workers.
ticks() {
    local total=0 p
    for p in "$@"; do
        total=$((total + $(awk '{ print $14 + $15 }' "/proc/$p/stat")))
    done
    echo "$total"
}
nginx_pids() { echo "$NGINX_MASTER $(pgrep -P "$NGINX_MASTER" | tr '\n' ' ')"; }

# run NAME PORT PIDS...: one line of figures.
run() {
    local name=$1 port=$2
    shift 2
    # Warm the pools, unrecorded.
    wrk -t2 -c50 -d1s -s "$DIR/every10.lua" "http://127.0.0.1:$port/" >/dev/null
    local a0 t0 out
    a0=$(accepts)
    t0=$(ticks "$@")
    out=$(wrk -t2 -c50 -d"${SECS}s" --latency -s "$DIR/every10.lua" "http://127.0.0.1:$port/")
    local t1 a1 reqs rps p99 errs
    t1=$(ticks "$@")
    a1=$(accepts)
    reqs=$(awk '/requests in/ { print $1 }' <<<"$out")
    rps=$(awk '/^Requests\/sec/ { print $2 }' <<<"$out")
    p99=$(awk '$1 == "99%" { print $2 }' <<<"$out")
    errs=$(awk '/Socket errors|Non-2xx/ { print }' <<<"$out" | tr '\n' ' ')
    # One accepted connection is the stub_status request itself.
    awk -v n="$name" -v r="$reqs" -v rps="$rps" -v p="$p99" -v t="$((t1 - t0))" -v hz="$TICK" \
        -v a="$((a1 - a0 - 1))" -v e="${errs:-none}" 'BEGIN {
        printf "%-6s requests/s %9.0f  p99 %8s  CPU %6.2f us/request  upstream conns %7.2f per 1000 requests (reuse %.3f%%)  errors: %s\n",
            n, rps, p, t * 1e6 / hz / r, a * 1000 / r, 100 - a * 100 / r, e }'
}

echo "$(date -u +%F) · $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores · bash benches/load/reuse.sh $SECS $ROUNDS"
echo "$ORIGINS origins, 50 client connections, a new one every 10 requests"
for r in $(seq 1 "$ROUNDS"); do
    run ours "$OURS" "$OURS_PID"
    # shellcheck disable=SC2046
    run nginx "$NG" $(nginx_pids)
done
