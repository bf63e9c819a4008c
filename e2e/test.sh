#!/usr/bin/env bash
# The whole test suite: the house rules (rustfmt, clippy, cargo-deny), unit tests and
# end-to-end tests against real MariaDB, PostgreSQL, Redis, dnsmasq, openssl and the
# real strait binaries. Installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin:$HOME/.cargo/bin"

e2e/install-deps.sh
# House rules first: they fail in seconds, before anything is built.
cargo fmt --all --check
cargo deny --log-level error check licenses bans sources
cargo clippy --workspace --all-targets --locked --quiet -- -D warnings
cargo build --workspace --locked
cargo test --workspace --locked --no-fail-fast -- --test-threads=4
for check in e2e/checks/*.sh; do "$check"; done
