#!/usr/bin/env bash
# The load benchmark: our proxy (the load_balancer example, release build,
# one worker thread) against nginx as a reverse proxy (one worker, upstream
# keep-alive pool, access log off), both in front of the same upstream (a
# second nginx answering GET / with a fixed 100-byte body), measured in the
# same run, in alternation (ours, nginx, ours, nginx, ...), with wrk and
# h2load. The proxy under test runs on CPU 0 alone; the upstream and the
# load generators share CPU 1. Loopback only; everything started is stopped
# by PID on exit. A third contestant, benches/load/floor.c (a byte
# forwarder that does no HTTP work), runs the 50-connection wrk test in
# each round: the lower bound any proxy meets on this machine.
#
# Usage: bash benches/load/run.sh [seconds-per-run (10)] [rounds (3)]
#        IDLE_CONNS=N (default 10000) for the idle-connection figure
# Installs what it lacks (nginx, nghttp2-client, wrk, python3, openssl, gcc)
# with apt-get, like .ci/run. Needs 2 CPUs.
set -euo pipefail
SECS="${1:-10}"
ROUNDS="${2:-3}"
IDLE_CONNS="${IDLE_CONNS:-10000}"
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

if [ "$(nproc)" -lt 2 ]; then
    echo "needs 2 CPUs: the proxy on one, upstream and load generator on the other" >&2
    exit 1
fi

# Builds the example (BIN), makes DIR (removed on exit, with every PID in
# PIDS killed); ensure_packages, free_port, wait_port, nginx_start.
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh" load_balancer
ensure_packages nginx nghttp2-client wrk python3 openssl procps gcc
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }
# utime + stime of the whole process (all threads), in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
# utime and stime apart.
cpu_split() { awk '{ print $14, $15 }' "/proc/$1/stat"; }
# CPU 0's (the proxy's) steal and total ticks: time the hypervisor gave
# to someone else, which makes a run slower without the code changing.
cpu0_steal() { awk '$1 == "cpu0" { t = 0; for (i = 2; i <= 9; i++) t += $i; print $9, t }' /proc/stat; }
TICK=$(getconf CLK_TCK)

# --- certificates for the TLS listeners ---------------------------------------
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=bench.test -addext subjectAltName=DNS:bench.test \
    -keyout "$DIR/key.pem" -out "$DIR/cert.pem" 2>/dev/null

# --- nginx: the upstream (CPU 1) and the reverse proxy (CPU 0) ----------------
BODY="$(head -c 99 /dev/zero | tr '\0' 'x')"
UP=$(free_port)
UP_STATUS=$(free_port)
nginx_start upstream "server { listen 127.0.0.1:$UP; location / { return 200 \"$BODY\n\"; } }
    server { listen 127.0.0.1:$UP_STATUS; location / { stub_status; } }" 1
wait_port "$UP"
wait_port "$UP_STATUS"
# Connections the upstream has accepted so far (stub_status "accepts").
upstream_accepts() { curl -s "http://127.0.0.1:$UP_STATUS/" | awk 'NR == 3 { print $1 }'; }

NG_H1=$(free_port)
NG_TLS=$(free_port)
NG_H2=$(free_port)
nginx_start nginx "upstream up { server 127.0.0.1:$UP; keepalive 64; }
    ssl_certificate $DIR/cert.pem;
    ssl_certificate_key $DIR/key.pem;
    ssl_protocols TLSv1.3;
    ssl_session_cache shared:SSL:10m;
    server {
        listen 127.0.0.1:$NG_H1;
        listen 127.0.0.1:$NG_TLS ssl;
        listen 127.0.0.1:$NG_H2 http2;
        location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection \"\"; }
    }" 0
NGINX_PID=$LAST_PID
wait_port "$NG_H1"

