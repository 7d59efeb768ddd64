#!/usr/bin/env bash
# Throughput of a cmud node against redis-server on this machine, with the same redis-benchmark
# runs, alternating the two so both see the same machine state. Prints requests per second and
# the ratio cmud/redis for GET and SET at pipeline depths 1 and 16, and for SET of random new
# keys (SET-r: `-t set -r 100000 -n 200000`, so most SETs create a key).
#
#   benches/vs-redis.sh            # 3 rounds, the median of each is compared
#   ROUNDS=5 benches/vs-redis.sh
#   ACTORS=1 benches/vs-redis.sh  # query actors of the cmud node (default 2)
#   QUOTA=on benches/vs-redis.sh  # keep the default per-writer quotas (off by default here:
#                                 # SET-r's keys come near one writer's 100,000)
#
# Needs redis-server and redis-benchmark (Debian: apt-get install redis-server). The cmud node
# is reached with its RPC token (`redis-benchmark -a`), as every client of cmud must.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
REQUESTS=${REQUESTS:-100000}
CLIENTS=${CLIENTS:-50}
ACTORS=${ACTORS:-2}
QUOTA=${QUOTA:-off}
CMUD_PORT=${CMUD_PORT:-7460}
REDIS_PORT=${REDIS_PORT:-7461}

for tool in redis-server redis-benchmark redis-cli; do
  command -v "$tool" >/dev/null || { echo "vs-redis: $tool not found (apt-get install redis-server)" >&2; exit 1; }
done

cargo build --release --quiet
work=$(mktemp -d)
cleanup() {
  [ -n "${cmud_pid:-}" ] && kill "$cmud_pid" 2>/dev/null && wait "$cmud_pid" 2>/dev/null
  [ -n "${redis_pid:-}" ] && kill "$redis_pid" 2>/dev/null && wait "$redis_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

# SET-r creates up to 100,000 keys of one writer: quotas off, as for any benchmark that may
# write more than one writer's quota (max_keys_per_writer in config.ron).
if [ "$QUOTA" = off ]; then
  mkdir -p "$work/config/cmud"
  echo '(max_keys_per_writer: 0, max_bytes_per_writer: 0)' >"$work/config/cmud/config.ron"
fi
HOME="$work/home" XDG_CONFIG_HOME="$work/config" RUST_LOG=warn \
  target/release/cmud --server-only --actors "$ACTORS" --rpc-port "$CMUD_PORT" --no-mdns \
  --listen /ip4/127.0.0.1/tcp/0 --data-dir "$work/data" >"$work/cmud.out" 2>"$work/cmud.err" &
cmud_pid=$!
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
  --daemonize no >"$work/redis.out" 2>&1 &
redis_pid=$!

# The cmud node's RPC token (it writes rpc.token in its world folder on start).
cmud_token() {
  cat "$work/data/cmud/rpc.token" 2>/dev/null
}

# auth_args PORT: the -a flag for redis-cli and redis-benchmark if PORT is cmud's.
auth_args() {
  [ "$1" = "$CMUD_PORT" ] && printf '%s\n' -a "$(cmud_token)"
  return 0
}

wait_port() {
  for _ in $(seq 100); do
    mapfile -t auth < <(auth_args "$1")
    [ "$(redis-cli -p "$1" "${auth[@]}" --no-auth-warning ping 2>/dev/null)" = PONG ] && return 0
    sleep 0.1
  done
  echo "vs-redis: nothing answers on port $1" >&2
  cat "$work/cmud.err" >&2
  exit 1
}
wait_port "$CMUD_PORT"
wait_port "$REDIS_PORT"

# One run: prints "SET <rps>" and "GET <rps>", then "SET-r <rps>" for random keys.
run() {
  mapfile -t auth < <(auth_args "$1")
  redis-benchmark -p "$1" "${auth[@]}" -t set,get -n "$REQUESTS" -c "$CLIENTS" -P "$2" --csv 2>/dev/null |
    awk -F'","' 'NR > 1 { gsub(/"/, "", $1); gsub(/"/, "", $2); print $1, $2 }'
  redis-benchmark -p "$1" "${auth[@]}" -t set -r 100000 -n 200000 -c "$CLIENTS" -P "$2" --csv 2>/dev/null |
    awk -F'","' 'NR > 1 { gsub(/"/, "", $1); gsub(/"/, "", $2); print $1 "-r", $2 }'
}

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
declare -A samples
for round in $(seq "$ROUNDS"); do
  for depth in 1 16; do
    for target in cmud redis; do
      port=$CMUD_PORT
      [ "$target" = redis ] && port=$REDIS_PORT
      while read -r test rps; do
        samples[$target,$depth,$test]+="$rps "
      done < <(run "$port" "$depth")
    done
  done
  echo "round $round of $ROUNDS done" >&2
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

printf '%-6s %-8s %14s %14s %8s\n' test pipeline cmud_rps redis_rps ratio
for depth in 1 16; do
  for test in GET SET SET-r; do
    c=$(echo "${samples[cmud,$depth,$test]}" | median)
    r=$(echo "${samples[redis,$depth,$test]}" | median)
    ratio=$(awk -v c="$c" -v r="$r" 'BEGIN { printf "%.2f", c / r }')
    printf '%-6s %-8s %14s %14s %8s\n' "$test" "-P $depth" "$c" "$r" "$ratio"
  done
done
# CPU seconds each server used over all rounds (user + system): steadier than rates on a shared
# machine.
cpu_secs() { awk '{ printf "%.1f", ($14 + $15) / 100 }' "/proc/$1/stat"; }
echo "cpu seconds: cmud $(cpu_secs "$cmud_pid"), redis $(cpu_secs "$redis_pid"); load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
