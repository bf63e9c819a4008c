#!/usr/bin/env bash
# The container image carries the tutorial's SQL: builds the image offline
# (e2e/deploy/build-image.sh), checks what is in it (both binaries, nothing else, no shell,
# user 65532:65532), makes the reference PKI with the image's own `certs` command, runs
# strait-ingress and strait-egress as two containers (podman, runc, host network) in front
# of a MariaDB on loopback, runs TUTORIAL_SQL (e2e/src/lib.rs) with the mariadb client
# through the egress's plain port and reads the row back over MariaDB's unix socket.
#
# The egress reaches the ingress by a DNS name that only a dnsmasq started here answers,
# and that dnsmasq is known to the container only through the /etc/resolv.conf podman
# writes (--dns): so the static binary in the empty image resolves names via resolv.conf.
# The two containers share the host network, so each gets its own health, metrics and
# admin port on loopback: the ingress's from its strait.toml ([health], [metrics],
# [admin]), the egress's from the command-line overrides (--health-address,
# --metrics-address, --admin-address). Both get the workload env their Deployment gives
# them (POD_NAME, POD_NAMESPACE, CANONICAL_SERVICE, ISTIO_META_CLUSTER_ID), and the scrape
# of each metrics port (/stats/prometheus) must hold an istio_tcp_connections_opened_total
# series with those labels. Last, SIGTERM stops both containers with exit status 0 (PID 1
# handles the signal) after readiness failed and the drain delay passed.
source "$(dirname "$0")/../deploy/checks-lib.sh"

need_apt podman podman runc runc dnsmasq dnsmasq-base mariadbd mariadb-server mariadb mariadb-client curl curl
export CONTAINERS_CONF=$PWD/e2e/deploy/containers.conf

host=ingress.strait-image.test       # $SERVICE_URL of this check
dns_ip=127.0.25.53                   # resolv.conf allows no port: dnsmasq takes :53 on its own loopback address
db_port=25306 ingress_port=25307 egress_port=25308 mesh_port=25309
ingress_health=25321 ingress_metrics=25391 ingress_admin=25301
egress_health=25322 egress_metrics=25392 egress_admin=25302
drain_delay=3   # [process] drain_delay of both, seconds
sql=$(perl -0ne 'print "$1" if /pub const TUTORIAL_SQL: &str = "(.*?)";/s' e2e/src/lib.rs | sed -e 's/\\$//' | tr -s ' \n' ' ')
[[ $sql == *"Crypto Hi"* ]] || fail "TUTORIAL_SQL not found in e2e/src/lib.rs (its shape changed?)"

for port in $db_port $ingress_port $egress_port $mesh_port $ingress_health $ingress_metrics $ingress_admin $egress_health $egress_metrics $egress_admin; do
  ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || fail "127.0.0.1:$port is already in use"
done

work=$(mktemp -d /tmp/strait-image-check.XXXXXX)
tag=$$
pids=()
containers=()
cleanup() {
  local rc=$?
  if [ $rc -ne 0 ]; then
    for c in "${containers[@]}"; do
      echo "--- logs of $c" >&2
      podman logs "$c" 2>&1 | tail -20 >&2 || true
    done
    [ -f "$work/dnsmasq.log" ] && { echo "--- dnsmasq" >&2; tail -20 "$work/dnsmasq.log" >&2; }
  fi
  for c in "${containers[@]}"; do podman rm -f -t 0 "$c" >/dev/null 2>&1 || true; done
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
  exit $rc
}
trap cleanup EXIT

step "building the image offline"
start=$SECONDS
image=$(e2e/deploy/build-image.sh "localhost/strait:check-$tag" | tail -1)
containers_image_cleanup() { podman rmi -f "$image" >/dev/null 2>&1 || true; }
trap 'containers_image_cleanup; cleanup' EXIT
step "built $image in $((SECONDS - start))s"

