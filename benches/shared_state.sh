#!/usr/bin/env bash
# Many replicas, one memory: what `[shared_state]` costs. Two jwtgate processes on this machine,
# the same routes, one keeping DPoP proofs and rate-limit buckets in its own memory, the other in
# a redis-server on loopback; wrk drives DPoP requests (a fresh proof each) and rate-limited
# requests (one caller, a limit it never reaches, so every request is checked and passes) through
# each. Prints req/s, p50, p99 and CPU µs per request of jwtgate and of redis-server, read from
# /proc before and after each run. Any unexpected status fails the script.
#
#   benches/shared_state.sh                 # 5 s per scenario
#   benches/shared_state.sh --duration 10 --proofs 300000
#
# Needs wrk, nginx, redis-server, taskset (apt-get install wrk nginx-light redis-server util-linux).
# Loopback only; it starts and kills only its own processes. Not run by CI.
set -euo pipefail

DURATION=5; PROOFS=150000; CONNS=32
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION=$2; shift ;;
    --proofs) PROOFS=$2; shift ;;
    *) echo "usage: $0 [--duration S] [--proofs N]" >&2; exit 2 ;;
  esac
  shift
done
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
for tool in wrk nginx redis-server taskset; do
  command -v "$tool" >/dev/null || { echo "shared_state.sh needs $tool (apt-get install wrk nginx-light redis-server util-linux)" >&2; exit 2; }
done
if [ "$(nproc)" -ge 2 ]; then PROXY_CPU=0; LOAD_CPU=1; else PROXY_CPU=0; LOAD_CPU=0; fi
BIN=${JWTGATE_BIN:-}
if [ -z "$BIN" ]; then
  (cd "$ROOT" && cargo build --release --quiet)
  BIN="$ROOT/target/release/jwtgate"
