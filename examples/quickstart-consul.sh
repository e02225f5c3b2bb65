#!/usr/bin/env bash
# Register this host's containers in a local Consul dev agent and watch them come and go.
# Needs: dockerd (published ports on 127.0.0.1: `dockerd --ip 127.0.0.1`), consul, and `npm ci`.
set -euo pipefail
cd "$(dirname "$0")/.."

consul agent -dev -client 127.0.0.1 -bind 127.0.0.1 >/tmp/hm-example-consul.log 2>&1 &
CONSUL_PID=$!
node bin/harbormaster.js register --ttl 15 --log-format pretty consul://127.0.0.1:8500 &
HM_PID=$!
trap 'docker rm -f hm-example-web >/dev/null 2>&1 || true; kill $HM_PID $CONSUL_PID 2>/dev/null || true' EXIT
sleep 2

# Any image works; labels (or env) say how it is registered.
docker run -d --name hm-example-web -p 127.0.0.1::80 \
  -l SERVICE_NAME=web -l SERVICE_TAGS=blue,v1 -l SERVICE_CHECK_HTTP=/ -l SERVICE_CHECK_INTERVAL=2s \
  "${IMAGE:-hm-test:2}" >/dev/null
sleep 3
node bin/harbormaster.js services consul://127.0.0.1:8500

docker stop -t 2 hm-example-web >/dev/null   # withdrawn on the kill event, before it exits
node bin/harbormaster.js services consul://127.0.0.1:8500
