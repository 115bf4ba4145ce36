#!/usr/bin/env bash
# Compression throughput per core: ours (load_balancer --compress, one
# thread) against nginx's gzip module (one worker, gzip_comp_level 6), both
# as proxies in front of the same nginx upstream serving a 100 KiB HTML
# page. h2load (HTTP/1.1, 4 connections) asks for N pages with
# `Accept-Encoding: CODING`; the proxy's CPU time (user + system, from
# /proc) gives MB of page compressed per CPU second.
#
# Usage: bash benches/load/compress.sh [N (3000)] [ROUNDS (2)]
# Prints, per round, MB/s per core for ours with gzip, br and zstd (level
# 6) and for nginx with gzip (level 6), and the ratio ours/nginx for gzip.
# Installs nginx and nghttp2-client if missing. Loopback only.
set -euo pipefail
N="${1:-3000}"
ROUNDS="${2:-2}"
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh" load_balancer
ensure_packages nginx nghttp2-client python3

mkdir -p "$DIR/www"
python3 - "$DIR/www/page.html" <<'PY'
import sys, random
random.seed(7)
words = "the quick brown fox jumps over a lazy dog while proxies compress pages".split()
out, size = [], 0
while size < 100 * 1024:
    line = "<p class=\"c%d\">%s</p>\n" % (random.randint(0, 99), " ".join(random.choice(words) for _ in range(12)))
    out.append(line); size += len(line)
open(sys.argv[1], "w").write("".join(out)[:100 * 1024])
PY
PAGE_BYTES=$(stat -c %s "$DIR/www/page.html")
UP=$(free_port)
nginx_start upstream "server { listen 127.0.0.1:$UP; root $DIR/www; }"
wait_port "$UP"
printf 'version: 1\nthreads: 1\n' > "$DIR/conf.yaml"

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
# run PID PORT CODING: MB of page per CPU second of PID.
run() {
    local pid=$1 port=$2 coding=$3 before after out
    h2load --h1 -n 200 -c 4 -H "Accept-Encoding: $coding" "http://127.0.0.1:$port/page.html" >/dev/null
    before=$(cpu_ticks "$pid")
    out=$(h2load --h1 -n "$N" -c 4 -H "Accept-Encoding: $coding" "http://127.0.0.1:$port/page.html")
    grep -q "$N succeeded, 0 failed" <<<"$out" || { echo "$out" >&2; exit 1; }
    after=$(cpu_ticks "$pid")
    awk -v n="$N" -v b="$PAGE_BYTES" -v t="$((after - before))" -v hz="$(getconf CLK_TCK)" \
        'BEGIN { printf "%.1f", n * b / 1e6 / (t / hz) }'
}

PORT=$(free_port)
"$BIN" -c "$DIR/conf.yaml" --listen "127.0.0.1:$PORT" --upstream "127.0.0.1:$UP" --compress 2>"$DIR/lb.log" &
OURS=$!
PIDS+=($OURS)
NPORT=$(free_port)
nginx_start proxy "
    upstream up { server 127.0.0.1:$UP; keepalive 64; }
    server {
        listen 127.0.0.1:$NPORT;
        gzip on; gzip_comp_level 6; gzip_proxied any; gzip_types text/html;
        location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection \"\"; }
    }"
NGINX=$LAST_PID
wait_port "$PORT"
wait_port "$NPORT"
# The coding really is on, both sides.
for p in "$PORT" "$NPORT"; do
    curl -s -o /dev/null -D - -H 'Accept-Encoding: gzip' "http://127.0.0.1:$p/page.html" | grep -qi '^content-encoding: gzip' \
        || { echo "no gzip from port $p" >&2; exit 1; }
done

echo "page: $PAGE_BYTES bytes, $N requests per figure, MB of page compressed per CPU second"
for r in $(seq 1 "$ROUNDS"); do
    ng=$(run "$NGINX" "$NPORT" gzip)
    og=$(run "$OURS" "$PORT" gzip)
    ob=$(run "$OURS" "$PORT" br)
    oz=$(run "$OURS" "$PORT" zstd)
    ratio=$(awk -v a="$og" -v b="$ng" 'BEGIN { printf "%.2f", a / b }')
    echo "round $r: nginx gzip $ng | ours gzip $og (x$ratio) | ours br $ob | ours zstd $oz"
done
