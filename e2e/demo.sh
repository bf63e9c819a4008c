#!/usr/bin/env bash
# The reference demo (seed 003) on one machine, with two loopback addresses standing in
# for two clusters:
#
#   client "cluster" 127.0.0.2                  server "cluster" 127.0.0.3
#   mariadb client --plain--> egress :3306 ==mTLS, SNI=$SERVICE_URL==> ingress :13306 --> MariaDB :3306
#
# It installs what is missing, builds, makes the tutorial's certificate chain with the
# project's own `certs` command, starts MariaDB, the ingress and the egress from the
# files in config-examples/, runs the tutorial's SQL through the egress, reads the row
# back directly from MariaDB, prints both hops' access-log lines, shows that a client
# without a certificate is refused by the ingress, and tears everything down.
# Exits 0 only if all of that held.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"

SERVICE_URL=${SERVICE_URL:-127.0.0.3.nip.io}
CLIENT_IP=127.0.0.2
SERVER_IP=127.0.0.3
work=$(mktemp -d /tmp/strait-demo.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
step() { printf '\n== %s\n' "$*"; }
fail() { printf '\nDEMO FAILED: %s\n' "$*" >&2; exit 1; }
wait_port() {
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
    sleep 0.05
  done
  fail "nothing listens on $1:$2"
}

step "installing what is missing and building"
e2e/install-deps.sh
cargo build --workspace --locked --quiet
bin=target/debug

step "certificates: root CA -> intermediate CA -> server ($SERVICE_URL) and client; mesh CA -> SPIFFE workloads"
$bin/strait-ingress certs --out "$work/certs" --host "$SERVICE_URL"
find "$work/certs" -type f | sed "s|$work/||" | sort

step "MariaDB on $SERVER_IP:3306 (throwaway data directory)"
mariadb-install-db --no-defaults --datadir="$work/mysql" --auth-root-authentication-method=socket \
  --skip-test-db --user=root >"$work/mariadb-install.log" 2>&1
mariadbd --no-defaults --datadir="$work/mysql" --socket="$work/mysqld.sock" --pid-file="$work/mysqld.pid" \
  --port=3306 --bind-address=$SERVER_IP --user=root --skip-log-bin --skip-name-resolve \
  --innodb-buffer-pool-size=16M >"$work/mariadbd.log" 2>&1 &
pids+=($!)
wait_port $SERVER_IP 3306
mariadb --socket="$work/mysqld.sock" -uroot -e "CREATE USER app@'%' IDENTIFIED BY 'app'; GRANT ALL ON *.* TO app@'%';"

# The shipped examples, with the demo's addresses and files in place of the operator's.
adapt() {
  sed -e "s|/etc/strait/certs|$work/certs|g" \
      -e "s|35.200.0.10.nip.io:13306|$SERVER_IP:13306|" \
      -e "s|35.200.0.10.nip.io|$SERVICE_URL|g" \
      -e "s|mysql.default.svc.cluster.local:3306|$SERVER_IP:3306|" \
      -e "s|0.0.0.0:13306|$SERVER_IP:13306|" \
      -e "s|0.0.0.0:|$CLIENT_IP:|" "$1"
}
adapt config-examples/ingress.toml >"$work/ingress.toml"
adapt config-examples/egress.toml >"$work/egress.toml"

step "checking both configurations"
$bin/strait-ingress check --config "$work/ingress.toml"
$bin/strait-egress check --config "$work/egress.toml"

step "starting strait-ingress ($SERVER_IP:13306) and strait-egress ($CLIENT_IP:3306, $CLIENT_IP:15443)"
$bin/strait-ingress --config "$work/ingress.toml" --admin-address $SERVER_IP:15000 --health-address $SERVER_IP:15021 --metrics-address $SERVER_IP:15090 2>"$work/ingress.log" &
pids+=($!)
$bin/strait-egress --config "$work/egress.toml" --admin-address $CLIENT_IP:15000 --health-address $CLIENT_IP:15021 --metrics-address $CLIENT_IP:15090 2>"$work/egress.log" &
pids+=($!)
wait_port $SERVER_IP 13306
wait_port $CLIENT_IP 3306

step "the tutorial's SQL with a plain mariadb client (--skip-ssl) through the egress"
sql="CREATE DATABASE test_encrypted_connection;
CREATE TABLE test_encrypted_connection.message (id INT, content VARCHAR(255));
INSERT INTO test_encrypted_connection.message VALUES (1, 'Crypto Hi');"
echo "$sql"
mariadb -h $CLIENT_IP -P 3306 -uapp -papp --skip-ssl -e "$sql" || fail "SQL through the egress failed"

step "reading it back directly from MariaDB (server side, bypassing the gateways)"
row=$(mariadb --socket="$work/mysqld.sock" -uroot -N -B -e "SELECT id, content FROM test_encrypted_connection.message")
echo "$row"
[ "$row" = "$(printf '1\tCrypto Hi')" ] || fail "expected the row (1, 'Crypto Hi'), got: $row"

step "access log, egress hop"
sleep 0.2
grep 'strait::access' "$work/egress.log" || fail "no egress access-log line"
step "access log, ingress hop"
grep 'strait::access' "$work/ingress.log" || fail "no ingress access-log line"
grep -q "identity=client.$SERVICE_URL" "$work/ingress.log" || fail "the ingress did not log the egress's identity"

step "a client without a certificate, straight to the ingress, is refused"
out=$(printf 'hello\n' | timeout 15 openssl s_client -connect $SERVER_IP:13306 -servername "$SERVICE_URL" \
  -CAfile "$work/certs/ca-chain.cert.pem" -quiet 2>&1 || true)
echo "$out" | grep -E 'alert|error' | head -3
echo "$out" | grep -qiE 'certificate required|handshake failure|alert' || fail "the ingress did not refuse a client without a certificate"
sleep 0.2
grep 'outcome=refused' "$work/ingress.log" | tail -1 || fail "the refusal is not in the ingress access log"

step "a plain client that bypasses the egress gets nothing from the ingress"
if mariadb -h $SERVER_IP -P 13306 -uapp -papp --skip-ssl --connect-timeout=3 -e 'SELECT 1' >/dev/null 2>&1; then
  fail "a plain client reached MariaDB through the ingress"
fi
echo "refused, as it should be"

step "the ingress's health port (15021) and Prometheus port (15090, Istio's metric names)"
curl_get() { exec 3<>"/dev/tcp/$1/$2"; printf 'GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' "$3" >&3; cat <&3; exec 3<&-; }
curl_get $SERVER_IP 15021 /healthz/ready | tail -1
curl_get $SERVER_IP 15090 /stats/prometheus | grep -E '^istio_tcp_connections_opened_total|^strait_tcp_connections_(opened|closed)_total|^strait_handshake_failures_total' || fail "no metrics on the metrics port"

printf '\nDEMO OK: a plain MySQL client wrote and read through egress -> mTLS -> ingress -> MariaDB.\n'