# --- ours (CPU 0) ----------------------------------------------------------------
OURS_H1=$(free_port) # also HTTP/2 with prior knowledge (--h2c)
OURS_TLS=$(free_port)
METRICS=$(free_port)
printf 'version: 1\nthreads: 1\nupstream_keepalive_pool_size: 128\n' > "$DIR/conf.yaml"
taskset -c 0 "$BIN" -c "$DIR/conf.yaml" --listen "127.0.0.1:$OURS_H1" --h2c \
    --tls-listen "127.0.0.1:$OURS_TLS" --cert "$DIR/cert.pem" --key "$DIR/key.pem" \
    --upstream "127.0.0.1:$UP" --metrics "127.0.0.1:$METRICS" 2>"$DIR/ours.log" &
PIDS+=($!)
OURS_PID=$!
wait_port "$OURS_H1"
wait_port "$OURS_TLS"

# --- the floor (CPU 0): a byte forwarder with no HTTP work -----------------------
# benches/load/floor.c pairs each client connection with an upstream one
# and copies bytes: the kernel's socket work every proxy pays, and nothing
# else. Measured with wrk at 50 connections only, as a lower bound.
cc -O2 -o "$DIR/floor" benches/load/floor.c
FLOOR_PORT=$(free_port)
taskset -c 0 "$DIR/floor" "$FLOOR_PORT" "$UP" &
PIDS+=($!)
FLOOR_PID=$!
wait_port "$FLOOR_PORT"

# --- one measurement = one line "PROXY METRIC VALUE" in $RES -------------------
RES="$DIR/results"
: > "$RES"
record() { echo "$1 $2 $3" >> "$RES"; }
# wrk latency like 812.00us / 1.20ms / 1.01s, in µs.
to_us() { awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) print n; else if (v ~ /ms$/) print n * 1000; else if (v ~ /s$/) print n * 1000000; else print n }'; }

# wrk PROXY PID URL CONNS TAG: rate, p50/p99; at 50 connections also CPU per
# request and new upstream connections per 1,000 requests.
run_wrk() {
    local who=$1 pid=$2 url=$3 conns=$4 tag=$5
    local a0 t0 out u0 s0 st0 tt0
    a0=$(upstream_accepts)
    t0=$( [ "$pid" = - ] && echo 0 || cpu_ticks "$pid")
    read -r u0 s0 < <( [ "$pid" = - ] && echo 0 0 || cpu_split "$pid")
    read -r st0 tt0 < <(cpu0_steal)
    out=$(taskset -c 1 wrk -t1 -c"$conns" -d"${SECS}s" --latency "$url")
    if grep -qE 'Non-2xx|Socket errors' <<<"$out"; then
        echo "$who $tag: errors during the run:" >&2
        echo "$out" >&2
        exit 1
    fi
    local reqs rps
    reqs=$(awk '/requests in/ { print $1 }' <<<"$out")
    rps=$(awk '/^Requests\/sec/ { print $2 }' <<<"$out")
    record "$who" "rps_$tag" "$rps"
    record "$who" "p50_$tag" "$(to_us "$(awk '$1 == "50%" { print $2 }' <<<"$out")")"
    record "$who" "p99_$tag" "$(to_us "$(awk '$1 == "99%" { print $2 }' <<<"$out")")"
    if [ "$pid" != - ] && [ "$tag" = h1_c50 ]; then
        local t1 a1 u1 s1 st1 tt1
        t1=$(cpu_ticks "$pid")
        read -r u1 s1 < <(cpu_split "$pid")
        read -r st1 tt1 < <(cpu0_steal)
        a1=$(upstream_accepts)
        record "$who" cpu_us_per_req "$(awk -v t="$((t1 - t0))" -v hz="$TICK" -v n="$reqs" 'BEGIN { printf "%.2f", t * 1e6 / hz / n }')"
        record "$who" user_us_per_req "$(awk -v t="$((u1 - u0))" -v hz="$TICK" -v n="$reqs" 'BEGIN { printf "%.2f", t * 1e6 / hz / n }')"
        record "$who" sys_us_per_req "$(awk -v t="$((s1 - s0))" -v hz="$TICK" -v n="$reqs" 'BEGIN { printf "%.2f", t * 1e6 / hz / n }')"
        record "$who" steal_pct_cpu0 "$(awk -v s="$((st1 - st0))" -v t="$((tt1 - tt0))" 'BEGIN { printf "%.2f", (t > 0 ? s * 100 / t : 0) }')"
        # The stub_status request itself is one accepted connection.
        record "$who" new_upstream_conns_per_1000 "$(awk -v a="$((a1 - a0 - 1))" -v n="$reqs" 'BEGIN { printf "%.3f", a * 1000 / n }')"
    fi
}

