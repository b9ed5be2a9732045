#!/usr/bin/env bash
# User-space instructions per relayed direct message of `nsh mesh server`, counted by valgrind's
# callgrind: unlike CPU time, the count does not drift with what else the machine is doing, so
# a change of a few percent shows (docs/mesh-server.md, "Seventh round"). Runs mesh-bench's
# relay phase against the server under callgrind (its --only-nsh runs, at a fraction of the
# usual rate), counts over SECONDS of it, and prints the count per message and the top entries.
#
#   scripts/bench-relay-instructions.sh [--nsh BIN] [--load rust|node] [--seconds N]
#
# Without --nsh it builds and measures this checkout's release `nsh`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
source scripts/env.sh
nsh="" load=rust seconds=6
while [ $# -gt 0 ]; do
  case "$1" in
    --nsh) nsh=$2; shift 2 ;;
    --load) load=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    *) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
  esac
done
command -v valgrind >/dev/null || { echo "needs valgrind (Debian: apt-get install valgrind)" >&2; exit 1; }
(cd mesh/interop && [ -d node_modules/socket.io-client ] || npm ci --no-audit --no-fund --loglevel=error)
if [ -z "$nsh" ]; then
  cargo build --release --locked -p nsh -p nsh-mesh-bench
else
  cargo build --release --locked -p nsh-mesh-bench
fi
nsh=$(realpath "${nsh:-$CARGO_TARGET_DIR/release/nsh}")
ulimit -n "$(ulimit -Hn)"

work=$(mktemp -d)
bench_pid=""
cleanup() {
  [ -n "$bench_pid" ] && kill "$bench_pid" 2>/dev/null || true
  [ -n "${server_pid:-}" ] && kill -9 "$server_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
# mesh-bench starts "the nsh binary"; this one runs the real one under callgrind.
cat > "$work/nsh" <<EOW
#!/bin/sh
exec valgrind --tool=callgrind --callgrind-out-file=$work/callgrind.%p "$nsh" "\$@"
EOW
chmod +x "$work/nsh"
# The memory phase's and the latency phase's servers come first; they are kept small here.
"$CARGO_TARGET_DIR/release/mesh-bench" --nsh "$work/nsh" --interop-dir mesh/interop --only-nsh \
  --runs 1 --load "$load" --duration 30s --connections 50 --rate 50 > "$work/bench.log" 2>&1 &
bench_pid=$!
# The relay phase's server is the fourth one started.
for _ in $(seq 600); do
  [ "$(grep -c 'listening at' "$work/bench.log")" -ge 4 ] && break
  kill -0 "$bench_pid" 2>/dev/null || { cat "$work/bench.log" >&2; exit 1; }
  sleep 0.5
done
line=$(grep 'listening at' "$work/bench.log" | tail -1)
server_pid=$(echo "$line" | grep -o 'pid [0-9]*' | cut -d' ' -f2)
port=$(echo "$line" | grep -o '127.0.0.1:[0-9]*' | cut -d: -f2)
delivered() {
  curl -s --max-time 20 "http://127.0.0.1:$port/metrics" |
    awk '/^nsh_mesh_messages_total\{outcome="delivered"\}/ {print $2}'
}
sleep 6 # past the load generator's warm-up
callgrind_control --zero "$server_pid" >/dev/null 2>&1
before=$(delivered)
sleep "$seconds"
after=$(delivered)
callgrind_control --dump "$server_pid" >/dev/null 2>&1
sleep 1
dump=$(ls -t "$work"/callgrind."$server_pid".* | head -1)
messages=$((after - before))
total=$(callgrind_annotate "$dump" | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
echo "relay ($load load generator): $messages messages counted, $((total / messages)) instructions per message (user space)"
echo "top entries (instructions, self):"
callgrind_annotate --threshold=100 --auto=no "$dump" | grep -E '^ *[0-9,]+ \( *[0-9.]+%\)  ' |
  grep -v 'PROGRAM TOTALS' | awk '$2 != "(100.0%)"' | head -15 | cut -c1-150
