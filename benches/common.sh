# Shared by the load-benchmark scripts: `source benches/common.sh EXAMPLE`
# builds that example in release mode (BIN is its path), makes a temp dir
# (DIR) that is removed on exit with every process in PIDS killed, and
# defines ensure_packages, free_port, wait_port and nginx_start. Loopback
# only.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# ensure_packages PKG...: install the Debian packages not installed yet
# (apt-get, with sudo when not root), as .ci/run does.
ensure_packages() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    if ((${#missing[@]})); then
        local sudo=""
        if [ "$(id -u)" -ne 0 ]; then sudo=sudo; fi
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pingora-target}"
cargo build --release -q --example "$1"
BIN="$CARGO_TARGET_DIR/release/examples/$1"

DIR=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    # KEEP=1 keeps the directory (callgrind dumps, logs) for a closer look.
    if [ -n "${KEEP:-}" ]; then echo "kept $DIR" >&2; else rm -rf "$DIR"; fi
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 200); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }

# nginx_start NAME HTTP-BLOCK [CPU]: a one-worker nginx of its own in
# $DIR/NAME (access log off, temp paths inside), pinned to CPU if given;
# its PID goes into PIDS and LAST_PID. With NGINX_WRAP set (e.g. a
# valgrind command line), nginx runs under it, its stderr in
# $DIR/NAME/stderr.log.
nginx_start() {
    local name=$1 body=$2 cpu=${3:-}
    mkdir -p "$DIR/$name"
    cat > "$DIR/$name/nginx.conf" <<CONF
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 65536;
pid $DIR/$name/nginx.pid;
error_log $DIR/$name/error.log;
events { worker_connections 30000; }
http {
    access_log off;
    client_body_temp_path $DIR/$name/body;
    proxy_temp_path $DIR/$name/proxy;
    fastcgi_temp_path $DIR/$name/fastcgi;
    uwsgi_temp_path $DIR/$name/uwsgi;
    scgi_temp_path $DIR/$name/scgi;
    default_type text/plain;
    keepalive_requests 100000000;
    $body
}
CONF
    local run=(nginx -p "$DIR/$name" -c "$DIR/$name/nginx.conf")
    if [ -n "$cpu" ]; then
        run=(taskset -c "$cpu" "${run[@]}")
    fi
    if [ -n "${NGINX_WRAP:-}" ]; then
        # shellcheck disable=SC2206 # a command line, split on spaces
        local wrap=($NGINX_WRAP)
        "${wrap[@]}" "${run[@]}" 2>"$DIR/$name/stderr.log" &
    else
        "${run[@]}" &
    fi
    PIDS+=($!)
    LAST_PID=$!
}

# wrk_errors FILE: socket errors (connect, read, write, timeout) plus
# non-2xx/3xx answers in a wrk report; wrk_requests FILE: requests done.
wrk_errors() {
    awk '/Socket errors/ { gsub(",", ""); e = $4 + $6 + $8 + $10 } /Non-2xx/ { n = $NF }
         END { print e + n }' "$1"
}
wrk_requests() { awk '/requests in/ { print $1 }' "$1"; }
# h2load_failed FILE: requests h2load counts as failed (its "errored" ones
# are among them) plus non-2xx answers.
h2load_failed() {
    awk '/^requests:/ { f = $(NF-5) } /^status codes:/ { n = $(NF-5) + $(NF-3) + $(NF-1) }
         END { print f + n }' "$1"
}

# self_signed: a throwaway certificate for localhost in $DIR/cert.pem and
# $DIR/key.pem (one day, RSA 2048).
self_signed() {
    openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost \
        -keyout "$DIR/key.pem" -out "$DIR/cert.pem" 2>/dev/null
}
