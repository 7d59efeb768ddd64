#!/usr/bin/env bash
# CPU of a cmud node per SET of a new key, which a loaded machine does not distort the way it
# distorts requests per second: one `redis-benchmark -t set -r 100000` run against a fresh
# `--server-only --actors 2` node (quotas off), then the node's CPU time (from /proc, user +
# system, over the run and until signing and persistence are done) divided by the SETs, per
# thread group, and the bytes the node wrote per SET (log and redb).
#
#   benches/new-key-cpu.sh                  # -P 1, 200,000 SETs
#   PIPELINE=16 benches/new-key-cpu.sh
#   CALLGRIND=1 REQUESTS=20000 benches/new-key-cpu.sh
#       # instead: instructions per SET under valgrind's callgrind, which counts instructions
#       # whatever the machine's load (user space only: the kernel's TCP and file work is not
#       # counted); the profile is left in /tmp for callgrind_annotate
#   BIN=/path/to/cmud benches/new-key-cpu.sh   # another build (default target/release/cmud)
#
# Needs redis-benchmark and redis-cli (Debian: apt-get install redis-server), and valgrind for
# CALLGRIND=1. Most SETs create a key (about 86,000 distinct keys in 200,000 SETs).
set -euo pipefail
cd "$(dirname "$0")/.."

PIPELINE=${PIPELINE:-1}
CALLGRIND=${CALLGRIND:-}
REQUESTS=${REQUESTS:-200000}
CLIENTS=${CLIENTS:-50}
PORT=${PORT:-7462}
BIN=${BIN:-target/release/cmud}

for tool in redis-benchmark redis-cli; do
  command -v "$tool" >/dev/null || { echo "new-key-cpu: $tool not found" >&2; exit 1; }
done
[ "$BIN" != target/release/cmud ] || cargo build --release --quiet

work=$(mktemp -d)
cleanup() {
  [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/config/cmud"
echo '(max_keys_per_writer: 0, max_bytes_per_writer: 0)' >"$work/config/cmud/config.ron"
wrap=()
if [ -n "$CALLGRIND" ]; then
  profile=$(mktemp /tmp/new-key-callgrind.XXXXXX)
  wrap=(valgrind --tool=callgrind "--callgrind-out-file=$profile")
fi
HOME="$work/home" XDG_CONFIG_HOME="$work/config" RUST_LOG=warn \
  "${wrap[@]}" "$BIN" --server-only --actors 2 --rpc-port "$PORT" --no-mdns \
  --listen /ip4/127.0.0.1/tcp/0 --data-dir "$work/data" >"$work/out" 2>"$work/err" &
pid=$!

token=
for _ in $(seq 600); do
  token=$(cat "$work/data/cmud/rpc.token" 2>/dev/null || true)
  [ -n "$token" ] &&
    [ "$(redis-cli -p "$PORT" -a "$token" --no-auth-warning ping 2>/dev/null)" = PONG ] && break
  sleep 0.2
done
[ -n "$token" ] || { echo "new-key-cpu: the node did not start" >&2; cat "$work/err" >&2; exit 1; }

ticks() { awk '{ print $14 + $15 }' "/proc/$pid/stat"; }
written() { awk '/^wchar/ { print $2 }' "/proc/$pid/io"; }
# CPU ticks per thread name (numbered threads of one kind summed).
threads() {
  for task in /proc/"$pid"/task/*; do
    echo "$(sed -E 's/-[0-9]+$//' "$task/comm") $(sed 's/.*) //' "$task/stat" | awk '{ print $12 + $13 }')"
  done | awk '{ sum[$1] += $2 } END { for (name in sum) print name, sum[name] }' | sort
}

sleep 1
[ -n "$CALLGRIND" ] && callgrind_control -z "$pid" >/dev/null 2>&1
start=$(ticks)
start_written=$(written)
threads >"$work/before"
rps=$(redis-benchmark -p "$PORT" -a "$token" -t set -r 100000 -n "$REQUESTS" -c "$CLIENTS" \
  -P "$PIPELINE" --csv 2>/dev/null | awk -F'","' 'NR > 1 { gsub(/"/, "", $2); print $2 }')
# Signing and persistence go on after the last reply: wait until the node is idle.
last=$(ticks)
while sleep 2; do
  now=$(ticks)
  [ $((now - last)) -le 4 ] && break
  last=$now
done
end=$(ticks)
threads >"$work/after"
keys=$(redis-cli -p "$PORT" -a "$token" --no-auth-warning dbsize)
hz=$(getconf CLK_TCK)

echo "SET -r 100000 -n $REQUESTS -c $CLIENTS -P $PIPELINE: $rps req/s, $keys keys, load average $(cut -d' ' -f1-3 /proc/loadavg)"
if [ -n "$CALLGRIND" ]; then
  callgrind_control -d "$pid" >/dev/null 2>&1
  sleep 1
  dump=$(ls -t "$profile"* | head -1)
  instructions=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
  awk -v i="$instructions" -v n="$REQUESTS" -v f="$dump" \
    'BEGIN { printf "instructions per SET (user space): %.0f  (profile: %s)\n", i / n, f }'
  exit 0
fi
awk -v t=$((end - start)) -v n="$REQUESTS" -v hz="$hz" -v w=$(($(written) - start_written)) \
  'BEGIN { printf "node CPU per SET: %.1f us; written per SET: %.0f B\n", t / hz * 1e6 / n, w / n }'
join "$work/before" "$work/after" | awk -v n="$REQUESTS" -v hz="$hz" \
  '$3 > $2 { printf "  %-18s %6.1f us\n", $1, ($3 - $2) / hz * 1e6 / n }'
