#!/usr/bin/env bash
# Soak: mixed load and injected faults for a long while; memory, file
# descriptors and errors at the end.
#
# The load_balancer example (2 threads, h2c on, 2 s upstream timeouts)
# round-robins over two upstreams: nginx (always fine) and a faulty one of
# our own (benches/load/faulty_upstream.py) that answers most requests
# well but, for FAULT_PERCENT of them, resets mid-body, closes mid-header,
# trickles the body, stays silent, or sends fewer bytes than its
# Content-Length. Loads, at once, for the whole run: wrk with 20
# keep-alive connections, wrk with a new connection per request, h2load
# over h2c. Clients that vanish: curl with a 50 ms limit, in a loop.
#
# Prints: the proxy's RSS after warm-up and at the end; its open file
# descriptors before the load and 65 s after it ends (past the pool's idle
# timeout: back to baseline?);
# requests and errors per load; faults injected. The client-visible
# errors must not exceed the faults injected (each fault costs at most
# the one request it hit).
#
# Usage: bash benches/load/soak.sh [SECONDS (1800)] [FAULT_PERCENT (2)]
# Installs what it lacks (nginx, wrk, nghttp2-client, python3, curl).
# Loopback only; everything started is stopped by PID on exit.
set -euo pipefail
SECONDS_TOTAL="${1:-1800}"
FAULT_PERCENT="${2:-2}"
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
HERE="$(pwd)/benches/load"

source "$(dirname "${BASH_SOURCE[0]}")/../common.sh" load_balancer
ensure_packages nginx wrk nghttp2-client python3 curl

BODY="$(head -c 99 /dev/zero | tr '\0' 'x')"
UP=$(free_port)
nginx_start upstream "server { listen 127.0.0.1:$UP; location / { return 200 \"$BODY\n\"; } }"
FAULTY=$(free_port)
python3 "$HERE/faulty_upstream.py" "$FAULTY" "$FAULT_PERCENT" "$DIR/faults.txt" \
    >"$DIR/faulty.log" 2>&1 &
PIDS+=($!)
wait_port "$UP"
wait_port "$FAULTY"

PORT=$(free_port)
MPORT=$(free_port)
printf 'version: 1\nthreads: 2\n' > "$DIR/conf.yaml"
"$BIN" -c "$DIR/conf.yaml" --listen "127.0.0.1:$PORT" --h2c --metrics "127.0.0.1:$MPORT" \
    --upstream "127.0.0.1:$UP" --upstream "127.0.0.1:$FAULTY" --upstream-timeout-ms 2000 \
    >"$DIR/proxy.log" 2>&1 &
PROXY=$!
PIDS+=("$PROXY")
wait_port "$PORT"
sleep 1

rss() { awk '/^VmRSS/ { print $2 }' "/proc/$PROXY/status"; }
fds() { ls "/proc/$PROXY/fd" | wc -l; }
FDS_BEFORE=$(fds)

wrk -t1 -c20 -d"${SECONDS_TOTAL}s" "http://127.0.0.1:$PORT/" >"$DIR/wrk_keepalive.txt" 2>&1 &
LOADS=($!)
wrk -t1 -c5 -d"${SECONDS_TOTAL}s" -H "Connection: close" "http://127.0.0.1:$PORT/" \
    >"$DIR/wrk_new_conns.txt" 2>&1 &
LOADS+=($!)
h2load -c5 -m5 -D "$SECONDS_TOTAL" "http://127.0.0.1:$PORT/" >"$DIR/h2load.txt" 2>&1 &
LOADS+=($!)
(
    end=$((SECONDS + SECONDS_TOTAL))
    n=0
    while [ "$SECONDS" -lt "$end" ]; do
        curl -s -o /dev/null --max-time 0.05 "http://127.0.0.1:$PORT/" || true
        n=$((n + 1))
        sleep 0.05
    done
    echo "$n" > "$DIR/vanished.txt"
) &
LOADS+=($!)
PIDS+=("${LOADS[@]}")

sleep $((SECONDS_TOTAL < 60 ? SECONDS_TOTAL / 4 : 30))
RSS_WARM=$(rss)
for p in "${LOADS[@]}"; do wait "$p" || true; done
RSS_END=$(rss)
# Pooled upstream connections live out their 60 s idle timeout first.
sleep 65
FDS_AFTER=$(fds)

errors=0
for f in wrk_keepalive wrk_new_conns; do
    n=$(wrk_errors "$DIR/$f.txt")
    errors=$((errors + n))
    echo "$f: $(wrk_requests "$DIR/$f.txt") requests, $n errors (socket errors and non-2xx)"
done
n=$(h2load_failed "$DIR/h2load.txt")
errors=$((errors + n))
echo "h2load: $(grep -E '^requests:' "$DIR/h2load.txt" || echo "requests: ?"); $n counted"
echo "vanishing curl clients: $(cat "$DIR/vanished.txt" 2>/dev/null || echo ?)"
faults=$(cat "$DIR/faults.txt" 2>/dev/null || echo 0)
echo "faults injected: $faults; client-visible errors: $errors"
echo "proxy RSS: ${RSS_WARM} KiB after warm-up, ${RSS_END} KiB at the end"
echo "proxy open fds: $FDS_BEFORE before the load, $FDS_AFTER 65 s after it"
grep -c "panicked" "$DIR/proxy.log" | sed 's/^/panics in the proxy log: /'
