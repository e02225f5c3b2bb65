#!/usr/bin/env bash
# Brings up what the integration tests need, on loopback: two Docker engines (dockerd --ip
# 127.0.0.1), a Consul dev agent, etcd with the v2 API, the nginx/HAProxy/dig/wrk binaries and
# the local test image (built from busybox-static, no registry pull). Whatever already answers
# is used as it is. As root on Debian, missing packages are installed with apt; elsewhere the
# script names what is missing and fails.
set -euo pipefail

STATE="${HM_TEST_STATE:-/tmp/harbormaster-test}"
mkdir -p "$STATE"
PKGS=(docker.io docker-compose etcd-server nginx-light haproxy bind9-dnsutils busybox-static wrk iproute2 dnsperf)
# binary that proves each package is there
declare -A BIN=([docker.io]=dockerd [docker-compose]=docker-compose [etcd-server]=etcd [nginx-light]=nginx [haproxy]=haproxy [bind9-dnsutils]=dig [busybox-static]=busybox [wrk]=wrk [iproute2]=ip [dnsperf]=dnsperf)
export PATH="$PATH:/usr/sbin:/sbin"

say() { printf 'test-env: %s\n' "$*" >&2; }
die() { say "FAILED: $*"; exit 1; }
# shellcheck source=lib/common.sh
. "$(dirname "$0")/lib/common.sh"

missing=()
for p in "${PKGS[@]}"; do command -v "${BIN[$p]}" >/dev/null || missing+=("$p"); done
# busybox must be the static build: it is copied into the test image as its only binary
if command -v busybox >/dev/null && ldd "$(command -v busybox)" >/dev/null 2>&1; then
  [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1 || missing+=(busybox-static)
fi
if [ ${#missing[@]} -gt 0 ]; then
  apt_install "$STATE/apt.log" "${missing[@]}"
  # the Debian services are started below by hand, on loopback; do not leave the packaged ones running
  for s in nginx haproxy etcd; do command -v systemctl >/dev/null && systemctl stop "$s" >/dev/null 2>&1 || true; done
fi

find_consul "$STATE"

# Two Docker engines, so that two lanes of integration tests can run at once without one lane's
# registrators seeing the other's containers (or a dockerd restart in one lane hitting the other):
# "a" is the host's default engine; "b" has its own socket, data and exec roots, pid file and
# bridge, and no iptables rules (published ports go through docker-proxy on 127.0.0.1).
# Each engine's command line is recorded in $STATE/dockerds.json for tests that restart it.
DOCKER_B="$STATE/docker-b"
mkdir -p "$DOCKER_B"
DOCKER_B_SOCK="$DOCKER_B/docker.sock"
BRIDGE_B=hmbr1
DOCKERD_A=(dockerd --ip 127.0.0.1)
# Engine "b" picks the host ports it publishes from 61000-64999 (it reads its range from the file the
# kernel's ephemeral range is in: a file mounted over it, in a mount namespace of its own), so that
# the two engines never hand out the same port, nor one the kernel gives a test's own sockets.
write_dockerd_wrapper "$DOCKER_B" 61000 64999
DOCKERD_B=("$DOCKER_B/dockerd" --host "unix://$DOCKER_B_SOCK" --data-root "$DOCKER_B/data" --exec-root "$DOCKER_B/exec"
  --pidfile "$DOCKER_B/docker.pid" --bridge "$BRIDGE_B" --ip 127.0.0.1 --iptables=false)
# No --default-address-pool on "b": a dockerd restarted with one deletes the host's docker0 (it
# takes the stale default bridge for its own), which is engine "a"'s bridge.

start_dockerd() { # start_dockerd <lane> <socket> <log> <command...>
  local lane=$1 sock=$2 log=$3; shift 3
  if DOCKER_HOST="unix://$sock" docker info >/dev/null 2>&1; then return 0; fi
  say "starting docker engine $lane: $*"
  setsid nohup "$@" >"$log" 2>&1 </dev/null &
  wait_for "dockerd ($lane, see $log)" 60 env DOCKER_HOST="unix://$sock" docker info
}

start_dockerd a /var/run/docker.sock "$STATE/dockerd.log" "${DOCKERD_A[@]}"
if ! ip link show "$BRIDGE_B" >/dev/null 2>&1; then
  ip link add "$BRIDGE_B" type bridge || die "cannot create the bridge $BRIDGE_B for the second docker engine"
  ip addr add 10.212.99.1/24 dev "$BRIDGE_B" || die "cannot address the bridge $BRIDGE_B"
fi
ip link set "$BRIDGE_B" up || die "cannot bring the bridge $BRIDGE_B up"
start_dockerd b "$DOCKER_B_SOCK" "$DOCKER_B/dockerd.log" "${DOCKERD_B[@]}"
cat >"$STATE/dockerds.json" <<JSON
{
  "a": { "socket": "/var/run/docker.sock", "pidfile": "/var/run/docker.pid", "log": "$STATE/dockerd.log", "args": $(json_args "${DOCKERD_A[@]}") },
  "b": { "socket": "$DOCKER_B_SOCK", "pidfile": "$DOCKER_B/docker.pid", "log": "$DOCKER_B/dockerd.log", "args": $(json_args "${DOCKERD_B[@]}") }
}
JSON
ENGINES=("unix:///var/run/docker.sock" "unix://$DOCKER_B_SOCK")

if ! curl -sf http://127.0.0.1:8500/v1/status/leader >/dev/null 2>&1; then
  say "starting consul dev agent on 127.0.0.1:8500"
  setsid nohup "$CONSUL" agent -dev -client 127.0.0.1 -bind 127.0.0.1 -hcl 'enable_local_script_checks = true' >"$STATE/consul.log" 2>&1 </dev/null &
  wait_for consul 30 sh -c 'curl -sf http://127.0.0.1:8500/v1/status/leader | grep -q 8300'
fi

if ! curl -sf http://127.0.0.1:2379/version >/dev/null 2>&1; then
  say "starting etcd on 127.0.0.1:2379 (v2 API enabled)"
  rm -rf "$STATE/etcd"
  setsid nohup etcd --name hm-test --data-dir "$STATE/etcd" --listen-client-urls http://127.0.0.1:2379 \
    --advertise-client-urls http://127.0.0.1:2379 --listen-peer-urls http://127.0.0.1:2380 \
    --initial-advertise-peer-urls http://127.0.0.1:2380 --initial-cluster hm-test=http://127.0.0.1:2380 \
    --enable-v2=true >"$STATE/etcd.log" 2>&1 </dev/null &
  wait_for etcd 30 curl -sf http://127.0.0.1:2379/health
fi
curl -sf http://127.0.0.1:2379/v2/keys >/dev/null || die "etcd on 127.0.0.1:2379 answers without the v2 API (start it with --enable-v2=true)"

for engine in "${ENGINES[@]}"; do
  build_test_image "$engine"
  build_fast_image "$engine" "$STATE/apt.log"
done
say "ready: docker engines ${ENGINES[*]}, consul 127.0.0.1:8500, etcd 127.0.0.1:2379, images $TEST_IMAGE $FAST_IMAGE"
