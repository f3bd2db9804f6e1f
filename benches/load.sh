#!/usr/bin/env bash
# Load test: jwtgate against nginx's plain reverse proxy, on this machine, in one run.
#
#   benches/load.sh            # full: 10 s per scenario, 3 interleaved rounds, 10,000 tokens
#   benches/load.sh --quick    # CI: 2 s, 1 round, 200 tokens, no memory test
#
# Starts (and only ever kills) its own processes, all on 127.0.0.1:
#   upstream   nginx-light, one worker, `return 200`                      (core 1)
#   nginx      plain reverse proxy to the upstream, one worker, keepalive  (core 0)  <- baseline
#   issuer     `jwtgate dev-issuer`: Asgardeo-like discovery + JWKS, mints the tokens (core 1)
#   jwtgate    `jwtgate serve`, worker_threads = 1                         (core 0)
#   jwtgate    a second one with the verified-token cache off              (core 0)
#              both also run a decision listener (auth subrequests, Envoy-style: own path)
#   nginx      `return 200`, one worker: the floor for any HTTP answer       (core 0)  <- baseline
#   wrk        1 thread, 32 connections                                    (core 1)
#   pace       examples/pace.rs: constant rate (5,000 req/s), 8 connections (core 1)
# Scenarios run for the same duration in interleaved rounds. For every run it prints req/s,
# p50, p99, unexpected statuses and the proxy process's CPU µs per request, read from
# /proc/<pid>/stat before and after (steadier than req/s on a shared machine). Any response
# with an unexpected status fails the script.
set -euo pipefail

DURATION=10; ROUNDS=3; NTOKENS=10000; MEMTOKENS=100000; CONNS=32; RATE=5000; QUICK=0
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1; DURATION=2; ROUNDS=1; NTOKENS=200; MEMTOKENS=0 ;;
    --duration) DURATION=$2; shift ;;
    --rounds) ROUNDS=$2; shift ;;
    --tokens) NTOKENS=$2; shift ;;
    --mem-tokens) MEMTOKENS=$2; shift ;;
    *) echo "usage: $0 [--quick] [--duration S] [--rounds N] [--tokens N] [--mem-tokens N]" >&2; exit 2 ;;
  esac
  shift
done

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
for tool in wrk nginx taskset; do
  command -v "$tool" >/dev/null || { echo "load.sh needs $tool (apt-get install wrk nginx-light util-linux)" >&2; exit 2; }
done
NCPU=$(nproc)
if [ "$NCPU" -ge 2 ]; then PROXY_CPU=0; LOAD_CPU=1; else PROXY_CPU=0; LOAD_CPU=0; fi

BIN=${JWTGATE_BIN:-}
if [ -z "$BIN" ]; then
  (cd "$ROOT" && cargo build --release --quiet)
  BIN="$ROOT/target/release/jwtgate"
fi
# The constant-rate generator for the latency rows (examples/pace.rs).
PACE=${PACE_BIN:-}
if [ -z "$PACE" ]; then
  (cd "$ROOT" && cargo build --release --quiet --example pace)
  PACE="$ROOT/target/release/examples/pace"
fi

