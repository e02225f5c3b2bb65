# Shared by scripts/test-env.sh and scripts/cluster.sh (sourced, not run). The caller defines
# say() and die(); everything here reports through them.

is_root_debian() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && [ -f /etc/debian_version ]; }

apt_install() { # apt_install <log> <debian package...>
  local log=$1; shift
  is_root_debian || die "missing components: $* (install these Debian packages, or run as root on Debian)"
  say "installing $*"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >"$log" 2>&1 || die "apt-get update failed (see $log)"
  apt-get install -y -q --no-install-recommends "$@" >>"$log" 2>&1 || die "apt-get install $* failed (see $log)"
}

wait_for() { # wait_for <what> <seconds> <command...>: tries every 0.25 s until the time is up
  local what=$1 secs=$2 end=$((SECONDS + $2)); shift 2
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$end" ] || die "$what did not come up within ${secs}s"
    sleep 0.25
  done
}

json_args() { local out="" a; for a in "$@"; do out+="${out:+, }\"$a\""; done; printf '[%s]' "$out"; }

# Consul 1.8.7 is packaged for Debian bullseye only: fetch it into a private apt directory under
# <state> (once), record its path in <state>/consul-path and set CONSUL.
find_consul() { # find_consul <state>
  local state=$1
  CONSUL="$(command -v consul || true)"
  if [ -z "$CONSUL" ]; then
    CONSUL="$state/consul/usr/bin/consul"
    if [ ! -x "$CONSUL" ]; then
      is_root_debian || die "missing component: consul (install Consul, or run as root on Debian)"
      say "fetching consul from Debian bullseye"
      local apt="$state/apt-bullseye"
      mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/dl"
      echo "deb http://deb.debian.org/debian bullseye main" >"$apt/sources.list"
      local opts=(-o "Dir::Etc::SourceList=$apt/sources.list" -o Dir::Etc::SourceParts=/dev/null -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache" -o APT::Sandbox::User=root)
      apt-get "${opts[@]}" update -q >"$apt/log" 2>&1 || die "consul: apt-get update of the bullseye list failed (see $apt/log)"
      (cd "$apt/dl" && apt-get "${opts[@]}" download consul >>"$apt/log" 2>&1) || die "consul: download failed (see $apt/log)"
      dpkg -x "$apt"/dl/consul_*.deb "$state/consul" || die "consul: unpacking failed"
    fi
  fi
  echo "$CONSUL" >"$state/consul-path"
}

# A second dockerd must never hand out a host port that another engine (or the kernel, for a
# test's own sockets) also hands out. dockerd takes its range for published ports from the file the
# kernel's ephemeral range is in, so the wrapper written here mounts a file of its own over it, in a
# mount namespace of its own, and execs dockerd there (its pid stays the wrapper's).
write_dockerd_wrapper() { # write_dockerd_wrapper <dir> <first port> <last port>; the wrapper is <dir>/dockerd
  cat >"$1/dockerd" <<SH
#!/bin/sh
range="\$(dirname "\$0")/port-range"
printf '$2\t$3\n' >"\$range"
exec unshare -m --propagation private sh -c 'mount --bind "\$0" /proc/sys/net/ipv4/ip_local_port_range && exec dockerd "\$@"' "\$range" "\$@"
SH
  chmod +x "$1/dockerd"
}

make_busybox_rootfs() { # make_busybox_rootfs <dir>
  mkdir -p "$1"/{bin,www,tmp,etc}
  local bb; bb="$(command -v busybox)"; [ -x /bin/busybox ] && bb=/bin/busybox
  cp "$bb" "$1/bin/busybox"
  for a in $("$1/bin/busybox" --list); do [ "$a" = busybox ] || ln -sf busybox "$1/bin/$a"; done
  echo "root:x:0:0:root:/:/bin/sh" >"$1/etc/passwd"
}

TEST_IMAGE=hm-test:2
FAST_IMAGE=hm-fast:1
FAST_SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/test/fixtures/fastapp.c"

# The test image: a root filesystem of busybox-static, imported without any registry.
build_test_image() { # build_test_image <docker host>
  local engine=$1 rootfs
  DOCKER_HOST="$engine" docker image inspect "$TEST_IMAGE" >/dev/null 2>&1 && return 0
  say "building $TEST_IMAGE from busybox-static ($engine)"
  rootfs="$(mktemp -d)"
  make_busybox_rootfs "$rootfs"
  cat >"$rootfs/bin/serve" <<'SH'
#!/bin/sh
# Serves its identity on $PORT (default 80); exits on TERM after $STOP_DELAY seconds.
echo "${NAME:-$(hostname)}" >/www/index.html
httpd -f -p "${PORT:-80}" -h /www &
pid=$!
trap 'sleep "${STOP_DELAY:-0}"; kill $pid; exit 0' TERM INT
wait $pid
SH
  chmod +x "$rootfs/bin/serve"
  tar -C "$rootfs" -c . | DOCKER_HOST="$engine" docker import -c 'CMD ["/bin/serve"]' - "$TEST_IMAGE" >/dev/null || die "docker import of the test image failed ($engine)"
  rm -rf "$rootfs"
}

fast_image_current() { # fast_image_current <docker host>: the image carries the source's hash
  [ "$(DOCKER_HOST="$1" docker image inspect -f '{{index .Config.Labels "hm.source-sha256"}}' "$FAST_IMAGE" 2>/dev/null)" = "$(sha256sum "$FAST_SRC" | cut -d' ' -f1)" ]
}

# The fast test app (test/fixtures/fastapp.c, static) on the same busybox root filesystem. An
# edited fastapp.c rebuilds it, an unchanged one never does.
build_fast_image() { # build_fast_image <docker host> <apt log>
  local engine=$1 sum rootfs
  fast_image_current "$engine" && return 0
  sum="$(sha256sum "$FAST_SRC" | cut -d' ' -f1)"
  say "building $FAST_IMAGE from busybox-static and $FAST_SRC ($engine)"
  static_cc() { echo 'int main(void){return 0;}' | gcc -static -pthread -x c - -o /dev/null >/dev/null 2>&1; }
  if ! command -v gcc >/dev/null || ! static_cc; then
    apt_install "$2" gcc libc6-dev
    static_cc || die "gcc cannot link a static program after installing gcc libc6-dev"
  fi
  rootfs="$(mktemp -d)"
  make_busybox_rootfs "$rootfs"
  gcc -O2 -static -pthread -Wall -o "$rootfs/bin/fastapp" "$FAST_SRC" || die "compiling $FAST_SRC failed"
  tar -C "$rootfs" -c . | DOCKER_HOST="$engine" docker import -c 'CMD ["/bin/fastapp"]' -c "LABEL hm.source-sha256=$sum" - "$FAST_IMAGE" >/dev/null || die "docker import of $FAST_IMAGE failed ($engine)"
  rm -rf "$rootfs"
}