step "what the image holds"
[ "$(podman image inspect "$image" --format '{{.Config.User}}')" = "65532:65532" ] || fail "the image does not run as 65532:65532"
files=$(podman create --name "strait-inspect-$tag" "$image" >/dev/null && podman export "strait-inspect-$tag" | tar -t | grep -v '/$' | sort)
podman rm -f "strait-inspect-$tag" >/dev/null
# The runtime adds its own mount points (/etc/hosts, /etc/resolv.conf, /run/.containerenv, ...).
own=$(echo "$files" | grep -vE '^(etc/(hosts|hostname|resolv\.conf|passwd|group)|run/\.containerenv|dev/|proc/|sys/)' || true)
[ "$own" = "$(printf 'usr/local/bin/strait-egress\nusr/local/bin/strait-ingress')" ] || fail "unexpected files in the image: $own"
if podman --runtime runc run --rm --entrypoint /bin/sh "$image" -c true >/dev/null 2>&1; then
  fail "the image has a shell"
fi
podman --runtime runc run --rm --network none --entrypoint /usr/local/bin/strait-egress "$image" --version | grep -q strait ||
  fail "strait-egress --version does not run in the image"

step "the reference PKI from the image's own certs command (as 65532, like a Secret with fsGroup)"
mkdir -p "$work/certs"
chown 65532:65532 "$work/certs"
podman --runtime runc run --rm --network none -v "$work/certs:/certs" "$image" certs --out /certs --host "$host" >/dev/null
[ -s "$work/certs/ingress/tls.key" ] && [ -s "$work/certs/egress/tls.crt" ] || fail "certs wrote no credentials"

step "dnsmasq on $dns_ip:53 answers $host only"
dnsmasq --no-daemon --keep-in-foreground --bind-interfaces --listen-address=$dns_ip --port=53 \
  --no-resolv --no-hosts --pid-file= --log-queries --log-facility=- --local-ttl=1 \
  --address=/$host/127.0.0.1 >"$work/dnsmasq.log" 2>&1 &
pids+=($!)
wait_until 10 "dnsmasq listening on $dns_ip:53" bash -c "exec 3<>/dev/tcp/$dns_ip/53"

step "MariaDB on 127.0.0.1:$db_port (throwaway data directory)"
mariadb-install-db --no-defaults --datadir="$work/mysql" --auth-root-authentication-method=socket \
  --skip-test-db --user=root >"$work/mariadb-install.log" 2>&1 || fail "mariadb-install-db: $(tail -5 "$work/mariadb-install.log")"
mariadbd --no-defaults --datadir="$work/mysql" --socket="$work/mysqld.sock" --pid-file="$work/mysqld.pid" \
  --port=$db_port --bind-address=127.0.0.1 --user=root --skip-log-bin --skip-name-resolve \
  --innodb-buffer-pool-size=16M >"$work/mariadbd.log" 2>&1 &
pids+=($!)
wait_until 60 "MariaDB on 127.0.0.1:$db_port" bash -c "exec 3<>/dev/tcp/127.0.0.1/$db_port"
mariadb --socket="$work/mysqld.sock" -uroot -e "CREATE USER app@'%' IDENTIFIED BY 'app'; GRANT ALL ON *.* TO app@'%';"

cat >"$work/ingress.toml" <<TOML
[[listener]]
name = "mtls"
address = "127.0.0.1:$ingress_port"
tls = { mode = "mutual", dir = "/etc/strait/certs/ingress" }

[[route]]
name = "mysql"
hosts = ["$host"]
upstream = "127.0.0.1:$db_port"

[health]
address = "127.0.0.1:$ingress_health"

[metrics]
address = "127.0.0.1:$ingress_metrics"

[admin]
address = "127.0.0.1:$ingress_admin"

[process]
drain_delay = "${drain_delay}s"
TOML
cat >"$work/egress.toml" <<TOML
[[listener]]
name = "mesh"
address = "127.0.0.1:$mesh_port"
tls = { mode = "mutual", dir = "/etc/strait/certs/mesh/egress" }

[[listener]]
name = "mysql-plain"
address = "127.0.0.1:$egress_port"
route = "mysql-remote"