WORK=$(mktemp -d /tmp/jwtgate-load.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

# shellcheck source=benches/common.sh
. "$HERE/common.sh"
P_UP=$(free_port); P_NGX=$(free_port); P_GW=$(free_port); P_ADM=$(free_port); P_ISS=$(free_port)
P_GW2=$(free_port); P_ADM2=$(free_port); P_DEC=$(free_port); P_DEC2=$(free_port); P_STATIC=$(free_port)

# --- upstream and nginx baseline -------------------------------------------------------
nginx_conf upstream "$P_UP" 'location / { return 200 "ok\n"; }'
nginx_conf passthrough "$P_NGX" 'location / { proxy_pass http://api; proxy_http_version 1.1; proxy_set_header Connection ""; }'
taskset -c "$LOAD_CPU" nginx -c "$WORK/upstream/nginx.conf" -e "$WORK/upstream/error.log" & PIDS+=($!)
taskset -c "$PROXY_CPU" nginx -c "$WORK/passthrough/nginx.conf" -e "$WORK/passthrough/error.log" & PIDS+=($!)
# The floor for any HTTP answer, beside the decision listener: nginx answering 200 itself.
nginx_conf static "$P_STATIC" 'location / { return 200; }'
taskset -c "$PROXY_CPU" nginx -c "$WORK/static/nginx.conf" -e "$WORK/static/error.log" & PIDS+=($!)
wait_http "http://127.0.0.1:$P_UP/" 200
wait_http "http://127.0.0.1:$P_NGX/" 200
wait_http "http://127.0.0.1:$P_STATIC/" 200
NGX_MASTER=$(cat "$WORK/passthrough/nginx.pid")
NGX_WORKER=$(pgrep -P "$NGX_MASTER" | head -1)
STATIC_WORKER=$(pgrep -P "$(cat "$WORK/static/nginx.pid")" | head -1)

# --- issuer, tokens, jwtgate -----------------------------------------------------------
echo "minting $((NTOKENS + MEMTOKENS)) RS256 tokens..."
ALL_TOKENS="$WORK/all-tokens.txt"
TOKENS="$WORK/tokens.txt"
taskset -c "$LOAD_CPU" "$BIN" dev-issuer --port "$P_ISS" --tokens "$((NTOKENS + MEMTOKENS))" --out "$ALL_TOKENS" > "$WORK/issuer.out" & PIDS+=($!)
for _ in $(seq 1 1200); do [ -s "$WORK/issuer.out" ] && break; sleep 0.1; done
DISCOVERY=$(head -1 "$WORK/issuer.out")
[ -n "$DISCOVERY" ] || { echo "the dev issuer did not start" >&2; exit 1; }
head -n "$NTOKENS" "$ALL_TOKENS" > "$TOKENS"

jwtgate_conf "$WORK/jwtgate.toml" "$P_GW" "$P_ADM" "$DISCOVERY" 200000 "$P_DEC"
taskset -c "$PROXY_CPU" "$BIN" serve --config "$WORK/jwtgate.toml" 2> "$WORK/jwtgate.log" & GW_PID=$!; PIDS+=($GW_PID)
wait_http "http://127.0.0.1:$P_ADM/readyz" 200
# The same gateway with the verified-token cache off: every request is a full RS256 check.
jwtgate_conf "$WORK/jwtgate-nocache.toml" "$P_GW2" "$P_ADM2" "$DISCOVERY" 0 "$P_DEC2"
taskset -c "$PROXY_CPU" "$BIN" serve --config "$WORK/jwtgate-nocache.toml" 2> "$WORK/jwtgate-nocache.log" & GW2_PID=$!; PIDS+=($GW2_PID)
wait_http "http://127.0.0.1:$P_ADM2/readyz" 200
RSS_IDLE=$(awk '/VmRSS/ {print $2}' /proc/$GW_PID/status)

# --- running scenarios -----------------------------------------------------------------
CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
RESULTS="$WORK/results.tsv"
: > "$RESULTS"
FAIL=0

# run NAME PID URL SCRIPT: wrk as fast as it goes.
run() {
  local name=$1 pid=$2 url=$3 script=$4
  local before after out
  before=$( [ "$pid" = "-" ] && echo 0 || cpu_ticks "$pid")
  out=$(LUA_DIR="$HERE/lua" TOKENS="$TOKENS" \
        taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -s "$HERE/lua/$script" "$url")
  after=$( [ "$pid" = "-" ] && echo 0 || cpu_ticks "$pid")
  local reqs rps p50 p99 bad non2xx
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  bad=$(echo "$out" | awk '/UNEXPECTED_STATUS/ {print $2}')
  non2xx=$(echo "$out" | awk '/Non-2xx/ {print $5}')
  local errs
  errs=$(echo "$out" | awk '/Socket errors/ {print}' )
  local cpu_us="-"
  if [ "$pid" != "-" ] && [ "${reqs:-0}" -gt 0 ]; then
    cpu_us=$(awk -v d=$((after - before)) -v t="$CLK_TCK" -v n="$reqs" 'BEGIN {printf "%.1f", d / t * 1e6 / n}')
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$rps" "$p50" "$p99" "${bad:-?}" "$cpu_us" "$reqs" >> "$RESULTS"
  if [ "${bad:-1}" != "0" ] || [ -n "$non2xx" ] || [ -n "$errs" ]; then
    echo "FAIL: $name: ${bad:-?} unexpected statuses ${non2xx:+($non2xx non-2xx)} $errs" >&2
    FAIL=1
  fi
}

# run_paced NAME PID URL: a constant rate with pace (open loop, latency from when each request
# was due), every request carrying the one-token scenario's token.
run_paced() {
  local name=$1 pid=$2 url=$3 before after out
  before=$( [ "$pid" = "-" ] && echo 0 || cpu_ticks "$pid")
  out=$(taskset -c "$LOAD_CPU" "$PACE" --url "$url" --rate "$RATE" --connections 8 --duration "$DURATION" \
        --header "Authorization: Bearer $(head -1 "$TOKENS")" --expect 200) || true
  after=$( [ "$pid" = "-" ] && echo 0 || cpu_ticks "$pid")
  local reqs rps p50 p99 bad errs cpu_us="-"
  reqs=$(echo "$out" | sed -n 's/.*requests=\([0-9]*\).*/\1/p')
  rps=$(echo "$out" | sed -n 's/.*achieved_rps=\([0-9]*\).*/\1/p')
  p50=$(echo "$out" | sed -n 's/.*p50_us=\([0-9]*\).*/\1us/p')
  p99=$(echo "$out" | sed -n 's/.*p99_us=\([0-9]*\).*/\1us/p')
  bad=$(echo "$out" | sed -n 's/.*unexpected=\([0-9]*\).*/\1/p')
  errs=$(echo "$out" | sed -n 's/.*errors=\([0-9]*\).*/\1/p')
  if [ "$pid" != "-" ] && [ "${reqs:-0}" -gt 0 ]; then
    cpu_us=$(awk -v d=$((after - before)) -v t="$CLK_TCK" -v n="$reqs" 'BEGIN {printf "%.1f", d / t * 1e6 / n}')
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "${rps:-0}" "${p50:-?}" "${p99:-?}" "${bad:-?}" "$cpu_us" "${reqs:-0}" >> "$RESULTS"
  if [ "${bad:-1}" != "0" ] || [ "${errs:-1}" != "0" ]; then
    echo "FAIL: $name: ${bad:-?} unexpected statuses, ${errs:-?} errors ($out)" >&2
    FAIL=1
  fi
}

# Prime the one-token scenarios (their first request is the only miss).
curl -s -o /dev/null -H "Authorization: Bearer $(head -1 "$TOKENS")" "http://127.0.0.1:$P_GW/api/x"
curl -s -o /dev/null -H "Authorization: Bearer $(head -1 "$TOKENS")" "http://127.0.0.1:$P_DEC/api/x"

# The baselines and the anonymous route get the very request the one-token scenario sends
# (token included, just not checked): the same bytes cross every proxy.
for r in $(seq 1 "$ROUNDS"); do
  echo "round $r/$ROUNDS"
  run direct_upstream - "http://127.0.0.1:$P_UP/api/x" one_token.lua
  run nginx_passthrough "$NGX_WORKER" "http://127.0.0.1:$P_NGX/api/x" one_token.lua
  run jwtgate_anonymous "$GW_PID" "http://127.0.0.1:$P_GW/anon/x" one_token.lua
  run jwtgate_one_token "$GW_PID" "http://127.0.0.1:$P_GW/api/x" one_token.lua
  run jwtgate_rotating_cached "$GW_PID" "http://127.0.0.1:$P_GW/api/x" rotating.lua
  run jwtgate_new_token_each "$GW2_PID" "http://127.0.0.1:$P_GW2/api/x" rotating.lua
  run nginx_static_200 "$STATIC_WORKER" "http://127.0.0.1:$P_STATIC/api/x" one_token.lua
  run decision_one_token "$GW_PID" "http://127.0.0.1:$P_DEC/api/x" one_token.lua
  run decision_new_token_each "$GW2_PID" "http://127.0.0.1:$P_DEC2/api/x" rotating.lua
  run_paced direct_upstream@${RATE}rps - "http://127.0.0.1:$P_UP/api/x"
  run_paced nginx_passthrough@${RATE}rps "$NGX_WORKER" "http://127.0.0.1:$P_NGX/api/x"
  run_paced jwtgate_one_token@${RATE}rps "$GW_PID" "http://127.0.0.1:$P_GW/api/x"
done

RSS_LOADED=$(awk '/VmRSS/ {print $2}' /proc/$GW_PID/status)

# --- report ----------------------------------------------------------------------------
echo
echo "machine: $(nproc) cores, $(awk -F: '/model name/ {print $2; exit}' /proc/cpuinfo | sed 's/^ //'); duration ${DURATION}s x $ROUNDS rounds, $CONNS connections"
printf '%-28s %10s %9s %9s %6s %9s\n' scenario "req/s" p50 p99 bad "cpu_us/req"
sort -s -t$'\t' -k1,1 "$RESULTS" | awk -F'\t' '{printf "%-28s %10s %9s %9s %6s %9s\n", $1, $2, $3, $4, $5, $6}'

# Medians per scenario and the ratios the targets are stated in.
python3 - "$RESULTS" <<'PY'
import sys, statistics, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    name, rps, p50, p99, bad, cpu, reqs = line.rstrip("\n").split("\t")
    def ms(x):
        if x.endswith("us"): return float(x[:-2]) / 1000
        if x.endswith("ms"): return float(x[:-2])
        if x.endswith("s"): return float(x[:-1]) * 1000
        return float("nan")
    rows[name].append((float(rps), ms(p50), ms(p99), float(cpu) if cpu != "-" else float("nan")))
med = {k: [statistics.median(c) for c in zip(*v)] for k, v in rows.items()}
print("\nmedians: " + ", ".join(f"{k} {v[0]:.0f} req/s {v[3]:.1f} cpu_us" for k, v in sorted(med.items())))
def get(k, i):
    return next((v[i] for n, v in med.items() if n == k), float("nan"))
ngx = get("nginx_passthrough", 3)
print(f"jwtgate one-token CPU/req vs nginx passthrough: {get('jwtgate_one_token', 3) / ngx:.2f}x  (target <= 1.00)")
print(f"jwtgate new-token-each CPU/req: {get('jwtgate_new_token_each', 3):.1f} us = {get('jwtgate_new_token_each', 3) / ngx:.2f}x nginx  (target <= 40 us, 0.5x the jwt-authorizer peer's ~78)")
print(f"jwtgate rotating tokens (cached) CPU/req vs nginx passthrough: {get('jwtgate_rotating_cached', 3) / ngx:.2f}x")
print(f"jwtgate one-token throughput vs its anonymous route: {get('jwtgate_one_token', 0) / get('jwtgate_anonymous', 0):.2f}x  (target >= 0.95)")
floor = get("nginx_static_200", 3)
print(f"decision listener, repeated token: {get('decision_one_token', 0):.0f} req/s, {get('decision_one_token', 3):.1f} cpu_us = {get('decision_one_token', 3) / floor:.2f}x nginx's static 200 ({floor:.1f} us)  (target <= 1.20)")
print(f"decision listener, new token each: {get('decision_new_token_each', 3):.1f} cpu_us; minus the static-200 floor: {get('decision_new_token_each', 3) - floor:.1f} us  (target <= one raw RS256 verify: cargo bench --bench decision -- rs256)")
d = next((v for n, v in med.items() if n.startswith("direct_upstream@")), None)
x = next((v for n, v in med.items() if n.startswith("nginx_passthrough@")), None)
g = next((v for n, v in med.items() if n.startswith("jwtgate_one_token@")), None)
if d and g:
    print(f"p99 at a constant rate: jwtgate {g[2]:.3f} ms - direct {d[2]:.3f} ms = {g[2] - d[2]:.3f} ms  (target <= 0.3)")
if d and x:
    print(f"  reference, any extra hop on this machine: nginx passthrough {x[2]:.3f} ms - direct {d[2]:.3f} ms = {x[2] - d[2]:.3f} ms")
if x and g:
    print(f"  jwtgate vs nginx passthrough at the same rate: p50 {g[1]:.3f} vs {x[1]:.3f} ms, p99 {g[2]:.3f} vs {x[2]:.3f} ms")
PY
echo "jwtgate RSS: idle ${RSS_IDLE} KiB, after the runs ${RSS_LOADED} KiB"

# --- memory with many distinct cached tokens ---------------------------------------------
if [ "$MEMTOKENS" -gt 0 ]; then
  MEM="$WORK/mem-tokens.txt"
  tail -n +"$((NTOKENS + 1))" "$ALL_TOKENS" > "$MEM"
  misses() { curl -s "http://127.0.0.1:$P_ADM/metrics" | awk '/^jwtgate_token_cache_total\{result="miss"\}/ {print $2}'; }
  m0=$(misses)
  echo "sending each of $(wc -l < "$MEM") more distinct tokens through jwtgate..."
  out=$(LUA_DIR="$HERE/lua" TOKENS="$MEM" TOKEN_OFFSET=0 SEQUENTIAL=1 CONNS=$CONNS \
        taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"$((MEMTOKENS / 4000 + 10))s" -s "$HERE/lua/rotating.lua" "http://127.0.0.1:$P_GW/api/x")
  m1=$(misses)
  bad=$(echo "$out" | awk '/UNEXPECTED_STATUS/ {print $2}')
  [ "${bad:-1}" = "0" ] || { echo "FAIL: memory run: $bad unexpected statuses" >&2; FAIL=1; }
  RSS_MEM=$(awk '/VmRSS/ {print $2}' /proc/$GW_PID/status)
  echo "jwtgate RSS after $((m1 - m0)) more cache misses (>= $MEMTOKENS distinct tokens cached, cache bound 200000): ${RSS_MEM} KiB = $((RSS_MEM / 1024)) MiB (target <= 64 MiB)"
fi

[ "$FAIL" = 0 ] || { echo "load test FAILED: unexpected statuses" >&2; exit 1; }
echo "load test passed: every response had the expected status"
