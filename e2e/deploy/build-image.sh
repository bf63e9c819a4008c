#!/usr/bin/env bash
# Builds the container image offline: compiles both gateways statically (release profile,
# the command the Dockerfile's build stage runs), strips their debug info into a build
# context of their own, and builds the Dockerfile's `runtime` stage from them with podman,
# pulling nothing (the `runtime` stage is FROM scratch).
#
#   e2e/deploy/build-image.sh [IMAGE]      # default localhost/strait:VERSION
#
# Prints the image name on its last line.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/e2e/deploy/containers.conf}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
image=${1:-localhost/strait:$version}
out=target/x86_64-unknown-linux-gnu/release

RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --release --locked --quiet --target x86_64-unknown-linux-gnu -p strait-egress -p strait-ingress

context=target/image-context
rm -rf "$context"
mkdir -p "$context/prebuilt"
for bin in strait-egress strait-ingress; do
  if readelf --program-headers "$out/$bin" | grep -q 'program interpreter'; then
    echo "$out/$bin is dynamically linked: it would not run in a FROM scratch image" >&2
    exit 1
  fi
  objcopy --strip-debug "$out/$bin" "$context/prebuilt/$bin"
done

podman build --quiet --pull=never --target runtime --build-arg BINARIES=prebuilt \
  -f Dockerfile -t "$image" "$context" >/dev/null
echo "$image"
