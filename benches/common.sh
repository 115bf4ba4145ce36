# Shared by the load-benchmark scripts: `source benches/common.sh EXAMPLE`
# builds that example in release mode (BIN is its path), makes a temp dir
# (DIR) that is removed on exit with every process in PIDS killed, and
# defines free_port and wait_port. Loopback only.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pingora-target}"
cargo build --release -q --example "$1"
BIN="$CARGO_TARGET_DIR/release/examples/$1"

DIR=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$DIR"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 200); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }
