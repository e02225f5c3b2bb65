#!/usr/bin/env bash
# A secured multi-host test cluster on loopback, for tests and for trying harbormaster by hand:
#   etcd 3.4     e1 e2 e3 on NET.1 NET.2 NET.3 (client 27379, peer 27380), TLS with client
#                certificates, auth on: user root, user harbormaster (readwrite on /harbormaster)
#   Consul 1.8   servers c1 c2 c3 on NET.1 NET.2 NET.3, client agents host1 on NET.11 and host2 on
#                NET.12 (server 27300, serf 27301/27302, https 27501, no http/dns/grpc), TLS both
#                ways, ACLs default deny with tokens for the agents, the registrator and the gateway
#   Docker       host 1 is the machine's default engine (publishes on 127.0.0.1); host 2 is a
#                dockerd of its own that publishes on NET.2
# NET is HM_CLUSTER_NET (default 127.0.0); the state (certificates, data, logs, pid files, env and
# cluster.json) is in HM_CLUSTER_STATE (default /tmp/harbormaster-cluster).
#
#   cluster.sh up       start what does not answer (reuses what does), wait until it all works,
#                       write $STATE/env (export lines) and $STATE/cluster.json
#   cluster.sh down     stop every member, remove host 2's bridge and the state
#   cluster.sh status   one line per member; exits 1 if any is down
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

say() { printf 'cluster: %s\n' "$*" >&2; }
die() { say "FAILED: $*"; exit 1; }
# shellcheck source=lib/common.sh
. "$(dirname "$0")/lib/common.sh"

STATE="${HM_CLUSTER_STATE:-/tmp/harbormaster-cluster}"
# The prefix a state dir was made for, unless given: `down` and `status` of a cluster made with
# HM_CLUSTER_NET must name its members and its bridge, not the default cluster's.
NET="${HM_CLUSTER_NET:-$(cat "$STATE/net" 2>/dev/null || echo 127.0.0)}"
if [[ ! $NET =~ ^127\.([0-9]{1,3})\.([0-9]{1,3})$ ]] || ((BASH_REMATCH[1] > 255 || BASH_REMATCH[2] > 255)); then
  die "HM_CLUSTER_NET=\"$NET\" is not a loopback prefix of three octets (127.X.Y)"
