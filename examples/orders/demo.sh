#!/usr/bin/env bash
# The orders example end to end: one service, protected two ways, called by the SDK.
#   1. the service checks coupons itself (CouponMiddleware over LocalVerifier);
#   2. the same service behind nginx, which asks `coupon gateway` through auth_request.
# Each time examples/orders/client.py shows: allowed, denied (wider), replayed, throttled.
#
# Usage: examples/orders/demo.sh AUTHORITY_URL ADMIN_API_KEY [WORKDIR]
# Needs `coupon` and `python` from the project's .venv on PATH, and nginx for part 2
# (Debian: apt-get install nginx-light). Every process it starts is stopped on exit.
set -euo pipefail
authority=${1:?the Authority base URL, e.g. http://127.0.0.1:8700}
export COUPON_API_KEY=${2:?an admin API key (coupon up prints it; var/admin.key)}
work=${3:-$(mktemp -d)}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
mkdir -p "$work"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
say() { printf '\n\033[1m# %s\033[0m\n' "$*"; }
port() { python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_for() {  # URL: until it answers at all (any status)
  for _ in $(seq 100); do
    python -c 'import sys, httpx; httpx.get(sys.argv[1], timeout=0.5)' "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "FAIL: $1 did not answer" >&2; return 1
}

say "a verifier API key for the service and the gateway (reads the revocation feed)"
verifier=$(python - "$authority" <<'PY'
import sys, httpx, os
r = httpx.post(sys.argv[1] + "/v1/admin/api-keys", headers={"X-API-Key": os.environ["COUPON_API_KEY"]},
               json={"name": "orders-demo", "roles": ["verifier"]})
r.raise_for_status()
print(r.json()["api_key"])
PY
)
echo "created (role verifier)"

say "1. the service protects itself: CouponMiddleware + RateLimitMiddleware + IdempotencyMiddleware"
svc=$(port)
COUPON_SERVICE_API_KEY=$verifier python "$here/service.py" --port "$svc" --authority "$authority" \
  >"$work/service-protected.log" 2>&1 & pids+=($!)
wait_for "http://127.0.0.1:$svc/health"
python "$here/client.py" "http://127.0.0.1:$svc" --authority "$authority"

if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
  echo "SKIP: nginx is not installed (apt-get install nginx-light); part 2 needs it" >&2
  exit 0
fi
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)

say "2. the same service behind nginx; nginx asks coupon gateway (auth_request) first"
svc=$(port); gw=$(port); edge=$(port)
python "$here/service.py" --port "$svc" >"$work/service-edge.log" 2>&1 & pids+=($!)
sed -e "s#http://127.0.0.1:8700#$authority#" -e "s#127.0.0.1:9000#127.0.0.1:$svc#" \
  "$here/gateway.toml" >"$work/gateway.toml"
COUPON_GATEWAY_API_KEY=$verifier coupon gateway --config "$work/gateway.toml" --port "$gw" \
  >"$work/gateway.log" 2>&1 & pids+=($!)
sed -e "s/@LISTEN@/127.0.0.1:$edge/" -e "s/@GATEWAY@/127.0.0.1:$gw/" \
  -e "s/@UPSTREAM@/127.0.0.1:$svc/" "$root/deploy/nginx/coupon-edge.conf" >"$work/coupon-edge.conf"
mkdir -p "$work/nginx"
cat >"$work/nginx.conf" <<CONF
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 256; }
http {
    client_body_temp_path $work/nginx/body;
    proxy_temp_path $work/nginx/proxy;
    fastcgi_temp_path $work/nginx/fastcgi;
    uwsgi_temp_path $work/nginx/uwsgi;
    scgi_temp_path $work/nginx/scgi;
    include $work/coupon-edge.conf;
    access_log $work/nginx/access.log coupon_edge;
}
CONF
"$nginx_bin" -p "$work/nginx" -e "$work/nginx/error.log" -c "$work/nginx.conf" -g 'daemon off;' \
  >"$work/nginx.log" 2>&1 & pids+=($!)
wait_for "http://127.0.0.1:$gw/_coupon/healthz"
wait_for "http://127.0.0.1:$edge/health"
python "$here/client.py" "http://127.0.0.1:$edge" --authority "$authority"
say "done; logs in $work"
