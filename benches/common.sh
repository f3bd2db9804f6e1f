# Helpers shared by benches/load.sh and benches/instructions.sh (sourced, not run). They expect
# $WORK (a scratch directory) and $P_UP (the upstream's port) to be set by the caller.

# An unused loopback port.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_http URL STATUS: waits up to 30 s for URL to answer STATUS.
wait_http() {
  for _ in $(seq 1 600); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$1" || true)" = "$2" ] && return 0
    sleep 0.05
  done
  echo "timed out waiting for $1 to answer $2" >&2; exit 1
}

# nginx_conf NAME PORT SERVER_BODY [MAIN_LINE]: $WORK/NAME/nginx.conf, one worker, no logs,
# with an `api` upstream block (keepalive) pointing at $P_UP.
nginx_conf() {
  mkdir -p "$WORK/$1"
  cat > "$WORK/$1/nginx.conf" <<CONF
worker_processes 1;
daemon off;
${4:-}
pid $WORK/$1/nginx.pid;
error_log $WORK/$1/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/$1;
  proxy_temp_path $WORK/$1;
  fastcgi_temp_path $WORK/$1;
  uwsgi_temp_path $WORK/$1;
  scgi_temp_path $WORK/$1;
  keepalive_requests 1000000;
  upstream api { server 127.0.0.1:$P_UP; keepalive 64; }
  server {
    listen 127.0.0.1:$2;
    $3
  }
}
CONF
}

# jwtgate_conf FILE PORT ADMIN_PORT DISCOVERY_URL CACHE_ENTRIES [DECISION_PORT]: one worker
# thread, the dev issuer's RS256 tokens, an anonymous route /anon and a validated route /api
# (orders:read); with DECISION_PORT, a decision listener there too.
jwtgate_conf() {
  cat > "$1" <<CONF
[server]
listen = "127.0.0.1:$2"
admin_listen = "127.0.0.1:$3"
token_cache_entries = $5
log_level = "warn"
worker_threads = 1
[upstream]
url = "http://127.0.0.1:$P_UP"
[[issuers]]
name = "bench"
discovery_url = "$4"
audiences = ["jwtgate-dev-client"]
algorithms = ["RS256"]
[[routes]]
name = "anon"
path_prefix = "/anon"
auth = "anonymous"
[[routes]]
name = "api"
path_prefix = "/api"
scopes = ["orders:read"]
CONF
  if [ -n "${6:-}" ]; then
    printf '[decision]\nlisten = "127.0.0.1:%s"\n' "$6" >> "$1"
  fi
}
