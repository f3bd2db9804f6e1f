#!/usr/bin/env bash
# User-space instructions per proxied request, for jwtgate and for nginx's plain reverse proxy,
# counted by valgrind's callgrind. Unlike CPU time on a shared VM these counts repeat to within
# a percent or two between runs, so they show what a code change bought. Kernel work (about
# 60% of a hop on loopback, mostly the same for both) is not counted. Cases: nginx's hop, an
# anonymous route, a validated route with the token cached, and the same with the cache off
# (every request verified: the path new tokens take).
#
#   benches/instructions.sh              # 5 s of load per case
#   benches/instructions.sh --keep       # also keep the callgrind.out files (for callgrind_annotate)
#
# Needs valgrind, wrk, nginx (apt-get install valgrind wrk nginx-light). Loopback only; it
# starts and kills only its own processes. Not run by CI.
set -euo pipefail

KEEP=0; SECONDS_PER_CASE=5
while [ $# -gt 0 ]; do
  case "$1" in
    --keep) KEEP=1 ;;
    --seconds) SECONDS_PER_CASE=$2; shift ;;
    *) echo "usage: $0 [--keep] [--seconds N]" >&2; exit 2 ;;
  esac
  shift
done
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
for tool in valgrind callgrind_control callgrind_annotate wrk nginx; do
  command -v "$tool" >/dev/null || { echo "instructions.sh needs $tool (apt-get install valgrind wrk nginx-light)" >&2; exit 2; }
done
BIN=${JWTGATE_BIN:-}
if [ -z "$BIN" ]; then
  (cd "$ROOT" && cargo build --release --quiet)
  BIN="$ROOT/target/release/jwtgate"
fi
WORK=$(mktemp -d /tmp/jwtgate-instr.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "$KEEP" = 1 ]; then echo "callgrind files kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT INT TERM
# shellcheck source=benches/common.sh
. "$HERE/common.sh"
P_UP=$(free_port); P_NGX=$(free_port); P_ISS=$(free_port); P_GW=$(free_port); P_ADM=$(free_port)
nginx_conf upstream "$P_UP" 'location / { return 200 "ok\n"; }'
nginx -c "$WORK/upstream/nginx.conf" -e "$WORK/upstream/error.log" & PIDS+=($!)
wait_http "http://127.0.0.1:$P_UP/" 200

"$BIN" dev-issuer --port "$P_ISS" --tokens 1 --out "$WORK/tokens.txt" > "$WORK/issuer.out" & PIDS+=($!)
for _ in $(seq 1 300); do [ -s "$WORK/issuer.out" ] && break; sleep 0.1; done
DISCOVERY=$(head -1 "$WORK/issuer.out")
TOKEN=$(head -1 "$WORK/tokens.txt")
cat > "$WORK/token.lua" <<LUA
wrk.headers["Authorization"] = "Bearer $TOKEN"
LUA

# measure LABEL PID URL: instrumentation on, SECONDS_PER_CASE of wrk, dump, Ir / requests.
measure() {
  local label=$1 pid=$2 url=$3 out reqs file ir
  taskset -c 1 wrk -t1 -c8 -d2s -s "$WORK/token.lua" "$url" > /dev/null   # warm up uninstrumented
  callgrind_control -z "$pid" > /dev/null 2>&1
  callgrind_control -i on "$pid" > /dev/null 2>&1
  out=$(taskset -c 1 wrk -t1 -c8 -d"${SECONDS_PER_CASE}s" -s "$WORK/token.lua" "$url")
  callgrind_control -i off "$pid" > /dev/null 2>&1
  callgrind_control -d "$label" "$pid" > /dev/null 2>&1
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  sleep 0.5
  file=$(ls -t "$WORK"/callgrind.out.* | head -1)
  ir=$(callgrind_annotate "$file" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
  awk -v l="$label" -v n="$reqs" -v ir="$ir" 'BEGIN {printf "%-22s %8d requests %8.0f instructions/request\n", l, n, ir / n}'
}

cd "$WORK"
nginx_conf passthrough "$P_NGX" 'location / { proxy_pass http://api; proxy_http_version 1.1; proxy_set_header Connection ""; }' 'master_process off;'
taskset -c 0 valgrind --tool=callgrind --instr-atstart=no nginx -c "$WORK/passthrough/nginx.conf" -e "$WORK/passthrough/error.log" 2> "$WORK/vg-nginx.log" & NGX=$!; PIDS+=($NGX)
wait_http "http://127.0.0.1:$P_NGX/" 200

jwtgate_conf "$WORK/jwtgate.toml" "$P_GW" "$P_ADM" "$DISCOVERY" 10000
taskset -c 0 valgrind --tool=callgrind --instr-atstart=no "$BIN" serve --config "$WORK/jwtgate.toml" 2> "$WORK/vg-jwtgate.log" & GW=$!; PIDS+=($GW)
wait_http "http://127.0.0.1:$P_ADM/readyz" 200

# The same gateway with the verified-token cache off: every request pays the whole check
# (signature included), the path a flood of new tokens takes.
P_GW0=$(free_port); P_ADM0=$(free_port)
jwtgate_conf "$WORK/jwtgate-nocache.toml" "$P_GW0" "$P_ADM0" "$DISCOVERY" 0
taskset -c 0 valgrind --tool=callgrind --instr-atstart=no "$BIN" serve --config "$WORK/jwtgate-nocache.toml" 2> "$WORK/vg-jwtgate-nocache.log" & GW0=$!; PIDS+=($GW0)
wait_http "http://127.0.0.1:$P_ADM0/readyz" 200

echo "user-space instructions per request (same token-bearing request for every case):"
measure nginx_passthrough "$NGX" "http://127.0.0.1:$P_NGX/api/x"
measure jwtgate_anonymous "$GW" "http://127.0.0.1:$P_GW/anon/x"
measure jwtgate_one_token "$GW" "http://127.0.0.1:$P_GW/api/x"
measure jwtgate_cache_off "$GW0" "http://127.0.0.1:$P_GW0/api/x"