# h2load PROXY URL TAG ARGS...: requests per second.
run_h2load() {
    local who=$1 url=$2 tag=$3
    shift 3
    local out
    out=$(taskset -c 1 h2load "$@" -D "$SECS" --warm-up-time=1 "$url" 2>&1)
    if ! grep -q ' 0 failed, 0 errored, 0 timeout' <<<"$out"; then
        echo "$who $tag: errors during the run:" >&2
        echo "$out" >&2
        exit 1
    fi
    record "$who" "rps_$tag" "$(awk '/^finished in/ { gsub(",", "", $4); print $4 }' <<<"$out")"
}

# TLS 1.3 with session resumption: `openssl s_time -reuse` makes one new
# connection after another, each resuming the first one's session and
# fetching `/` once. Connections per second (one at a time: a latency
# figure) and proxy CPU per connection.
run_s_time() {
    local who=$1 pid=$2 port=$3 t0 t1 out n reused status
    # s_time does not look at the answer: check that its request (HTTP/1.0,
    # no Host) gets a 200, or the figures measure an error path.
    status=$(printf 'GET / HTTP/1.0\r\n\r\n' | timeout 10 openssl s_client -quiet \
        -connect "127.0.0.1:$port" 2>/dev/null | head -1 | tr -d '\r')
    case "$status" in
        "HTTP/1."?" 200"*) ;;
        *) echo "$who: s_time's request (HTTP/1.0, no Host) was answered: $status" >&2; exit 1 ;;
    esac
    t0=$(cpu_ticks "$pid")
    out=$(taskset -c 1 openssl s_time -connect "127.0.0.1:$port" -www / -reuse -time "$SECS" 2>&1)
    t1=$(cpu_ticks "$pid")
    n=$(awk '/connections in .* real seconds/ { n = $1 } END { print n + 0 }' <<<"$out")
    reused=$(sed -n '/session id reuse/,$p' <<<"$out" | tr -cd 'r' | wc -c)
    if [ "$n" -eq 0 ] || [ "$reused" -lt $((n * 99 / 100)) ]; then
        echo "$who: TLS resumption failed ($reused of $n connections resumed):" >&2
        echo "$out" | tail -5 >&2
        exit 1
    fi
    record "$who" conns_tls_resumed "$(awk -v n="$n" -v s="$SECS" 'BEGIN { printf "%.0f", n / s }')"
    record "$who" cpu_us_per_tls_resumed_conn "$(awk -v t="$((t1 - t0))" -v hz="$TICK" -v n="$n" 'BEGIN { printf "%.1f", t * 1e6 / hz / n }')"
}

measure() { # PROXY PID H1-PORT TLS-PORT H2-PORT
    local who=$1 pid=$2 h1=$3 tls=$4 h2=$5
    # Warm up (not recorded): the upstream pool refills after idling out
    # between rounds, so the reuse figure is the steady state.
    taskset -c 1 wrk -t1 -c50 -d1s "http://127.0.0.1:$h1/" >/dev/null
    run_wrk "$who" "$pid" "http://127.0.0.1:$h1/" 50 h1_c50
    run_wrk "$who" "$pid" "http://127.0.0.1:$h1/" 1 h1_c1
    run_h2load "$who" "http://127.0.0.1:$h1/" h2load_h1_c50 --h1 -c 50
    run_wrk "$who" "$pid" "https://127.0.0.1:$tls/" 50 tls_c50
    run_s_time "$who" "$pid" "$tls"
    run_h2load "$who" "http://127.0.0.1:$h2/" h2_c50_m10 -c 50 -m 10
    record "$who" rss_after_load_kib "$(rss_kib "$pid")"
}

