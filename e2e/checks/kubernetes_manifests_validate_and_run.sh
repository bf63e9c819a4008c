#!/usr/bin/env bash
# The kustomize overlays render, validate and run: renders deploy/kubernetes/overlays/
# client-cluster and server-cluster (and server-cluster with the cert-manager component)
# with `kubectl kustomize`, with credentials from the image's own `certs` command;
# validates every built-in object against the Kubernetes 1.32 and 1.37 API schemas
# (kubernetes-validate --strict, offline) and proves the validator rejects a bad field;
# runs checkov on the rendered manifests (findings fixed, or skipped with a written
# reason in the manifests); checks that Deployment, strait.toml, Secrets, Service, PDB,
# HPA and Certificate agree (e2e/deploy/manifests.py policy); then runs each rendered pod
# the way the kubelet would: its command and args, its ConfigMap and Secrets laid out in
# kubelet layout at their mount paths, as 65532 on a read-only root with no
# capabilities, in a network namespace of its own; `check` passes, the readiness probe
# answers 200, and SIGTERM ends it with status 0 within the grace period.
# Every tool runs in a network namespace without network (they must work offline).
source "$(dirname "$0")/../deploy/checks-lib.sh"

need_apt podman podman runc runc curl curl nsenter util-linux
need_venv
export CONTAINERS_CONF=$PWD/e2e/deploy/containers.conf
py=$VENV/bin/python
kubectl=$VENV/bin/kubectl

work=$(mktemp -d /tmp/strait-k8s-check.XXXXXX)
containers=()
cleanup() {
  local rc=$?
  for c in "${containers[@]}"; do
    [ $rc -ne 0 ] && { echo "--- logs of $c" >&2; podman logs "$c" 2>&1 | tail -20 >&2 || true; }
    podman rm -f -t 0 "$c" >/dev/null 2>&1 || true
  done
  rm -rf "$work"
  exit $rc
}
trap cleanup EXIT

image=$(e2e/deploy/build-image.sh | tail -1)
host=35.200.0.10.nip.io   # the placeholder $SERVICE_URL the overlays ship with

step "credentials from the image's certs command, into a copy of deploy/kubernetes"
cp -r deploy/kubernetes "$work/k"
mkdir "$work/pki" && chown 65532:65532 "$work/pki"
podman --runtime runc run --rm --network none -v "$work/pki:/pki" "$image" certs --out /pki --host $host >/dev/null
cp -r "$work/pki/egress" "$work/k/overlays/client-cluster/secrets/client"
cp -r "$work/pki/mesh/egress" "$work/k/overlays/client-cluster/secrets/mesh"
cp -r "$work/pki/ingress" "$work/k/overlays/server-cluster/secrets/server"
cp -r "$work/k/overlays/server-cluster" "$work/k/overlays/server-cluster-cert-manager"
sed -i 's|^  - secrets$|  - ../../cert-manager|' "$work/k/overlays/server-cluster-cert-manager/kustomization.yaml"
grep -q 'cert-manager$' "$work/k/overlays/server-cluster-cert-manager/kustomization.yaml" || fail "could not switch the server overlay to cert-manager"

mkdir "$work/rendered"
for overlay in client-cluster server-cluster server-cluster-cert-manager; do
  step "kubectl kustomize overlays/$overlay"
  offline "$kubectl" kustomize "$work/k/overlays/$overlay" >"$work/rendered/$overlay.yaml" || fail "kustomize could not render $overlay"
  offline "$py" e2e/deploy/manifests.py split "$work/rendered/$overlay.yaml" "$work/split/$overlay"
done
grep -q 'kind: Certificate' "$work/rendered/server-cluster-cert-manager.yaml" || fail "the cert-manager variant has no Certificate"
! grep -q 'kind: Secret' "$work/rendered/server-cluster-cert-manager.yaml" || fail "the cert-manager variant still generates the server Secret"

for version in 1.32.0 1.37.0; do
  step "kubernetes-validate --strict against Kubernetes $version"
  for overlay in client-cluster server-cluster server-cluster-cert-manager; do
    offline "$VENV/bin/kubernetes-validate" --strict --quiet -k $version "$work/split/$overlay/core.yaml" ||
      fail "overlays/$overlay does not validate against Kubernetes $version"
  done
