#!/usr/bin/env bash
# Keep a private nginx on 127.0.0.1:8088 routing to what Consul holds, with the shipped template:
# rendered, checked with `nginx -t`, reloaded, and confirmed by a new worker generation.
# Needs: nginx, a Consul agent on 127.0.0.1:8500 (see quickstart-consul.sh), and `npm ci`.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="$(mktemp -d)"
export HM_NGINX_LISTEN=127.0.0.1:8088 HM_NGINX_PID="$DIR/nginx.pid" \
  HM_NGINX_ERROR_LOG="$DIR/error.log" HM_NGINX_ACCESS_LOG=off HM_NGINX_TEMP_DIR="$DIR"

# The first render writes the file; nginx starts on it; later changes reload it.
node bin/harbormaster.js render consul://127.0.0.1:8500 --once \
  --template "templates/nginx.conf.hbs:$DIR/nginx.conf" --check 'nginx -t -q -c {{src}}'
nginx -c "$DIR/nginx.conf"
trap 'nginx -c "$DIR/nginx.conf" -s quit; rm -rf "$DIR"' EXIT
node bin/harbormaster.js render consul://127.0.0.1:8500 --log-format pretty \
  --template "templates/nginx.conf.hbs:$DIR/nginx.conf:nginx -c $DIR/nginx.conf -s reload" \
  --check 'nginx -t -q -c {{src}}' --verify "nginx:$DIR/nginx.pid"
# then, from another terminal: curl -H 'Host: web.localhost' http://127.0.0.1:8088/
