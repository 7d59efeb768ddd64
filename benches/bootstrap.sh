#!/usr/bin/env bash
# Time for a world of 100,000 keys (64-byte values) to reach a new node on loopback, with the
# CPU time each node spent (robust on a shared machine). Needs redis-cli, python3 and bc.
#
#   benches/bootstrap.sh                    # builds and measures target/release/cmud
#   BIN=/path/to/cmud SETTLE=6 benches/bootstrap.sh   # another binary; seconds to let the host settle
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${BIN:-}" ]; then cargo build --release --quiet; BIN=target/release/cmud; fi
KEYS=${KEYS:-100000}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; rm -rf "$work"; }
trap cleanup EXIT
# One writer's world of KEYS keys may pass a quota: quotas off on both nodes.
run() { local name=$1; shift; mkdir -p "$work/config-$name/cmud"; echo '(max_keys_per_writer: 0, max_bytes_per_writer: 0)' >"$work/config-$name/cmud/config.ron"; HOME=$work/home-$name XDG_CONFIG_HOME=$work/config-$name RUST_LOG=warn "$BIN" --server-only --actors 2 --no-mdns --data-dir "$work/data-$name" "$@" >"$work/$name.out" 2>"$work/$name.err" & pids+=($!); }
# cli NAME PORT ARGS...: redis-cli to node NAME with its RPC token (written in its world folder).
cli() { local name=$1 port=$2; shift 2; redis-cli -p "$port" -a "$(cat "$work/data-$name/cmud/rpc.token" 2>/dev/null)" --no-auth-warning "$@"; }
waitport() { for _ in $(seq 300); do [ "$(cli "$1" "$2" ping 2>/dev/null)" = PONG ] && return 0; sleep 0.1; done; echo "no port $2"; cat $work/*.err; exit 1; }
run a --rpc-port "${RPC_A:-7470}" --listen /ip4/127.0.0.1/tcp/0
waitport a "${RPC_A:-7470}"
python3 -c "
import sys
v='v'*64
out=sys.stdout
for c in range($KEYS//500):
    args=['MSET']
    for i in range(500):
        args += ['world/%06d'%(c*500+i), v]
    out.write('*%d\r\n'%len(args) + ''.join('\$%d\r\n%s\r\n'%(len(a),a) for a in args))
" | cli a "${RPC_A:-7470}" --pipe >/dev/null
for _ in $(seq 600); do [ "$(cli a "${RPC_A:-7470}" DBSIZE)" = "$KEYS" ] && break; sleep 0.1; done
sleep ${SETTLE:-1}
addr=$(cli a "${RPC_A:-7470}" ADDRS | grep 127.0.0.1 | head -1)
start=$(date +%s.%N)
run b --rpc-port "${RPC_B:-7472}" --listen /ip4/127.0.0.1/tcp/0 --join "$addr"
waitport b "${RPC_B:-7472}"
while true; do
  x=$(cli b "${RPC_B:-7472}" DBSIZE 2>/dev/null || echo 0); y=$(cli b "${RPC_B:-7472}" DBSIZE 2>/dev/null || echo 0)
  [ "$x" = "$KEYS" ] && [ "$y" = "$KEYS" ] && break
  sleep 0.02
done
end=$(date +%s.%N)
bpid=${pids[1]}
cpu=$(awk '{print ($14+$15)/100}' /proc/$bpid/stat)
apid=${pids[0]}
acpu=$(awk '{print ($14+$15)/100}' /proc/$apid/stat)
echo "$KEYS keys reached a new node in $(echo "$end - $start" | bc) s; new node cpu ${cpu} s; host cpu so far ${acpu} s; load average $(cut -d' ' -f1-3 /proc/loadavg)"