[[route]]
name = "mysql-remote"
hosts = ["$host"]
upstream = "$host:$ingress_port"
upstream_tls = { mode = "mutual", dir = "/etc/strait/certs/egress", sni = "$host" }

# No [health], [metrics] or [admin]: the command line sets them (run_gateway).
[process]
drain_delay = "${drain_delay}s"
TOML
chmod 644 "$work/ingress.toml" "$work/egress.toml"

# run_gateway ROLE CLUSTER [ARG...]: the role's container with the env its Deployment gives
# it (deploy/kubernetes: the downward API's pod name and namespace, the canonical-name
# label, the overlay's cluster id).
run_gateway() {
  local role=$1 cluster=$2 name="strait-$1-$tag"
  shift 2
  containers+=("$name")
  podman --runtime runc run -d --name "$name" --network host --dns $dns_ip --read-only --cap-drop ALL \
    -e POD_NAME="strait-$role-gateway-5d9c7b6f4-x2x4q" -e POD_NAMESPACE=strait \
    -e CANONICAL_SERVICE="strait-$role-gateway" -e ISTIO_META_CLUSTER_ID="$cluster" \
    -v "$work/certs:/etc/strait/certs:ro" -v "$work/$role.toml:/etc/strait/config/strait.toml:ro" \
    --entrypoint "/usr/local/bin/strait-$role" "$image" --config /etc/strait/config/strait.toml "$@" >/dev/null
}
step "strait-ingress and strait-egress as containers (read-only, no capabilities, --dns $dns_ip, own HTTP ports)"
run_gateway ingress server-cluster
run_gateway egress client-cluster --health-address 127.0.0.1:$egress_health \
  --metrics-address 127.0.0.1:$egress_metrics --admin-address 127.0.0.1:$egress_admin
wait_until 30 "strait-ingress ready on its health port :$ingress_health" curl -fsS "http://127.0.0.1:$ingress_health/healthz/ready"
wait_until 30 "strait-egress ready on its health port :$egress_health" curl -fsS "http://127.0.0.1:$egress_health/healthz/ready"
grep -q "^nameserver $dns_ip\$" <(podman inspect "strait-egress-$tag" --format '{{.ResolvConfPath}}' | xargs cat) ||
  fail "podman did not write nameserver $dns_ip into the egress's /etc/resolv.conf"

step "TUTORIAL_SQL with a plain mariadb client through the egress (127.0.0.1:$egress_port)"
timeout 60 mariadb -h 127.0.0.1 -P $egress_port -uapp -papp --skip-ssl --connect-timeout=10 -e "$sql" ||
  fail "the tutorial's SQL through the containers failed"
row=$(mariadb --socket="$work/mysqld.sock" -uroot -N -B -e "SELECT id, content FROM test_encrypted_connection.message")
[ "$row" = "$(printf '1\tCrypto Hi')" ] || fail "expected the row (1, 'Crypto Hi') on the server side, got: $row"
grep -q "query\[A\] $host from 127.0.0.1" "$work/dnsmasq.log" || fail "the egress did not ask dnsmasq for $host"
wait_until 10 "the egress's access-log line" bash -c "podman logs strait-egress-$tag 2>&1 | grep 'strait::access' | grep -q 'upstream=127.0.0.1:$ingress_port'"
wait_until 10 "the ingress's access-log line" bash -c "podman logs strait-ingress-$tag 2>&1 | grep 'strait::access' | grep -q 'identity=client.$host'"

step "each port serves its own paths: health :$ingress_health/:$egress_health, metrics :$ingress_metrics/:$egress_metrics, admin :$ingress_admin/:$egress_admin"
status_of() { curl -s -o /dev/null -m 5 -w '%{http_code}' "http://127.0.0.1:$1$2" || true; }
for port_path_code in "$ingress_health /healthz/live 200" "$ingress_health /stats/prometheus 404" "$ingress_health /config_dump 404" \
  "$egress_health /healthz/live 200" "$egress_health /config_dump 404" "$ingress_metrics /healthz/ready 404" \
  "$ingress_metrics /config_dump 404" "$egress_metrics /logging 404" "$ingress_admin /config_dump 200" "$egress_admin /config_dump 200"; do
  set -- $port_path_code
  [ "$(status_of "$1" "$2")" = "$3" ] || fail "GET 127.0.0.1:$1$2 answered $(status_of "$1" "$2"), not $3"