fi
WORK=$(mktemp -d /tmp/jwtgate-shared.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM
# shellcheck source=benches/common.sh
. "$HERE/common.sh"
P_UP=$(free_port); P_ISS=$(free_port); P_REDIS=$(free_port)
P_LOCAL=$(free_port); P_LOCAL_ADM=$(free_port); P_SHARED=$(free_port); P_SHARED_ADM=$(free_port)

nginx_conf upstream "$P_UP" 'location / { return 200 "ok\n"; }'
taskset -c "$LOAD_CPU" nginx -c "$WORK/upstream/nginx.conf" -e "$WORK/upstream/error.log" & PIDS+=($!)
taskset -c "$LOAD_CPU" redis-server --port "$P_REDIS" --bind 127.0.0.1 --save "" --appendonly no > "$WORK/redis.log" & REDIS_PID=$!; PIDS+=($REDIS_PID)
wait_http "http://127.0.0.1:$P_UP/" 200

echo "minting a DPoP-bound token and $PROOFS proofs..."
taskset -c "$LOAD_CPU" "$BIN" dev-issuer --port "$P_ISS" --tokens 1 --out "$WORK/tokens.txt" \
  --dpop-proofs "$PROOFS" --dpop-htu "https://api.example/api/x" > "$WORK/issuer.out" & PIDS+=($!)
for _ in $(seq 1 1200); do [ -s "$WORK/issuer.out" ] && break; sleep 0.1; done
DISCOVERY=$(head -1 "$WORK/issuer.out")
[ -n "$DISCOVERY" ] || { echo "the dev issuer did not start" >&2; exit 1; }

# conf FILE PORT ADMIN [SHARED_STATE_LINES]
conf() {
  cat > "$1" <<CONF
[server]
listen = "127.0.0.1:$2"
admin_listen = "127.0.0.1:$3"
log_level = "warn"
worker_threads = 1
public_base_url = "https://api.example"
[upstream]
url = "http://127.0.0.1:$P_UP"
[[issuers]]
name = "bench"
discovery_url = "$DISCOVERY"
audiences = ["jwtgate-dev-client"]
[[routes]]
name = "limited"
path_prefix = "/limited"
[routes.rate_limit]
key = "sub"
requests_per_second = 1000000
burst = 1000000
[[routes]]
name = "api"
path_prefix = "/api"
${4:-}
CONF
}
conf "$WORK/local.toml" "$P_LOCAL" "$P_LOCAL_ADM"
conf "$WORK/shared.toml" "$P_SHARED" "$P_SHARED_ADM" "$(printf '[shared_state]\nredis_url = "redis://127.0.0.1:%s/0"\ntimeout_ms = 200' "$P_REDIS")"
taskset -c "$PROXY_CPU" "$BIN" serve --config "$WORK/local.toml" 2> "$WORK/local.log" & LOCAL_PID=$!; PIDS+=($LOCAL_PID)
taskset -c "$PROXY_CPU" "$BIN" serve --config "$WORK/shared.toml" 2> "$WORK/shared.log" & SHARED_PID=$!; PIDS+=($SHARED_PID)
wait_http "http://127.0.0.1:$P_LOCAL_ADM/readyz" 200
wait_http "http://127.0.0.1:$P_SHARED_ADM/readyz" 200

CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
printf '%-22s %10s %9s %9s %6s %12s %12s\n' scenario "req/s" p50 p99 bad "jwtgate_us" "redis_us"
FAIL=0
# run NAME PID URL SCRIPT
run() {
  local name=$1 pid=$2 url=$3 script=$4 b r out
  b=$(cpu_ticks "$pid"); r=$(cpu_ticks "$REDIS_PID")
  out=$(LUA_DIR="$HERE/lua" TOKENS="$WORK/tokens.txt" PROOFS="$WORK/tokens.txt.dpop-proofs" \
        DPOP_TOKEN="$(head -1 "$WORK/tokens.txt.dpop-token")" \
        taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -s "$HERE/lua/$script" "$url")
  local b2 r2 reqs rps p50 p99 bad
  b2=$(cpu_ticks "$pid"); r2=$(cpu_ticks "$REDIS_PID")
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  bad=$(echo "$out" | awk '/UNEXPECTED_STATUS/ {print $2}')
  local per
  per() { awk -v d="$1" -v t="$CLK_TCK" -v n="$reqs" 'BEGIN {printf "%.1f", d / t * 1e6 / n}'; }
  printf '%-22s %10s %9s %9s %6s %12s %12s\n' "$name" "$rps" "$p50" "$p99" "${bad:-?}" "$(per $((b2 - b)))" "$(per $((r2 - r)))"
  if [ "${bad:-1}" != "0" ]; then
    echo "FAIL: $name: ${bad:-?} unexpected statuses (proofs used up? raise --proofs)" >&2
    FAIL=1
  fi
}
run dpop_in_process "$LOCAL_PID" "http://127.0.0.1:$P_LOCAL/api/x" dpop.lua
run dpop_shared_redis "$SHARED_PID" "http://127.0.0.1:$P_SHARED/api/x" dpop.lua
run ratelimit_in_process "$LOCAL_PID" "http://127.0.0.1:$P_LOCAL/limited/x" one_token.lua
run ratelimit_shared_redis "$SHARED_PID" "http://127.0.0.1:$P_SHARED/limited/x" one_token.lua
run bearer_no_state "$LOCAL_PID" "http://127.0.0.1:$P_LOCAL/api/x" one_token.lua
fails=$(curl -s "http://127.0.0.1:$P_SHARED_ADM/metrics" | awk '/^jwtgate_shared_state_requests_total/ && !/result="ok"/ {s += $2} END {print s + 0}')
echo "shared-store commands that failed or timed out: $fails"
[ "$fails" = 0 ] || FAIL=1
[ "$FAIL" = 0 ] || { echo "shared-state load test FAILED" >&2; exit 1; }
echo "shared-state load test passed: every response had the expected status"
