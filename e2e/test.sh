#!/usr/bin/env bash
# The whole test suite: unit tests and end-to-end tests against real MariaDB, Redis,
# dnsmasq, openssl and the real strait binaries. Installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"

e2e/install-deps.sh
cargo build --workspace --locked
cargo test --workspace --locked --no-fail-fast -- --test-threads=4
for check in e2e/checks/*.sh; do "$check"; done