fi
OCT2=$((10#${BASH_REMATCH[1]})) OCT3=$((10#${BASH_REMATCH[2]}))
TEST_STATE="${HM_TEST_STATE:-/tmp/harbormaster-test}"
TLS="$STATE/tls"

ETCD_CLIENT_PORT=27379 ETCD_PEER_PORT=27380
CONSUL_SERVER_PORT=27300 CONSUL_LAN_PORT=27301 CONSUL_WAN_PORT=27302 CONSUL_HTTPS_PORT=27501
ETCD_MEMBERS=(e1 e2 e3)
CONSUL_SERVERS=(c1 c2 c3)
CONSUL_CLIENTS=(host1 host2)
declare -A ADDR=([e1]=$NET.1 [e2]=$NET.2 [e3]=$NET.3 [c1]=$NET.1 [c2]=$NET.2 [c3]=$NET.3 [host1]=$NET.11 [host2]=$NET.12)
# Host 2's engine: its own bridge and subnet, both derived from NET so that instances never share them.
BRIDGE="hmc-$OCT2-$OCT3"
BRIDGE_CIDR="10.$((213 + OCT2 % 40)).$OCT3.1/24"
DH2="$STATE/docker-h2"
DOCKER_HOST1="unix:///var/run/docker.sock"
DOCKER_HOST2="unix://$DH2/docker.sock"
# Host 2 publishes from 65000-65535: above the kernel's ephemeral range (32768-60999 here, so never
# a port a test's own socket holds) and above engine b's 61000-64999, so neither engine nor the
# kernel hands out the same port; host 2 binds NET.2 besides, where nothing else listens.
H2_PORTS=(65000 65535)

ETCD_EP="https://$NET.1:$ETCD_CLIENT_PORT,https://$NET.2:$ETCD_CLIENT_PORT,https://$NET.3:$ETCD_CLIENT_PORT"

# ---------------------------------------------------------------- helpers

# The pid in <pidfile>, if that process is alive and is one of this cluster's (its command line
# names the state dir: a pid reused by another process after a crash is not taken for a member).
pid_of() {
  local p; p="$(cat "$1" 2>/dev/null)" && [ -n "$p" ] && kill -0 "$p" 2>/dev/null &&
    tr '\0' '\n' <"/proc/$p/cmdline" 2>/dev/null | grep -qF "$STATE" && echo "$p"
}

start_bg() { # start_bg <pidfile|-> <log> <command...>: detached, in a session of its own
  local pidf=$1 log=$2; shift 2
  mkdir -p "$(dirname "$log")"
  printf '\n==== %s start: %s\n' "$(date -u +%FT%TZ)" "$*" >>"$log"
  setsid nohup "$@" >>"$log" 2>&1 </dev/null 9>&- &   # 9: the lock, not to be held by members
  [ "$pidf" = - ] || echo $! >"$pidf"
}

etcdctl_root() { etcdctl --endpoints "$ETCD_EP" --cacert "$TLS/ca.pem" --cert "$TLS/root.pem" --key "$TLS/root-key.pem" --dial-timeout 3s --command-timeout 5s "$@"; }

curl_tls() { curl -sS --max-time 5 --cacert "$TLS/ca.pem" --cert "$TLS/root.pem" --key "$TLS/root-key.pem" "$@"; }
consul_api() { # consul_api <method> <path> [body]: as the master token, on c1 (answers >= 400 fail)
  local args=(-X "$1" -H "X-Consul-Token: $MASTER_TOKEN" -f "https://${ADDR[c1]}:$CONSUL_HTTPS_PORT/v1$2")
  [ $# -lt 3 ] || args+=(--data-binary "$3")
  curl_tls "${args[@]}"
}

etcd_answers() { curl_tls -f "https://${ADDR[$1]}:$ETCD_CLIENT_PORT/version" >/dev/null 2>&1; }
consul_answers() { curl_tls -f "https://${ADDR[$1]}:$CONSUL_HTTPS_PORT/v1/status/leader" >/dev/null 2>&1; }
consul_has_leader() { curl_tls -f "https://${ADDR[c1]}:$CONSUL_HTTPS_PORT/v1/status/leader" | grep -q ":$CONSUL_SERVER_PORT"; }
docker_answers() { DOCKER_HOST="$DOCKER_HOST2" timeout 5 docker info >/dev/null 2>&1; }

# ---------------------------------------------------------------- members' command lines

declare -A CMD_ETCD CMD_CONSUL
etcd_cmd() { # etcd_cmd <name>: the member's command line, as one array in ETCD_ARGS
  local n=$1 a=${ADDR[$1]} i=${1#e} cluster="" m
  for m in "${ETCD_MEMBERS[@]}"; do cluster+="${cluster:+,}$m=https://${ADDR[$m]}:$ETCD_PEER_PORT"; done
  # Election timeout 2 s (heartbeat 200 ms) rather than 1 s: on a loaded 2-core machine the default
  # makes leaders flap; a failover still completes in a few seconds.
  ETCD_ARGS=(etcd --name "$n" --data-dir "$STATE/etcd/$n" --logger zap
    --listen-client-urls "https://$a:$ETCD_CLIENT_PORT" --advertise-client-urls "https://$a:$ETCD_CLIENT_PORT"
    --listen-peer-urls "https://$a:$ETCD_PEER_PORT" --initial-advertise-peer-urls "https://$a:$ETCD_PEER_PORT"
    --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token "hm-cluster-$NET"
    --cert-file "$TLS/node$i.pem" --key-file "$TLS/node$i-key.pem" --trusted-ca-file "$TLS/ca.pem" --client-cert-auth
    --peer-cert-file "$TLS/node$i.pem" --peer-key-file "$TLS/node$i-key.pem" --peer-trusted-ca-file "$TLS/ca.pem" --peer-client-cert-auth
    --heartbeat-interval 200 --election-timeout 2000)
}
consul_cmd() { CONSUL_ARGS=("$CONSUL" agent -config-file "$STATE/consul/$1.hcl"); }
dockerd_cmd() {
  DOCKERD_ARGS=("$DH2/dockerd" --host "$DOCKER_HOST2" --data-root "$DH2/data" --exec-root "$DH2/exec"
    --pidfile "$DH2/docker.pid" --bridge "$BRIDGE" --ip "$NET.2" --iptables=false)
}

# ---------------------------------------------------------------- up

need_binaries() {
  local missing=()
  command -v etcd >/dev/null || missing+=(etcd-server)
  command -v etcdctl >/dev/null || missing+=(etcd-client)
  command -v openssl >/dev/null || missing+=(openssl)
  command -v curl >/dev/null || missing+=(curl)
  [ ${#missing[@]} -eq 0 ] || apt_install "$STATE/apt.log" "${missing[@]}"
  for b in docker dockerd ip unshare; do command -v $b >/dev/null || die "missing $b (run scripts/test-env.sh first: it installs the Docker engines)"; done
  mkdir -p "$TEST_STATE"
  if [ -x "$(cat "$TEST_STATE/consul-path" 2>/dev/null)" ]; then CONSUL="$(cat "$TEST_STATE/consul-path")"; else find_consul "$TEST_STATE"; fi
}

# Secrets are made once per state dir and kept in it (mode 600), so that `up` is repeatable.
load_secrets() {
  local f="$STATE/secrets"
  if [ ! -s "$f" ]; then
    uuid() { cat /proc/sys/kernel/random/uuid; }
    umask 077
    cat >"$f.tmp" <<EOF
ETCD_ROOT_PASSWORD=$(openssl rand -hex 12)
ETCD_HM_PASSWORD=$(openssl rand -hex 12)
MASTER_TOKEN=$(uuid)
AGENT_TOKEN=$(uuid)
REGISTRATOR_TOKEN=$(uuid)
GATEWAY_TOKEN=$(uuid)
GOSSIP_KEY=$(openssl rand -base64 32)
EOF
    mv "$f.tmp" "$f"
    umask 022
  fi
  # shellcheck disable=SC1090
  . "$f"
}

cert() { # cert <file stem> <CN> [subjectAltName]
  local stem=$1 cn=$2 san=${3:-} ext
  ext="$(printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n')"
  [ -z "$san" ] || ext+=$'\n'"subjectAltName=$san"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$TLS/$stem-key.pem" 2>/dev/null
  openssl req -new -key "$TLS/$stem-key.pem" -subj "/CN=$cn" -out "$TLS/$stem.csr" 2>/dev/null
  openssl x509 -req -in "$TLS/$stem.csr" -CA "$TLS/ca.pem" -CAkey "$TLS/ca-key.pem" -CAcreateserial -days 3650 -sha256 \
    -extfile <(printf '%s\n' "$ext") -out "$TLS/$stem.pem" 2>/dev/null || die "openssl could not sign the certificate $stem"
  rm -f "$TLS/$stem.csr"
}

make_tls() {
  [ -f "$TLS/done" ] && return 0
  say "making the TLS material in $TLS"
  rm -rf "$TLS" && mkdir -p "$TLS"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$TLS/ca-key.pem" 2>/dev/null
  openssl req -x509 -new -key "$TLS/ca-key.pem" -sha256 -days 3650 -subj "/CN=harbormaster test cluster CA $NET" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" -out "$TLS/ca.pem" 2>/dev/null \
    || die "openssl could not make the CA"
  # One certificate per node, shared by its etcd member and Consul server (the name Consul's
  # verify_server_hostname checks is server.dc1.consul); client agents get client.dc1.consul.
  local i
  for i in 1 2 3; do cert "node$i" "node$i" "IP:$NET.$i,DNS:localhost,DNS:server.dc1.consul"; done
  cert host1 host1 "IP:${ADDR[host1]},DNS:localhost,DNS:client.dc1.consul"
  cert host2 host2 "IP:${ADDR[host2]},DNS:localhost,DNS:client.dc1.consul"
  cert client harbormaster   # etcd takes a certificate's CN as its user: this one is harbormaster's
  cert root root
  chmod 644 "$TLS"/*.pem
  touch "$TLS/done"
}

write_consul_config() { # write_consul_config <name> <server: true|false>
  local n=$1 a=${ADDR[$1]} server=$2 stem join="" m
  for m in "${CONSUL_SERVERS[@]}"; do join+="${join:+, }\"${ADDR[$m]}:$CONSUL_LAN_PORT\""; done
  if [ "$server" = true ]; then stem="node${n#c}"; else stem=$n; fi
  mkdir -p "$STATE/consul/$n"
  cat >"$STATE/consul/$n.hcl" <<EOF
datacenter = "dc1"
node_name = "$n"
data_dir = "$STATE/consul/$n"
server = $server
$([ "$server" = true ] && echo 'bootstrap_expect = 3')
bind_addr = "$a"
advertise_addr = "$a"
client_addr = "$a"
retry_join = [$join]
retry_interval = "1s"
ports { server = $CONSUL_SERVER_PORT, serf_lan = $CONSUL_LAN_PORT, serf_wan = $CONSUL_WAN_PORT, https = $CONSUL_HTTPS_PORT, http = -1, dns = -1, grpc = -1 }
encrypt = "$GOSSIP_KEY"
ca_file = "$TLS/ca.pem"
cert_file = "$TLS/$stem.pem"
key_file = "$TLS/$stem-key.pem"
verify_incoming = true
verify_outgoing = true
verify_server_hostname = true
performance { raft_multiplier = 2 }
disable_update_check = true
acl {
  enabled = true
  default_policy = "deny"
  # async-cache: an expired token is used while its refresh runs; extend-cache would hold every agent
  # API call (a heartbeat check pass too) for the RPC, up to rpc_hold_timeout (7 s) in an election.
  down_policy = "async-cache"
  tokens {
$([ "$server" = true ] && echo "    master = \"$MASTER_TOKEN\"")
    agent = "$AGENT_TOKEN"
  }
}
EOF
}

ensure_bridge() {
  ip link show "$BRIDGE" >/dev/null 2>&1 || ip link add "$BRIDGE" type bridge || die "cannot create the bridge $BRIDGE for host 2's docker engine"
  ip -4 addr show dev "$BRIDGE" | grep -q "inet $BRIDGE_CIDR" || ip addr add "$BRIDGE_CIDR" dev "$BRIDGE" || die "cannot address the bridge $BRIDGE"
  ip link set "$BRIDGE" up || die "cannot bring the bridge $BRIDGE up"
}

# Starts the members that neither answer nor are starting; leaves the rest as they are.
start_etcd() {
  local m
  for m in "${ETCD_MEMBERS[@]}"; do
    etcd_answers "$m" && continue
    pid_of "$STATE/etcd/$m.pid" >/dev/null && continue
    etcd_cmd "$m"
    start_bg "$STATE/etcd/$m.pid" "$STATE/etcd/$m.log" "${ETCD_ARGS[@]}"
  done
}
start_consul() { # start_consul <name...>
  local m
  for m in "$@"; do
    consul_answers "$m" && continue
    pid_of "$STATE/consul/$m.pid" >/dev/null && continue
    consul_cmd "$m"
    start_bg "$STATE/consul/$m.pid" "$STATE/consul/$m.log" "${CONSUL_ARGS[@]}"
  done
}
start_dockerd() {
  docker_answers && return 0
  pid_of "$DH2/docker.pid" >/dev/null && return 0
  ensure_bridge
  dockerd_cmd
  start_bg - "$DH2/dockerd.log" "${DOCKERD_ARGS[@]}"   # dockerd writes its own pid file
}

etcd_ready() { start_etcd; etcdctl_root endpoint health; }
consul_servers_ready() { start_consul "${CONSUL_SERVERS[@]}"; consul_has_leader; }
consul_client_ready() { start_consul "$1"; consul_answers "$1"; }
docker_ready() { start_dockerd; docker_answers; }

etcd_auth() {
  [ -f "$STATE/etcd/auth-enabled" ] && return 0
  say "etcd: users root and harbormaster, role harbormaster (readwrite /harbormaster), auth enable"
  local log="$STATE/etcd/auth.log"
  {
    etcdctl_root user get root >/dev/null 2>&1 || etcdctl_root user add root --new-user-password "$ETCD_ROOT_PASSWORD" --interactive=false
    etcdctl_root role get root >/dev/null 2>&1 || etcdctl_root role add root
    etcdctl_root user grant-role root root
    etcdctl_root user get harbormaster >/dev/null 2>&1 || etcdctl_root user add harbormaster --new-user-password "$ETCD_HM_PASSWORD" --interactive=false
    etcdctl_root role get harbormaster >/dev/null 2>&1 || etcdctl_root role add harbormaster
    etcdctl_root role grant-permission harbormaster --prefix=true readwrite /harbormaster
    etcdctl_root user grant-role harbormaster harbormaster
    etcdctl_root auth enable
  } >>"$log" 2>&1 || die "etcd: setting up users and auth failed (see $log)"
  touch "$STATE/etcd/auth-enabled"
}

consul_acl() { # policies and tokens, with the secrets chosen beforehand (Consul takes a SecretID on create)
  local name rules desc token
  for name in agent registrator gateway; do
    case $name in
      agent) rules='node_prefix \"\" { policy = \"write\" } service_prefix \"\" { policy = \"read\" }' token=$AGENT_TOKEN
        desc='Consul agents: their own node' ;;
      # Service names come from containers' labels, so no narrower service rule can be written.
      registrator) rules='service_prefix \"\" { policy = \"write\" } node_prefix \"\" { policy = \"read\" }' token=$REGISTRATOR_TOKEN
        desc='harbormaster register: services and their checks on its agent' ;;
      gateway) rules='service_prefix \"\" { policy = \"read\" } node_prefix \"\" { policy = \"read\" }' token=$GATEWAY_TOKEN
        desc='harbormaster proxy/render/services: reads the catalog' ;;
    esac
    consul_api GET "/acl/policy/name/$name" >/dev/null 2>&1 ||
      consul_api PUT /acl/policy "{\"Name\": \"$name\", \"Rules\": \"$rules\"}" >/dev/null ||
      die "consul: creating the ACL policy $name failed"
    curl_tls -f -H "X-Consul-Token: $token" "https://${ADDR[c1]}:$CONSUL_HTTPS_PORT/v1/acl/token/self" >/dev/null 2>&1 ||
      consul_api PUT /acl/token "{\"SecretID\": \"$token\", \"Description\": \"$desc\", \"Policies\": [{\"Name\": \"$name\"}]}" >/dev/null ||
      die "consul: creating the ACL token for $name failed"
  done
}

consul_node_known() { consul_api GET "/catalog/node/$1" 2>/dev/null | grep -q "\"Address\": *\"${ADDR[$1]}\""; }

load_images() {
  local want=() img
  DOCKER_HOST="$DOCKER_HOST2" docker image inspect "$TEST_IMAGE" >/dev/null 2>&1 || want+=("$TEST_IMAGE")
  fast_image_current "$DOCKER_HOST2" || want+=("$FAST_IMAGE")
  [ ${#want[@]} -gt 0 ] || return 0
  # Copying host 1's images is quicker than building them (no compiler run); build what it lacks.
  local have=()
  for img in "${want[@]}"; do
    if [ "$img" = "$FAST_IMAGE" ]; then fast_image_current "$DOCKER_HOST1" && have+=("$img")
    else DOCKER_HOST="$DOCKER_HOST1" docker image inspect "$img" >/dev/null 2>&1 && have+=("$img"); fi
  done
  if [ ${#have[@]} -gt 0 ]; then
    say "copying ${have[*]} from host 1's engine to host 2's"
    DOCKER_HOST="$DOCKER_HOST1" docker save "${have[@]}" | DOCKER_HOST="$DOCKER_HOST2" docker load >/dev/null ||
      die "copying ${have[*]} to host 2's engine failed"
  fi
  build_test_image "$DOCKER_HOST2"
  build_fast_image "$DOCKER_HOST2" "$STATE/apt.log"
}

write_outputs() {
  local keys=(HM_CLUSTER_STATE HM_CLUSTER_NET HM_CLUSTER_ETCD HM_CLUSTER_ETCD_ENDPOINTS
    ETCDCTL_CACERT ETCDCTL_CERT ETCDCTL_KEY ETCDCTL_USER HM_CLUSTER_ETCD_ROOT_USER HM_CLUSTER_ETCD_ROOT_CERT HM_CLUSTER_ETCD_ROOT_KEY
    HM_CLUSTER_CONSUL_HOST1 HM_CLUSTER_CONSUL_HOST2 HM_CLUSTER_CONSUL_SERVERS CONSUL_CACERT CONSUL_CLIENT_CERT CONSUL_CLIENT_KEY
    HM_CLUSTER_CONSUL_MASTER_TOKEN HM_CLUSTER_CONSUL_AGENT_TOKEN HM_CLUSTER_CONSUL_REGISTRATOR_TOKEN HM_CLUSTER_CONSUL_GATEWAY_TOKEN
    HM_CLUSTER_DOCKER_HOST1 HM_CLUSTER_DOCKER_HOST2 HM_CLUSTER_HOST1_IP HM_CLUSTER_HOST2_IP)
  local servers="" m
  for m in "${CONSUL_SERVERS[@]}"; do servers+="${servers:+,}consul-tls://${ADDR[$m]}:$CONSUL_HTTPS_PORT"; done
  declare -A V=(
    [HM_CLUSTER_STATE]=$STATE [HM_CLUSTER_NET]=$NET
    [HM_CLUSTER_ETCD]="etcd-tls://$NET.1:$ETCD_CLIENT_PORT,$NET.2:$ETCD_CLIENT_PORT,$NET.3:$ETCD_CLIENT_PORT/harbormaster"
    [HM_CLUSTER_ETCD_ENDPOINTS]=$ETCD_EP
    [ETCDCTL_CACERT]=$TLS/ca.pem [ETCDCTL_CERT]=$TLS/client.pem [ETCDCTL_KEY]=$TLS/client-key.pem
    [ETCDCTL_USER]="harbormaster:$ETCD_HM_PASSWORD" [HM_CLUSTER_ETCD_ROOT_USER]="root:$ETCD_ROOT_PASSWORD"
    [HM_CLUSTER_ETCD_ROOT_CERT]=$TLS/root.pem [HM_CLUSTER_ETCD_ROOT_KEY]=$TLS/root-key.pem
    [HM_CLUSTER_CONSUL_HOST1]="consul-tls://${ADDR[host1]}:$CONSUL_HTTPS_PORT"
    [HM_CLUSTER_CONSUL_HOST2]="consul-tls://${ADDR[host2]}:$CONSUL_HTTPS_PORT"
    [HM_CLUSTER_CONSUL_SERVERS]=$servers
    [CONSUL_CACERT]=$TLS/ca.pem [CONSUL_CLIENT_CERT]=$TLS/client.pem [CONSUL_CLIENT_KEY]=$TLS/client-key.pem
    [HM_CLUSTER_CONSUL_MASTER_TOKEN]=$MASTER_TOKEN [HM_CLUSTER_CONSUL_AGENT_TOKEN]=$AGENT_TOKEN
    [HM_CLUSTER_CONSUL_REGISTRATOR_TOKEN]=$REGISTRATOR_TOKEN [HM_CLUSTER_CONSUL_GATEWAY_TOKEN]=$GATEWAY_TOKEN
    [HM_CLUSTER_DOCKER_HOST1]=$DOCKER_HOST1 [HM_CLUSTER_DOCKER_HOST2]=$DOCKER_HOST2
    [HM_CLUSTER_HOST1_IP]=127.0.0.1 [HM_CLUSTER_HOST2_IP]=$NET.2
  )
  local k env="" json=""
  for k in "${keys[@]}"; do
    env+="export $k='${V[$k]}'"$'\n'
    json+="${json:+,$'\n'}    \"$k\": \"${V[$k]}\""
  done
  local members="" kind addr pidf log data endpoint
  member_json() { # <name> <kind> <address> <pidfile> <log> <data dir> <endpoint> <command...>
    members+="${members:+,$'\n'}    { \"name\": \"$1\", \"kind\": \"$2\", \"address\": \"$3\", \"pidfile\": \"$4\", \"log\": \"$5\", \"dataDir\": \"$6\", \"endpoint\": \"$7\", \"args\": $(shift 7; json_args "$@") }"
  }
  for m in "${ETCD_MEMBERS[@]}"; do
    etcd_cmd "$m"
    member_json "$m" etcd "${ADDR[$m]}" "$STATE/etcd/$m.pid" "$STATE/etcd/$m.log" "$STATE/etcd/$m" "https://${ADDR[$m]}:$ETCD_CLIENT_PORT" "${ETCD_ARGS[@]}"
  done
  for m in "${CONSUL_SERVERS[@]}" "${CONSUL_CLIENTS[@]}"; do
    kind=consul-client; [[ $m == c* ]] && kind=consul-server
    consul_cmd "$m"
    member_json "$m" "$kind" "${ADDR[$m]}" "$STATE/consul/$m.pid" "$STATE/consul/$m.log" "$STATE/consul/$m" "https://${ADDR[$m]}:$CONSUL_HTTPS_PORT" "${CONSUL_ARGS[@]}"
  done
  dockerd_cmd
  member_json docker-h2 dockerd "$NET.2" "$DH2/docker.pid" "$DH2/dockerd.log" "$DH2/data" "$DOCKER_HOST2" "${DOCKERD_ARGS[@]}"
  printf '%s' "$env" >"$STATE/env.tmp" && mv "$STATE/env.tmp" "$STATE/env"
  printf '{\n  "state": "%s",\n  "net": "%s",\n  "env": {\n%s\n  },\n  "members": [\n%s\n  ]\n}\n' "$STATE" "$NET" "$json" "$members" >"$STATE/cluster.json.tmp"
  mv "$STATE/cluster.json.tmp" "$STATE/cluster.json"
}

# A state dir is this script's when it holds the `net` file `up` writes first; `up` takes no other
# non-empty directory, so that `down` (rm -rf) never removes one a mistyped HM_CLUSTER_STATE names.
ours_or_empty() {
  [ ! -d "$STATE" ] || [ -e "$STATE/net" ] || [ -z "$(ls -A "$STATE")" ] ||
    die "$STATE is not a cluster state dir (no $STATE/net) and not empty: not $1 (set HM_CLUSTER_STATE to a new directory)"
}

up() {
  local t0=$SECONDS
  ours_or_empty used
  mkdir -p "$STATE" "$STATE/etcd" "$STATE/consul" "$DH2"
  # Private keys (the CA's too), the Consul configs with their tokens and gossip key, env and
  # cluster.json with every password: none of it for the host's other users.
  chmod 700 "$STATE"
  if [ -s "$STATE/net" ] && [ "$(cat "$STATE/net")" != "$NET" ]; then
    die "$STATE belongs to the cluster on $(cat "$STATE/net").x, not $NET.x (set HM_CLUSTER_STATE for a second cluster)"
  fi
  echo "$NET" >"$STATE/net"
  need_binaries
  load_secrets
  make_tls
  local m
  for m in "${CONSUL_SERVERS[@]}" "${CONSUL_CLIENTS[@]}"; do
    [[ $m == c* ]] && write_consul_config "$m" true || write_consul_config "$m" false
  done
  write_dockerd_wrapper "$DH2" "${H2_PORTS[@]}"

  # Everything that does not depend on something else starts at once; the waits come after.
  start_etcd
  start_consul "${CONSUL_SERVERS[@]}"
  start_dockerd

  # Each wait also starts what has died meanwhile (a member that was still stopping when `up` began).
  wait_for "etcd cluster (see $STATE/etcd/e*.log)" 30 etcd_ready
  etcd_auth

  wait_for "host 2's dockerd (see $DH2/dockerd.log)" 60 docker_ready
  load_images

  wait_for "a Consul leader (see $STATE/consul/c*.log)" 40 consul_servers_ready
  wait_for "Consul's ACL system (the master token)" 30 consul_api GET /acl/token/self
  consul_acl
  # The client agents start once their token exists: a first sync refused for want of it would
  # only be retried after Consul's 15 s or so.
  start_consul "${CONSUL_CLIENTS[@]}"
  for m in "${CONSUL_CLIENTS[@]}"; do
    wait_for "Consul client agent $m (see $STATE/consul/$m.log)" 40 consul_client_ready "$m"
    wait_for "Consul client agent $m in the catalog" 40 consul_node_known "$m"
  done

  write_outputs
  say "up in $((SECONDS - t0)) s: source $STATE/env (members: $STATE/cluster.json)"
}

# ---------------------------------------------------------------- down, status

stop_pid() { # stop_pid <pidfile> <what> <seconds>
  local p; p="$(pid_of "$1")" || return 0
  kill -TERM "$p" 2>/dev/null || return 0
  for _ in $(seq 1 $(($3 * 10))); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.1; done
  say "$2 (pid $p) did not stop within $3 s: killing it"
  kill -KILL "$p" 2>/dev/null || true
}

down() {
  [ -d "$STATE" ] || { ip link del "$BRIDGE" 2>/dev/null || true; return 0; }
  ours_or_empty removed
  local m
  # host 2's engine first: it stops its containers, which takes longest
  stop_pid "$DH2/docker.pid" "host 2's dockerd" 30 &
  for m in "${CONSUL_CLIENTS[@]}" "${CONSUL_SERVERS[@]}"; do stop_pid "$STATE/consul/$m.pid" "consul $m" 10 & done
  # a leader stopping hands its leadership over first, which waits while the others stop too
  for m in "${ETCD_MEMBERS[@]}"; do stop_pid "$STATE/etcd/$m.pid" "etcd $m" 3 & done
  wait
  ip link del "$BRIDGE" 2>/dev/null || true
  rm -rf "$STATE" || die "cannot remove $STATE"
  say "down: members stopped, $STATE removed"
}

status() {
  [ -d "$STATE" ] || { say "no cluster in $STATE"; return 1; }
  [ -s "$STATE/secrets" ] && . "$STATE/secrets"
  local m bad=0 p state
  line() { # <name> <address> <pidfile> <answers...>
    local n=$1 a=$2 f=$3; shift 3
    p="$(pid_of "$f" || true)"
    if "$@"; then state=up; elif [ -n "$p" ]; then state="not answering"; bad=1; else state=down; bad=1; fi
    printf '%-10s %-13s pid %-8s %s\n' "$n" "$a" "${p:--}" "$state"
  }
  for m in "${ETCD_MEMBERS[@]}"; do line "$m" "${ADDR[$m]}" "$STATE/etcd/$m.pid" etcd_answers "$m"; done
  for m in "${CONSUL_SERVERS[@]}" "${CONSUL_CLIENTS[@]}"; do line "$m" "${ADDR[$m]}" "$STATE/consul/$m.pid" consul_answers "$m"; done
  line docker-h2 "$NET.2" "$DH2/docker.pid" docker_answers
  return $bad
}

# One up or down at a time per state dir (test lanes run at once, each may call `up`); the lock
# file sits beside the state dir, which down removes.
lock() {
  mkdir -p "$(dirname "$STATE")"
  exec 9>"$STATE.lock"
  flock -w 300 9 || die "another cluster.sh holds $STATE.lock for more than 300 s"
}

case "${1:-}" in
  up) lock; up ;;
  down) lock; down ;;
  status) status ;;
  *) die "usage: $0 up|down|status" ;;
esac