done
step "the validator rejects what it should (an unknown field, and preStop.sleep before 1.29)"
sed 's/^  revisionHistoryLimit:/  revisionHistoryLimits:/' "$work/split/client-cluster/core.yaml" >"$work/bad.yaml"
grep -q revisionHistoryLimits "$work/bad.yaml" || fail "could not make the bad manifest"
if offline "$VENV/bin/kubernetes-validate" --strict --quiet -k 1.32.0 "$work/bad.yaml" >/dev/null 2>&1; then
  fail "kubernetes-validate accepted an unknown field: it validates nothing"
fi
if offline "$VENV/bin/kubernetes-validate" --strict --quiet -k 1.28.0 "$work/split/client-cluster/core.yaml" >/dev/null 2>&1; then
  fail "kubernetes-validate accepted lifecycle.preStop.sleep on Kubernetes 1.28"
fi

step "checkov (kubernetes framework, offline)"
mkdir "$work/checkov"
cp "$work/rendered/"*.yaml "$work/checkov/"
offline "$VENV/bin/checkov" -d "$work/checkov" --framework kubernetes --skip-download --compact --quiet \
  >"$work/checkov.txt" 2>&1 || { cat "$work/checkov.txt" >&2; fail "checkov found problems in the rendered manifests"; }
grep -E 'Passed checks' "$work/checkov.txt" || fail "checkov ran no check: $(cat "$work/checkov.txt")"

step "Deployment, strait.toml, Secrets, Service, PDB, HPA and Certificate agree"
for overlay in client-cluster server-cluster server-cluster-cert-manager; do
  offline "$py" e2e/deploy/manifests.py policy "$work/rendered/$overlay.yaml" || fail "overlays/$overlay is inconsistent"
done

# run_pod OVERLAY: the rendered Deployment's container, as the kubelet would run it.
run_pod() {
  local overlay=$1 name="strait-pod-$1-$$" volumes="$work/volumes/$1"
  mkdir -p "$volumes"
  # The kubelet always writes a resolv.conf (the cluster DNS); here, loopback of the pod's own namespace.
  printf 'nameserver 127.0.0.1\nsearch strait.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n' >"$work/resolv-$1.conf"
  chmod 644 "$work/resolv-$1.conf"
  mapfile -t plan < <("$py" e2e/deploy/manifests.py pod "$work/rendered/$overlay.yaml" "$volumes")
  local command=${plan[0]} args=(${plan[1]}) mounts=(-v "$work/resolv-$1.conf:/etc/resolv.conf:ro") probe_port probe_path line
  for line in "${plan[@]:2}"; do
    set -- $line
    case $1 in
      MOUNT) mounts+=(-v "$2:$3:ro") ;;
      PROBE) probe_port=$2 probe_path=$3 ;;
    esac
  done
  step "$overlay: $command check ${args[*]}"
  podman --runtime runc run --rm --network none --read-only --cap-drop ALL --security-opt no-new-privileges \
    "${mounts[@]}" --entrypoint "$command" "$image" check "${args[@]}" || fail "$overlay: the rendered strait.toml does not pass check"
  step "$overlay: running the pod (own network namespace), readiness on :$probe_port$probe_path"
  containers+=("$name")
  podman --runtime runc run -d --name "$name" --network none --read-only --cap-drop ALL --security-opt no-new-privileges \
    "${mounts[@]}" --entrypoint "$command" "$image" "${args[@]}" >/dev/null
  local pid
  pid=$(podman inspect "$name" --format '{{.State.Pid}}')
  [ "$pid" -gt 0 ] || fail "$overlay: the pod is not running"
  wait_until 30 "$overlay: readiness probe" nsenter -t "$pid" -n curl -fsS "http://127.0.0.1:$probe_port$probe_path"
  local start=$SECONDS
  timeout 60 podman stop -t 45 "$name" >/dev/null
  local code
  code=$(podman inspect "$name" --format '{{.State.ExitCode}}')
  [ "$code" = 0 ] || fail "$overlay: exited $code after SIGTERM"
  step "$overlay: SIGTERM -> exit 0 in $((SECONDS - start))s"
}
run_pod client-cluster
run_pod server-cluster
printf '%s: OK\n' "$check_name"
