#!/usr/bin/env bash
# The cache's hit path: our proxy (the load_balancer example, release
# build, one worker thread, `--cache` in memory and `--cache-dir` on disk)
# against nginx's `proxy_cache` (one worker, its cache in files, as nginx
# has it), both in front of the same origin (a second nginx serving two
# static objects, 1 KiB and 64 KiB, with `expires 1h`). Every object is
# fetched once to warm each cache; then each contestant in turn (ABC, ABC,
# ...) gets SECS seconds of wrk -c50 per object, all hits. Reports
# requests/s and CPU microseconds per hit (the proxy's utime+stime over
# the requests), and checks that the origin saw no request during the
# runs. The proxy runs on CPU 0 alone; the origin and wrk share CPU 1.
#
# Usage: bash benches/load/cache.sh [seconds-per-run (10)] [rounds (3)]
# Loopback only; everything started is stopped by PID on exit.
set -euo pipefail
SECS="${1:-10}"
ROUNDS="${2:-3}"
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

source "$(dirname "${BASH_SOURCE[0]}")/../common.sh" load_balancer
ensure_packages nginx wrk python3 procps
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
TICK=$(getconf CLK_TCK)

# --- the origin (CPU 1) ----------------------------------------------------------
mkdir -p "$DIR/www"
head -c 1024 /dev/zero | tr '\0' 'a' > "$DIR/www/small"
head -c 65536 /dev/zero | tr '\0' 'b' > "$DIR/www/large"
ORIGIN=$(free_port)
nginx_start origin "server { listen 127.0.0.1:$ORIGIN; root $DIR/www; expires 1h;
    access_log $DIR/origin/access.log; }" 1
wait_port "$ORIGIN"
origin_requests() { wc -l < "$DIR/origin/access.log"; }

# --- nginx proxy_cache (CPU 0) --------------------------------------------------
NG=$(free_port)
nginx_start px "
    proxy_cache_path $DIR/px/cache levels=1:2 keys_zone=c:10m max_size=256m inactive=1h;
    upstream up { server 127.0.0.1:$ORIGIN; keepalive 64; }
    server {
        listen 127.0.0.1:$NG;
        location / {
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_cache c;
            add_header Cache-Status \$upstream_cache_status;
        }
    }" 0
NGINX_PID=$LAST_PID
wait_port "$NG"

# --- ours, in memory and on disk (CPU 0) -------------------------------------------
printf 'version: 1\nthreads: 1\nupstream_keepalive_pool_size: 128\n' > "$DIR/conf.yaml"
start_ours() { # port, extra flags...
    local port=$1
    shift
    taskset -c 0 "$BIN" -c "$DIR/conf.yaml" --listen "127.0.0.1:$port" \
        --metrics "127.0.0.1:$(free_port)" --upstream "127.0.0.1:$ORIGIN" "$@" 2>"$DIR/ours-$port.log" &
    PIDS+=($!)
    LAST_PID=$!
    wait_port "$port"
}
MEM=$(free_port)
start_ours "$MEM" --cache --cache-size 256M
MEM_PID=$LAST_PID
DISK=$(free_port)
start_ours "$DISK" --cache-dir "$DIR/disk-cache" --cache-size 256M
DISK_PID=$LAST_PID

for port in "$MEM" "$DISK" "$NG"; do
    for obj in small large; do
        for _ in 1 2; do curl -s -o /dev/null "http://127.0.0.1:$port/$obj"; done
        status=$(curl -s -o /dev/null -D - "http://127.0.0.1:$port/$obj" | tr -d '\r' |
            awk -F': ' 'tolower($1) == "cache-status" { print $2 }')
        case "$status" in
        HIT | pingora\;\ hit*) ;;
        *) echo "port $port /$obj is not a hit after warming: '$status'" >&2; exit 1 ;;
        esac
    done
done
before=$(origin_requests)

declare -A RPS CPU
run() { # name pid port obj
    local name=$1 pid=$2 port=$3 obj=$4 t0 t1 n out
    out="$DIR/wrk-$name-$obj.txt"
    t0=$(cpu_ticks "$pid")
    taskset -c 1 wrk -t1 -c50 -d"${SECS}s" "http://127.0.0.1:$port/$obj" > "$out"
    t1=$(cpu_ticks "$pid")
    n=$(wrk_requests "$out")
    if [ "$(wrk_errors "$out")" != 0 ]; then
        echo "$name /$obj: errors" >&2
        cat "$out" >&2
        exit 1
    fi
    RPS[$name-$obj]+=" $(awk -v n="$n" -v s="$SECS" 'BEGIN { printf "%.0f", n / s }')"
    CPU[$name-$obj]+=" $(awk -v t=$((t1 - t0)) -v n="$n" -v k="$TICK" 'BEGIN { printf "%.2f", t / k * 1e6 / n }')"
}
for r in $(seq 1 "$ROUNDS"); do
    for obj in small large; do
        run ours-mem "$MEM_PID" "$MEM" "$obj"
        run ours-disk "$DISK_PID" "$DISK" "$obj"
        run nginx "$NGINX_PID" "$NG" "$obj"
    done
    echo "round $r done" >&2
done
after=$(origin_requests)

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
echo "cache hits, wrk -c50, ${SECS}s x $ROUNDS rounds (medians; ratios against nginx proxy_cache)"
printf '%-6s %-10s %10s %12s %9s %9s\n' object proxy 'requests/s' 'CPU us/hit' 'rps/ng' 'cpu/ng'
for obj in small large; do
    ng_rps=$(echo "${RPS[nginx-$obj]}" | median)
    ng_cpu=$(echo "${CPU[nginx-$obj]}" | median)
    for name in ours-mem ours-disk nginx; do
        rps=$(echo "${RPS[$name-$obj]}" | median)
        cpu=$(echo "${CPU[$name-$obj]}" | median)
        printf '%-6s %-10s %10s %12s %9.2f %9.2f\n' "$obj" "$name" "$rps" "$cpu" \
            "$(awk -v a="$rps" -v b="$ng_rps" 'BEGIN { print a / b }')" \
            "$(awk -v a="$cpu" -v b="$ng_cpu" 'BEGIN { print a / b }')"
    done
done
echo "origin requests during the runs: $((after - before)) (all hits: 0)"