echo "CPU: $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), $(nproc) cores; ${SECS}s per run, $ROUNDS rounds" >&2
for r in $(seq 1 "$ROUNDS"); do
    echo "round $r/$ROUNDS" >&2
    run_wrk direct - "http://127.0.0.1:$UP/" 50 h1_c50
    measure ours "$OURS_PID" "$OURS_H1" "$OURS_TLS" "$OURS_H1"
    measure nginx "$NGINX_PID" "$NG_H1" "$NG_TLS" "$NG_H2"
    taskset -c 1 wrk -t1 -c50 -d1s "http://127.0.0.1:$FLOOR_PORT/" >/dev/null
    run_wrk floor "$FLOOR_PID" "http://127.0.0.1:$FLOOR_PORT/" 50 h1_c50
done

# --- idle keep-alive client connections ------------------------------------------
idle() { # PROXY PID PORT [SUFFIX]
    local who=$1 pid=$2 port=$3 tag=${4:-} before with after
    before=$(rss_kib "$pid")
    mkfifo "$DIR/idle.in"
    taskset -c 1 python3 benches/load/idle_clients.py "$port" "$IDLE_CONNS" < "$DIR/idle.in" > "$DIR/idle.out" &
    local cpid=$!
    PIDS+=($cpid)
    exec 4>"$DIR/idle.in"
    for _ in $(seq 1 1200); do grep -q ready "$DIR/idle.out" 2>/dev/null && break; sleep 0.1; done
    grep -q "ready $IDLE_CONNS" "$DIR/idle.out" || { echo "$who: idle clients never got ready" >&2; exit 1; }
    # Measured once the connections have been idle for a while (3 s), as
    # a server holding idle keep-alive clients is most of the time.
    sleep 3
    with=$(rss_kib "$pid")
    exec 4>&-
    wait "$cpid" || true
    rm -f "$DIR/idle.in"
    sleep 1
    after=$(rss_kib "$pid")
    record "$who" "idle_bytes_per_conn$tag" "$(( (with - before) * 1024 / IDLE_CONNS ))"
    record "$who" "rss_after_idle_clients_left_kib$tag" "$after"
}
echo "$IDLE_CONNS idle keep-alive connections" >&2
idle ours "$OURS_PID" "$OURS_H1"
idle nginx "$NGINX_PID" "$NG_H1"

# The same on fresh processes that served no load before: after the load,
# the idle connections can take memory the allocator kept from it, which
# hides what a connection costs (the figure can even be negative).
echo "$IDLE_CONNS idle keep-alive connections, fresh processes" >&2
FRESH=$(free_port)
taskset -c 0 "$BIN" -c "$DIR/conf.yaml" --listen "127.0.0.1:$FRESH" \
    --upstream "127.0.0.1:$UP" --metrics "127.0.0.1:$(free_port)" 2>"$DIR/fresh.log" &
PIDS+=($!)
FRESH_PID=$!
NG_FRESH=$(free_port)
nginx_start nginx_fresh "upstream up { server 127.0.0.1:$UP; keepalive 64; }
    server {
        listen 127.0.0.1:$NG_FRESH;
        location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection \"\"; }
    }" 0
NG_FRESH_PID=$LAST_PID
wait_port "$FRESH"
wait_port "$NG_FRESH"
idle ours "$FRESH_PID" "$FRESH" _fresh
idle nginx "$NG_FRESH_PID" "$NG_FRESH" _fresh

# --- the table ---------------------------------------------------------------------
echo
echo "$(date -u +%F) · $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), $(nproc) cores · bash benches/load/run.sh $SECS $ROUNDS"
python3 - "$RES" <<'PY'
import statistics, sys
vals = {}
for line in open(sys.argv[1]):
    who, metric, v = line.split()
    vals.setdefault((who, metric), []).append(float(v))

def cell(who, m):
    xs = vals.get((who, m))
    if not xs:
        return "–", None
    med = statistics.median(xs)
    fmt = (lambda x: f"{x:,.0f}") if med >= 100 else (lambda x: f"{x:.2f}")
    rng = f" ({fmt(min(xs))}–{fmt(max(xs))})" if len(xs) > 1 else ""
    return fmt(med) + rng, med

