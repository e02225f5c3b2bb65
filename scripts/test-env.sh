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
is_root_debian() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && [ -f /etc/debian_version ]; }

missing=()
for p in "${PKGS[@]}"; do command -v "${BIN[$p]}" >/dev/null || missing+=("$p"); done
# busybox must be the static build: it is copied into the test image as its only binary
if command -v busybox >/dev/null && ldd "$(command -v busybox)" >/dev/null 2>&1; then
  [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1 || missing+=(busybox-static)
fi
if [ ${#missing[@]} -gt 0 ]; then
  is_root_debian || die "missing components: ${missing[*]} (install these Debian packages, or run as root on Debian)"
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >"$STATE/apt.log" 2>&1 || die "apt-get update failed (see $STATE/apt.log)"
  apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$STATE/apt.log" 2>&1 || die "apt-get install ${missing[*]} failed (see $STATE/apt.log)"
  # the Debian services are started below by hand, on loopback; do not leave the packaged ones running
  for s in nginx haproxy etcd; do command -v systemctl >/dev/null && systemctl stop "$s" >/dev/null 2>&1 || true; done
fi

# Consul 1.8.7 is packaged for Debian bullseye only: fetch it into a private apt directory.
CONSUL="$(command -v consul || true)"
if [ -z "$CONSUL" ]; then
  CONSUL="$STATE/consul/usr/bin/consul"
  if [ ! -x "$CONSUL" ]; then
    is_root_debian || die "missing component: consul (install Consul, or run as root on Debian)"
    say "fetching consul from Debian bullseye"
    APT="$STATE/apt-bullseye"
    mkdir -p "$APT/lists/partial" "$APT/cache/archives/partial" "$APT/dl"
    echo "deb http://deb.debian.org/debian bullseye main" >"$APT/sources.list"
    opts=(-o "Dir::Etc::SourceList=$APT/sources.list" -o Dir::Etc::SourceParts=/dev/null -o "Dir::State::Lists=$APT/lists" -o "Dir::Cache=$APT/cache" -o APT::Sandbox::User=root)
    apt-get "${opts[@]}" update -q >"$APT/log" 2>&1 || die "consul: apt-get update of the bullseye list failed (see $APT/log)"
    (cd "$APT/dl" && apt-get "${opts[@]}" download consul >>"$APT/log" 2>&1) || die "consul: download failed (see $APT/log)"
    dpkg -x "$APT"/dl/consul_*.deb "$STATE/consul" || die "consul: unpacking failed"
  fi
fi
echo "$CONSUL" >"$STATE/consul-path"

wait_for() { # wait_for <what> <seconds> <command...>
  local what=$1 secs=$2; shift 2
  for _ in $(seq 1 $((secs * 4))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.25; done
  die "$what did not come up within ${secs}s"
}

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
cat >"$DOCKER_B/dockerd" <<'SH'
#!/bin/sh
range="$(dirname "$0")/port-range"
printf '61000\t64999\n' >"$range"
exec unshare -m --propagation private sh -c 'mount --bind "$0" /proc/sys/net/ipv4/ip_local_port_range && exec dockerd "$@"' "$range" "$@"
SH
chmod +x "$DOCKER_B/dockerd"
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
json_args() { local out="" a; for a in "$@"; do out+="${out:+, }\"$a\""; done; printf '[%s]' "$out"; }
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

# The test image: a root filesystem of busybox-static, imported without any registry.
IMAGE=hm-test:2
make_busybox_rootfs() { # make_busybox_rootfs <dir>
  mkdir -p "$1"/{bin,www,tmp,etc}
  local bb; bb="$(command -v busybox)"; [ -x /bin/busybox ] && bb=/bin/busybox
  cp "$bb" "$1/bin/busybox"
  for a in $("$1/bin/busybox" --list); do [ "$a" = busybox ] || ln -sf busybox "$1/bin/$a"; done
  echo "root:x:0:0:root:/:/bin/sh" >"$1/etc/passwd"
}
for engine in "${ENGINES[@]}"; do
  DOCKER_HOST="$engine" docker image inspect "$IMAGE" >/dev/null 2>&1 && continue
  say "building $IMAGE from busybox-static ($engine)"
  ROOTFS="$(mktemp -d)"
  make_busybox_rootfs "$ROOTFS"
  cat >"$ROOTFS/bin/serve" <<'SH'
#!/bin/sh
# Serves its identity on $PORT (default 80); exits on TERM after $STOP_DELAY seconds.
echo "${NAME:-$(hostname)}" >/www/index.html
httpd -f -p "${PORT:-80}" -h /www &
pid=$!
trap 'sleep "${STOP_DELAY:-0}"; kill $pid; exit 0' TERM INT
wait $pid
SH
  chmod +x "$ROOTFS/bin/serve"
  tar -C "$ROOTFS" -c . | DOCKER_HOST="$engine" docker import -c 'CMD ["/bin/serve"]' - "$IMAGE" >/dev/null || die "docker import of the test image failed ($engine)"
  rm -rf "$ROOTFS"
done

# The fast test app (test/fixtures/fastapp.c, static) on the same busybox root filesystem. The
# image carries the source's hash: an edited fastapp.c rebuilds it, an unchanged one never does.
FAST_IMAGE=hm-fast:1
FAST_SRC="$(cd "$(dirname "$0")/.." && pwd)/test/fixtures/fastapp.c"
FAST_SUM="$(sha256sum "$FAST_SRC" | cut -d' ' -f1)"
for engine in "${ENGINES[@]}"; do
  [ "$(DOCKER_HOST="$engine" docker image inspect -f '{{index .Config.Labels "hm.source-sha256"}}' "$FAST_IMAGE" 2>/dev/null)" = "$FAST_SUM" ] && continue
  say "building $FAST_IMAGE from busybox-static and $FAST_SRC ($engine)"
  static_cc() { echo 'int main(void){return 0;}' | gcc -static -pthread -x c - -o /dev/null >/dev/null 2>&1; }
  if ! command -v gcc >/dev/null || ! static_cc; then
    is_root_debian || die "missing components: gcc with a static C library (install the Debian packages gcc libc6-dev, or run as root on Debian)"
    say "installing gcc libc6-dev"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >"$STATE/apt.log" 2>&1 || die "apt-get update failed (see $STATE/apt.log)"
    apt-get install -y -q --no-install-recommends gcc libc6-dev >>"$STATE/apt.log" 2>&1 || die "apt-get install gcc libc6-dev failed (see $STATE/apt.log)"
    static_cc || die "gcc cannot link a static program after installing gcc libc6-dev"
  fi
  ROOTFS="$(mktemp -d)"
  make_busybox_rootfs "$ROOTFS"
  gcc -O2 -static -pthread -Wall -o "$ROOTFS/bin/fastapp" "$FAST_SRC" || die "compiling $FAST_SRC failed"
  tar -C "$ROOTFS" -c . | DOCKER_HOST="$engine" docker import -c 'CMD ["/bin/fastapp"]' -c "LABEL hm.source-sha256=$FAST_SUM" - "$FAST_IMAGE" >/dev/null || die "docker import of $FAST_IMAGE failed ($engine)"
  rm -rf "$ROOTFS"
done
say "ready: docker engines ${ENGINES[*]}, consul 127.0.0.1:8500, etcd 127.0.0.1:2379, images $IMAGE $FAST_IMAGE"
