#!/usr/bin/env bash
# Instructions and heap allocations per proxied request: the stable
# figures (timings on a shared VM swing by a third between runs; these do
# not). Runs the release load_balancer example (threads: 1) under
# valgrind in front of an nginx upstream (fixed 100-byte body), sends
# WARM requests, zeroes the counters, sends N more with h2load --h1 over
# 10 connections, and divides.
#
# Usage: bash benches/load/instructions.sh [N (5000)] [WARM (500)]
# Prints "instructions per request: X" and "allocations per request: Y",
# both from callgrind, counted from the zeroing to the dump (the
# allocations are the calls into Rust's allocator entry points); then the
# same instruction count for nginx as the proxy (1 worker, upstream
# keep-alive, as in run.sh) under the same load, and the ratio.
# Installs valgrind, nginx and nghttp2-client if missing. Loopback only.
#
# VG_EXTRA="--dump-instr=yes": more valgrind flags (instruction-level
# profiles with KEEP=1).
# LB_ARGS="...": more flags for our proxy (e.g. "--rate-limit 1000000000"
# to count what the rate-limit module costs). NO_NGINX=1: skip nginx.
#
# H2C=1: the client speaks HTTP/2 with prior knowledge (h2load -c 10
# -m 10; ours runs with --h2c, nginx listens with `http2`), the upstream
# side stays HTTP/1.
#
# CONN_EACH=1: every request on a connection of its own (`Connection:
# close`, 10 clients at a time, from a small Python client), so the figure
# includes accepting, setting up and closing a client connection.
set -euo pipefail
N="${1:-5000}"
WARM="${2:-500}"
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

source "$(dirname "${BASH_SOURCE[0]}")/../common.sh" load_balancer
ensure_packages valgrind nginx nghttp2-client python3

BODY="$(head -c 99 /dev/zero | tr '\0' 'x')"
UP=$(free_port)
nginx_start upstream "server { listen 127.0.0.1:$UP; location / { return 200 \"$BODY\n\"; } }"
wait_port "$UP"
printf 'version: 1\nthreads: 1\nupstream_keepalive_pool_size: 128\n' > "$DIR/conf.yaml"

# under TOOL ARGS...: start ours under valgrind; PORT and VG are set.
# With PROXY=nginx, nginx as the proxy instead.
under() {
    PORT=$(free_port)
    if [ "${PROXY:-ours}" = nginx ]; then
        NGINX_WRAP="valgrind $*" nginx_start px "
    upstream up { server 127.0.0.1:$UP; keepalive 64; }
    server {
        listen 127.0.0.1:$PORT${H2C:+ http2};
        location / {
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
        }
    }"
        VG=$LAST_PID
        LOG="$DIR/px/stderr.log"
    else
        LOG="$DIR/vg.log"
        valgrind "$@" "$BIN" -c "$DIR/conf.yaml" --listen "127.0.0.1:$PORT" \
            --upstream "127.0.0.1:$UP" ${H2C:+--h2c} ${LB_ARGS:-} 2>"$LOG" &
        VG=$!
        PIDS+=($VG)
    fi
    # Valgrind is slow to start: wait up to a minute.
    for _ in $(seq 1 600); do (exec 3<>/dev/tcp/127.0.0.1/"$PORT") 2>/dev/null && return 0; sleep 0.1; done
    echo "the proxy never listened under valgrind" >&2
    cat "$LOG" >&2
    exit 1
}
load() { # requests
    local out
    if [ -n "${CONN_EACH:-}" ]; then
        python3 - "$PORT" "$1" <<'PY'
import socket, sys, threading
port, n = int(sys.argv[1]), int(sys.argv[2])
req = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
left, failed, lock = [n], [0], threading.Lock()
def client():
    while True:
        with lock:
            if left[0] == 0:
                return
            left[0] -= 1
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(req)
        got = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            got += b
        s.close()
        if not got.startswith(b"HTTP/1.1 200"):
            with lock:
                failed[0] += 1
threads = [threading.Thread(target=client) for _ in range(10)]
for t in threads: t.start()
for t in threads: t.join()
if failed[0]:
    sys.exit(f"{failed[0]} of {n} requests failed")
PY
        return
    fi
    if [ -n "${H2C:-}" ]; then
        out=$(h2load -n "$1" -c 10 -m 10 "http://127.0.0.1:$PORT/")
    else
        out=$(h2load --h1 -n "$1" -c 10 "http://127.0.0.1:$PORT/")
    fi
    grep -q "$1 succeeded, 0 failed" <<<"$out" || { echo "$out" >&2; exit 1; }
}
stop() {
    kill -INT "$VG"
    wait "$VG" || true
}

# measure NAME: instructions per request of the proxy under callgrind,
# into $DIR/NAME; prints the count.
measure() {
    mkdir -p "$DIR/$1"
    under --tool=callgrind --callgrind-out-file="$DIR/$1/cg.%p" ${VG_EXTRA:-}
    load "$WARM"
    callgrind_control -z "$VG" >/dev/null 2>&1
    load "$N"
    callgrind_control -d "$VG" >/dev/null 2>&1
    stop
    # The dump taken on request (part 1) holds exactly the measured
    # requests, from the zeroing to the dump; the one at exit holds the
    # shutdown.
    local total
    total=$(awk '/^(totals|summary):/ { print $2; exit }' "$DIR/$1"/cg.*.1)
    awk -v t="$total" -v n="$N" 'BEGIN { printf "%.0f\n", t / n }'
}

OURS_I=$(measure ours)
echo "instructions per request: $OURS_I"

# Allocations: the calls into Rust's allocator entry points in the same
# dump (whatever the global allocator is: the example keeps the system's,
# but a user's mimalloc or jemalloc would be counted the same way). A
# realloc counts as one. With LTO (the workspace's release profile) those
# entry points are inlined away; then the calls into the C allocator from
# outside it are counted instead (the example's allocator is the system's).
python3 - "$DIR"/ours/cg.*.1 "$N" <<'PY'
import re, sys
names, rust, libc, fn, cfn = {}, 0, 0, None, None
entry = re.compile(r"__rust_(alloc|alloc_zeroed|realloc)$")
c_entry = re.compile(r"^(malloc|calloc|realloc|posix_memalign|aligned_alloc|memalign)$")
for line in open(sys.argv[1], errors="replace"):
    m = re.match(r"c?fn=\((\d+)\)(?: (.*))?", line)
    if m:
        if m.group(2):
            names[m.group(1)] = m.group(2).strip()
        if line.startswith("cfn="):
            cfn = m.group(1)
        else:
            fn, cfn = m.group(1), None
        continue
    if line.startswith("calls=") and cfn is not None:
        n, callee = int(line.split()[0][6:]), names.get(cfn, "")
        if entry.search(callee):
            rust += n
        elif c_entry.match(callee) and not c_entry.match(names.get(fn, "")):
            libc += n
        cfn = None
calls = rust or libc
print(f"allocations per request: {calls / int(sys.argv[2]):.1f}")
PY

# nginx as the proxy, measured the same way, for the ratio.
[ -n "${NO_NGINX:-}" ] && exit 0
NGINX_I=$(PROXY=nginx measure nginx)
echo "nginx instructions per request: $NGINX_I"
awk -v a="$OURS_I" -v b="$NGINX_I" 'BEGIN { printf "ours / nginx: %.2f\n", a / b }'
