#!/usr/bin/env bash
# Runs each fuzz target for SECONDS (default 600) with cargo-fuzz on the stable
# toolchain (RUSTC_BOOTSTRAP lets cargo-fuzz use the sanitizer flags it needs).
#   shared/fuzz/run.sh [SECONDS] [TARGET...]     targets: config first_bytes mysql_handshake postgres_startup proxy_header spiffe_id
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-600}; shift || true
targets=("$@"); [ ${#targets[@]} -gt 0 ] || targets=(config first_bytes mysql_handshake postgres_startup proxy_header spiffe_id)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  cargo fuzz run -O "$t" "corpus/$t" -- -max_total_time="$seconds" -rss_limit_mb=2048 2>&1 | tail -n 15
done
