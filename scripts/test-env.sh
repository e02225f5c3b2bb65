#!/usr/bin/env bash
# Brings up what the integration tests need, on loopback: a Docker engine (dockerd --ip
# 127.0.0.1), a Consul dev agent, etcd with the v2 API, the nginx/HAProxy/dig/wrk binaries and
# the local test image (built from busybox-static, no registry pull). Whatever already answers
# is used as it is. As root on Debian, missing packages are installed with apt; elsewhere the
# script names what is missing and fails.
set -euo pipefail

STATE="${HM_TEST_STATE:-/tmp/harbormaster-test}"
mkdir -p "$STATE"
PKGS=(docker.io docker-compose etcd-server nginx-light haproxy bind9-dnsutils busybox-static wrk)
# binary that proves each package is there
declare -A BIN=([docker.io]=dockerd [docker-compose]=docker-compose [etcd-server]=etcd [nginx-light]=nginx [haproxy]=haproxy [bind9-dnsutils]=dig [busybox-static]=busybox [wrk]=wrk)
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

if ! docker info >/dev/null 2>&1; then
  say "starting dockerd --ip 127.0.0.1"
  setsid nohup dockerd --ip 127.0.0.1 >"$STATE/dockerd.log" 2>&1 </dev/null &
  wait_for dockerd 60 docker info
fi

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
if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
  say "building $IMAGE from busybox-static"
  ROOTFS="$(mktemp -d)"
  mkdir -p "$ROOTFS"/{bin,www,tmp,etc}
  BB="$(command -v busybox)"; [ -x /bin/busybox ] && BB=/bin/busybox
  cp "$BB" "$ROOTFS/bin/busybox"
  for a in $("$ROOTFS/bin/busybox" --list); do [ "$a" = busybox ] || ln -sf busybox "$ROOTFS/bin/$a"; done
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
  echo "root:x:0:0:root:/:/bin/sh" >"$ROOTFS/etc/passwd"
  tar -C "$ROOTFS" -c . | docker import -c 'CMD ["/bin/serve"]' - "$IMAGE" >/dev/null || die "docker import of the test image failed"
  rm -rf "$ROOTFS"
fi

# The fast test app (test/fixtures/fastapp.c, static) on the same busybox root filesystem. The
# image carries the source's hash: an edited fastapp.c rebuilds it, an unchanged one never does.
FAST_IMAGE=hm-fast:1
FAST_SRC="$(cd "$(dirname "$0")/.." && pwd)/test/fixtures/fastapp.c"
FAST_SUM="$(sha256sum "$FAST_SRC" | cut -d' ' -f1)"
if [ "$(docker image inspect -f '{{index .Config.Labels "hm.source-sha256"}}' "$FAST_IMAGE" 2>/dev/null)" != "$FAST_SUM" ]; then
  say "building $FAST_IMAGE from busybox-static and $FAST_SRC"
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
  mkdir -p "$ROOTFS"/{bin,tmp,etc}
  BB="$(command -v busybox)"; [ -x /bin/busybox ] && BB=/bin/busybox
  cp "$BB" "$ROOTFS/bin/busybox"
  for a in $("$ROOTFS/bin/busybox" --list); do [ "$a" = busybox ] || ln -sf busybox "$ROOTFS/bin/$a"; done
  gcc -O2 -static -pthread -Wall -o "$ROOTFS/bin/fastapp" "$FAST_SRC" || die "compiling $FAST_SRC failed"
  echo "root:x:0:0:root:/:/bin/sh" >"$ROOTFS/etc/passwd"
  tar -C "$ROOTFS" -c . | docker import -c 'CMD ["/bin/fastapp"]' -c "LABEL hm.source-sha256=$FAST_SUM" - "$FAST_IMAGE" >/dev/null || die "docker import of $FAST_IMAGE failed"
  rm -rf "$ROOTFS"
fi
say "ready: docker, consul 127.0.0.1:8500, etcd 127.0.0.1:2379, images $IMAGE $FAST_IMAGE"
