#!/usr/bin/env bash
# Register into etcd v3 under /services and read the keys back with etcdctl.
# Each key is <prefix>/<service>/<id> holding the instance JSON, on a 15 s lease.
set -euo pipefail
cd "$(dirname "$0")/.."
node bin/harbormaster.js register --ttl 15 --log-format pretty etcd://127.0.0.1:2379/services &
HM_PID=$!
trap 'kill $HM_PID 2>/dev/null || true' EXIT
docker run -d --rm --name hm-example-api -p 127.0.0.1::80 -e SERVICE_NAME=api -e SERVICE_VERSION=2 "${IMAGE:-hm-test:2}" >/dev/null
sleep 2
ETCDCTL_API=3 etcdctl --endpoints 127.0.0.1:2379 get --prefix /services/
docker stop -t 1 hm-example-api >/dev/null