rows = [
    ("requests/s, wrk, 50 conns", "rps_h1_c50", "≥ 1.05", lambda r: r >= 1.05),
    ("requests/s, h2load --h1, 50 conns", "rps_h2load_h1_c50", "", None),
    ("p50 µs, 50 conns", "p50_h1_c50", "", None),
    ("p99 µs, 50 conns", "p99_h1_c50", "≤ 1", lambda r: r <= 1),
    ("p50 µs, 1 conn", "p50_h1_c1", "", None),
    ("p99 µs, 1 conn", "p99_h1_c1", "≤ 1", lambda r: r <= 1),
    ("proxy CPU µs per request", "cpu_us_per_req", "≤ 0.8", lambda r: r <= 0.8),
    ("  of which user", "user_us_per_req", "", None),
    ("  of which system", "sys_us_per_req", "", None),
    ("steal on the proxy's CPU during that run, %", "steal_pct_cpu0", "", None),
    ("new upstream conns per 1,000 requests", "new_upstream_conns_per_1000", "", None),
    ("requests/s, TLS 1.3 keep-alive, 50 conns", "rps_tls_c50", "", None),
    ("TLS 1.3 resumed connections/s, one request each (s_time -reuse)", "conns_tls_resumed", "", None),
    ("proxy CPU µs per resumed TLS connection", "cpu_us_per_tls_resumed_conn", "", None),
    ("requests/s, HTTP/2 (h2load -c 50 -m 10)", "rps_h2_c50_m10", "", None),
    ("RSS after load, KiB", "rss_after_load_kib", "", None),
    ("bytes per idle client connection, after the load", "idle_bytes_per_conn", "", None),
    ("RSS after the idle clients left, KiB", "rss_after_idle_clients_left_kib", "", None),
    ("bytes per idle client connection, fresh process", "idle_bytes_per_conn_fresh", "≤ 1", lambda r: r <= 1),
    ("RSS after the idle clients left, fresh process, KiB", "rss_after_idle_clients_left_kib_fresh", "", None),
]
print()
print("| figure | ours: median (min–max) | nginx: median (min–max) | ours / nginx | target | met |")
print("|---|---|---|---|---|---|")
for name, m, target, ok in rows:
    a, am = cell("ours", m)
    b, bm = cell("nginx", m)
    ratio = f"{am / bm:.2f}" if am is not None and bm else "–"
    met = "" if ok is None or am is None or not bm else ("yes" if ok(am / bm) else "**no**")
    print(f"| {name} | {a} | {b} | {ratio} | {target} | {met} |")
d, dm = cell("direct", "rps_h1_c50")
_, om = cell("ours", "rps_h1_c50")
reuse = vals.get(("ours", "new_upstream_conns_per_1000"), [0])
print(f"| requests/s, wrk, 50 conns, direct to the upstream (ceiling) | {d} | | ours / direct = {om / dm:.2f} | ≥ 0.95 | {'yes' if om / dm >= 0.95 else '**no**'} |")
worst = max(reuse)
# The floor: what a forwarder with no HTTP work gets on this machine in
# the same run, against nginx and the ceiling. A target below it cannot be
# met by any proxy here.
for name, m in [("requests/s, wrk, 50 conns", "rps_h1_c50"), ("p99 µs, 50 conns", "p99_h1_c50"),
                ("proxy CPU µs per request", "cpu_us_per_req"), ("  of which user", "user_us_per_req"),
                ("  of which system", "sys_us_per_req")]:
    f, fm = cell("floor", m)
    _, nm = cell("nginx", m)
    extra = f"; floor / direct = {fm / dm:.2f}" if m == "rps_h1_c50" and fm else ""
    ratio = f"floor / nginx = {fm / nm:.2f}{extra}" if fm is not None and nm else "–"
    print(f"| floor (benches/load/floor.c, no HTTP work): {name} | {f} | | {ratio} | | |")
print(f"| upstream reuse, ours (worst round) | {100 - worst / 10:.3f}% | | | ≥ 99.9% | {'yes' if worst <= 1 else '**no**'} |")
PY
