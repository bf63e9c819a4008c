# syntax=docker/dockerfile:1
# Strait's container image: strait-egress and strait-ingress, statically linked (glibc,
# -C target-feature=+crt-static), release profile, in an empty image: no shell, no libc,
# no package manager, runs as 65532:65532.
#
#   docker build -t REGISTRY/strait:0.1.0 .     # CI with a registry: the `build` stage compiles
#   e2e/deploy/build-image.sh                   # offline (podman/buildah): the same `runtime`
#                                               # stage over binaries compiled on this machine
#
# BINARIES names the stage the runtime stage copies /out/strait-{egress,ingress} from:
# `build` (default) compiles them; `prebuilt` takes them from prebuilt/ in the build
# context (what build-image.sh stages). BuildKit and buildah skip the stage not used.
ARG BINARIES=build

FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --locked --target x86_64-unknown-linux-gnu -p strait-egress -p strait-ingress \
 && mkdir /out \
 && for bin in strait-egress strait-ingress; do \
      objcopy --strip-debug "target/x86_64-unknown-linux-gnu/release/$bin" "/out/$bin"; \
    done

FROM scratch AS prebuilt
COPY prebuilt/strait-egress prebuilt/strait-ingress /out/

FROM ${BINARIES} AS binaries

# The image. Pods pick the role with `command` (see deploy/kubernetes/); /etc/resolv.conf
# and /etc/hosts come from the container runtime (hickory reads resolv.conf itself).
FROM scratch AS runtime
COPY --from=binaries /out/strait-egress /out/strait-ingress /usr/local/bin/
ENV PATH=/usr/local/bin
USER 65532:65532
# plain MySQL (egress), mTLS (ingress), mesh mTLS (egress), health (probes), metrics
# (Prometheus). The admin port (15000) listens on loopback only: nothing to expose.
EXPOSE 3306 13306 15443 15021 15090
LABEL org.opencontainers.image.title="strait" \
      org.opencontainers.image.description="Cross-cluster mTLS egress and ingress gateways" \
      org.opencontainers.image.licenses="Apache-2.0"
ENTRYPOINT ["/usr/local/bin/strait-ingress"]
CMD ["--help"]