done

# has_series FILE METRIC LABEL=VALUE...: one sample line of METRIC carries every label.
has_series() {
  local file=$1 metric=$2 line label
  shift 2
  while read -r line; do
    for label in "$@"; do
      [[ $line == *"${label%%=*}=\"${label#*=}\""* ]] || continue 2
    done
    return 0
  done < <(grep "^$metric{" "$file")
  return 1
}
step "Istio's metrics on each metrics port (/stats/prometheus), with the workload labels of the pod env"
curl -fsS -m 5 "http://127.0.0.1:$egress_metrics/stats/prometheus" >"$work/egress-scrape.txt" || fail "no scrape on the egress's metrics port"
curl -fsS -m 5 "http://127.0.0.1:$ingress_metrics/stats/prometheus" >"$work/ingress-scrape.txt" || fail "no scrape on the ingress's metrics port"
has_series "$work/egress-scrape.txt" istio_tcp_connections_opened_total reporter=source source_workload=strait-egress-gateway \
  source_workload_namespace=strait source_canonical_service=strait-egress-gateway source_cluster=client-cluster destination_service=$host ||
  fail "the egress has no istio_tcp_connections_opened_total{reporter=source, source_workload=strait-egress-gateway, source_cluster=client-cluster, ...}: $(grep '^istio_tcp_connections_opened_total' "$work/egress-scrape.txt")"
has_series "$work/ingress-scrape.txt" istio_tcp_connections_opened_total reporter=destination destination_workload=strait-ingress-gateway \
  destination_workload_namespace=strait destination_canonical_service=strait-ingress-gateway destination_cluster=server-cluster \
  connection_security_policy=mutual_tls ||
  fail "the ingress has no istio_tcp_connections_opened_total{reporter=destination, destination_workload=strait-ingress-gateway, destination_cluster=server-cluster, connection_security_policy=mutual_tls, ...}: $(grep '^istio_tcp_connections_opened_total' "$work/ingress-scrape.txt")"
grep -q '^strait_tcp_connections_closed_total{' "$work/ingress-scrape.txt" || fail "no strait_* metrics on the ingress's metrics port"

step "SIGTERM: readiness fails at once, the listeners accept for drain_delay (${drain_delay}s), exit 0"
for role in egress ingress; do
  name="strait-$role-$tag"
  health_var=${role}_health listener_port=$([ $role = egress ] && echo $egress_port || echo $ingress_port)
  start=$SECONDS
  podman kill --signal TERM "$name" >/dev/null
  wait_until 2 "$name: readiness 503 after SIGTERM" bash -c "[ \"\$(curl -s -o /dev/null -m 1 -w '%{http_code}' http://127.0.0.1:${!health_var}/healthz/ready)\" = 503 ]"
  (exec 3<>"/dev/tcp/127.0.0.1/$listener_port") 2>/dev/null ||
    fail "$name: :$listener_port refused a connection $((SECONDS - start))s after SIGTERM, inside the ${drain_delay}s drain delay"
  timeout 40 podman wait "$name" >/dev/null || fail "$name still running 40s after SIGTERM"
  code=$(podman inspect "$name" --format '{{.State.ExitCode}}')
  [ "$code" = 0 ] || fail "$name exited $code after SIGTERM (PID 1 must handle it)"
  [ $((SECONDS - start)) -ge $drain_delay ] || fail "$name exited $((SECONDS - start))s after SIGTERM, before its ${drain_delay}s drain delay"
done
printf '%s: OK (image %s, %s)\n' "$check_name" "$image" "$(podman image inspect "$image" --format '{{.Size}}' | awk '{printf "%.1f MB", $1/1e6}')"
