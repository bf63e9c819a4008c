#!/usr/bin/env bash
# The kustomize overlays render, validate and run: renders deploy/kubernetes/overlays/
# client-cluster and server-cluster (and server-cluster with the cert-manager component)
# with `kubectl kustomize`, with credentials from the image's own `certs` command;
# validates every built-in object against the Kubernetes 1.32 and 1.37 API schemas
# (kubernetes-validate --strict, offline) and proves the validator rejects a bad field;
# runs checkov on the rendered manifests (findings fixed, or skipped with a written
# reason in the manifests); checks that Deployment, strait.toml, Secrets, Service,
# NetworkPolicy, PDB, HPA and Certificate agree (e2e/deploy/manifests.py policy: probes on
# the health port, scrape annotations on the metrics port, the admin port on loopback and
# exposed nowhere, the workload-label env, grace > preStop + drain_delay + drain_timeout);
# then runs each rendered pod the way the kubelet would: its command, args and env (the
# downward API resolved), its ConfigMap and Secrets in kubelet layout at their mount
# paths, as 65532 on a read-only root with no capabilities, in a network namespace of its
# own. There `check` passes; the probes answer on the health port and the scrape on the
# metrics port, which serve nothing else; the process listens off loopback on exactly the
# containerPorts and on loopback only for the admin port; on SIGTERM readiness fails at
# once, the listeners still accept until drain_delay has passed, and the pod exits 0
# within its grace period.
# Every tool runs in a network namespace without network (they must work offline).
source "$(dirname "$0")/../deploy/checks-lib.sh"

need_apt podman podman runc runc curl curl nsenter util-linux
need_venv
export CONTAINERS_CONF=$PWD/e2e/deploy/containers.conf
py=$VENV/bin/python
kubectl=$VENV/bin/kubectl

work=$(mktemp -d /tmp/strait-k8s-check.XXXXXX)
containers=()
image=""
cleanup() {
  local rc=$?
  for c in "${containers[@]}"; do
    [ $rc -ne 0 ] && { echo "--- logs of $c" >&2; podman logs "$c" 2>&1 | tail -20 >&2 || true; }
    podman rm -f -t 0 "$c" >/dev/null 2>&1 || true
  done
  [ -n "$image" ] && podman rmi -f "$image" >/dev/null 2>&1
  rm -rf "$work"
  exit $rc
}
trap cleanup EXIT

# A tag of this run's own: the default tag is shared by every checkout on the machine.
step "building the image offline"
image=$(e2e/deploy/build-image.sh "localhost/strait:k8s-check-$$" | tail -1)
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
step "the validator rejects what it should (an unknown field, a containerPort that is no number)"
sed 's/^  revisionHistoryLimit:/  revisionHistoryLimits:/' "$work/split/client-cluster/core.yaml" >"$work/bad.yaml"
grep -q revisionHistoryLimits "$work/bad.yaml" || fail "could not make the bad manifest"
if offline "$VENV/bin/kubernetes-validate" --strict --quiet -k 1.32.0 "$work/bad.yaml" >/dev/null 2>&1; then
  fail "kubernetes-validate accepted an unknown field: it validates nothing"
fi
sed 's/containerPort: 15090$/containerPort: "fifteen-thousand"/' "$work/split/client-cluster/core.yaml" >"$work/bad-type.yaml"
grep -q fifteen-thousand "$work/bad-type.yaml" || fail "could not make the bad manifest (no containerPort 15090 rendered?)"
if offline "$VENV/bin/kubernetes-validate" --strict --quiet -k 1.32.0 "$work/bad-type.yaml" >/dev/null 2>&1; then
  fail "kubernetes-validate accepted a containerPort that is not a number: it checks no types"
fi

step "checkov (kubernetes framework, offline)"
mkdir "$work/checkov"
cp "$work/rendered/"*.yaml "$work/checkov/"
offline "$VENV/bin/checkov" -d "$work/checkov" --framework kubernetes --skip-download --compact --quiet \
  >"$work/checkov.txt" 2>&1 || { cat "$work/checkov.txt" >&2; fail "checkov found problems in the rendered manifests"; }
grep -E 'Passed checks' "$work/checkov.txt" || fail "checkov ran no check: $(cat "$work/checkov.txt")"

step "Deployment, strait.toml, Secrets, Service, NetworkPolicy, PDB, HPA and Certificate agree"
for overlay in client-cluster server-cluster server-cluster-cert-manager; do
  offline "$py" e2e/deploy/manifests.py policy "$work/rendered/$overlay.yaml" || fail "overlays/$overlay is inconsistent"
done

step "the policy finds seeded mistakes"
sed -e 's|^    address = "127.0.0.1:15000"$|    address = "0.0.0.0:15000"\n    allow_remote = true|' \
  -e 's|prometheus.io/port: "15090"|prometheus.io/port: "15021"|' \
  -e 's|terminationGracePeriodSeconds: 45|terminationGracePeriodSeconds: 35|' \
  -e 's|^    - port: 15090$|    - port: 15000|' \
  -e 's|fieldPath: metadata.namespace|fieldPath: spec.nodeName|' "$work/rendered/client-cluster.yaml" >"$work/seeded.yaml"
out=$(offline "$py" e2e/deploy/manifests.py policy "$work/seeded.yaml" 2>&1) && fail "the policy passed seeded mistakes"
for expected in "[admin] 0.0.0.0:15000 is not on loopback" "[admin] allow_remote is set" "prometheus.io/port 15021 is not the metrics port 15090" \
  "terminationGracePeriodSeconds 35 <= preStop 0 + drain_delay 5 + drain_timeout 30" "the NetworkPolicy admits the admin port 15000" \
  "POD_NAMESPACE is not the downward API's metadata.namespace"; do
  grep -qF "$expected" <<<"$out" || fail "the policy missed: $expected (it said: $out)"
done
# The command line overrides [admin] and is not held to allow_remote: the policy reads it too.
sed 's|^\( *\)- --config$|\1- --admin-address\n\1- 0.0.0.0:15000\n\1- --config|' "$work/rendered/client-cluster.yaml" >"$work/seeded-args.yaml"
grep -qx -- ' *- 0.0.0.0:15000' "$work/seeded-args.yaml" || fail "could not seed --admin-address (args rendered differently?)"
out=$(offline "$py" e2e/deploy/manifests.py policy "$work/seeded-args.yaml" 2>&1) && fail "the policy passed --admin-address 0.0.0.0:15000"
grep -qF "[admin] 0.0.0.0:15000 is not on loopback" <<<"$out" || fail "the policy missed --admin-address 0.0.0.0:15000 (it said: $out)"

# in_pod PID CMD...: CMD in the pod's network namespace (its loopback is the pod's).
in_pod() {
  local pid=$1
  shift
  nsenter -t "$pid" -n "$@"
}
# http_code PID PORT PATH: the status a GET of 127.0.0.1:PORT/PATH answers inside the pod.
http_code() {
  in_pod "$1" curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$2$3" || true
}
# answers CODE PID PORT PATH: that GET answers CODE.
answers() {
  [ "$(http_code "$2" "$3" "$4")" = "$1" ]
}
# accepts PID PORT: a TCP connect to 127.0.0.1:PORT inside the pod succeeds.
accepts() {
  in_pod "$1" timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$2" 2>/dev/null
}

# run_pod OVERLAY: the rendered Deployment's container, as the kubelet would run it.
run_pod() {
  local overlay=$1 name="strait-pod-$1-$$" volumes="$work/volumes/$1"
  mkdir -p "$volumes"
  # The kubelet always writes a resolv.conf (the cluster DNS); here, loopback of the pod's own namespace.
  printf 'nameserver 127.0.0.1\nsearch strait.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n' >"$work/resolv-$1.conf"
  chmod 644 "$work/resolv-$1.conf"
  local plan
  plan=$("$py" e2e/deploy/manifests.py pod "$work/rendered/$overlay.yaml" "$volumes") || fail "$overlay: cannot lay out the pod"
  local command="" args=() mounts=(-v "$work/resolv-$1.conf:/etc/resolv.conf:ro") env=() env_text=() ports=()
  local ready_port="" ready_path="" live_port="" live_path="" metrics_port="" metrics_path="" admin="" drain_delay="" grace="" key rest
  while read -r key rest; do
    case $key in
      COMMAND) command=$rest ;;
      ARGS) read -r -a args <<<"$rest" ;;
      MOUNT) mounts+=(-v "${rest% *}:${rest#* }:ro") ;;
      ENV) env+=(-e "${rest%% *}=${rest#* }") env_text+=("${rest%% *}=${rest#* }") ;;
      PORT) ports+=("$rest") ;;
      READY) ready_port=${rest% *} ready_path=${rest#* } ;;
      LIVE) live_port=${rest% *} live_path=${rest#* } ;;
      METRICS) metrics_port=${rest% *} metrics_path=${rest#* } ;;
      ADMIN) admin=$rest ;;
      DRAIN_DELAY) drain_delay=$rest ;;
      GRACE) grace=$rest ;;
      *) fail "$overlay: manifests.py pod printed an unknown line: $key $rest" ;;
    esac
  done <<<"$plan"
  [ -n "$command" ] && [ -n "$ready_port" ] && [ -n "$metrics_port" ] && [ -n "$admin" ] && [ -n "$grace" ] ||
    fail "$overlay: the pod plan lacks a command, probe, scrape, admin port or grace period: $plan"
  step "$overlay: $command check ${args[*]}"
  podman --runtime runc run --rm --network none --read-only --cap-drop ALL --security-opt no-new-privileges \
    "${mounts[@]}" "${env[@]}" --entrypoint "$command" "$image" check "${args[@]}" || fail "$overlay: the rendered strait.toml does not pass check"

  step "$overlay: running the pod (own network namespace; ${env_text[*]})"
  containers+=("$name")
  podman --runtime runc run -d --name "$name" --network none --read-only --cap-drop ALL --security-opt no-new-privileges \
    "${mounts[@]}" "${env[@]}" --entrypoint "$command" "$image" "${args[@]}" >/dev/null
  local pid
  pid=$(podman inspect "$name" --format '{{.State.Pid}}')
  [ "$pid" -gt 0 ] || fail "$overlay: the pod is not running"
  wait_until 30 "$overlay: readiness probe :$ready_port$ready_path" in_pod "$pid" curl -fsS "http://127.0.0.1:$ready_port$ready_path"
  in_pod "$pid" curl -fsS -m 2 "http://127.0.0.1:$live_port$live_path" >/dev/null || fail "$overlay: the liveness probe :$live_port$live_path fails"

  step "$overlay: the scrape :$metrics_port$metrics_path, and each port serves only its own paths"
  in_pod "$pid" curl -fsS -m 2 "http://127.0.0.1:$metrics_port$metrics_path" >"$work/scrape-$1.txt" || fail "$overlay: no scrape at :$metrics_port$metrics_path"
  grep -q '^strait_certificate_not_after_seconds{' "$work/scrape-$1.txt" || fail "$overlay: the scrape has no strait_certificate_not_after_seconds series"
  local code
  for probe in "$metrics_port /config_dump" "$metrics_port $ready_path" "$ready_port /config_dump" "$ready_port $metrics_path" "$ready_port /logging"; do
    code=$(http_code "$pid" $probe)
    [ "$code" = 404 ] || fail "$overlay: GET :${probe/ /} answers $code, not 404: the port serves more than its own paths"
  done
  code=$(in_pod "$pid" curl -s -o /dev/null -m 2 -w '%{http_code}' "http://$admin/config_dump" || true)
  [ "$code" = 200 ] || fail "$overlay: the admin port $admin does not serve /config_dump ($code)"

  step "$overlay: listening off loopback on exactly the containerPorts (${ports[*]}), the admin port on loopback only"
  local sockets expected
  sockets=$("$py" e2e/deploy/manifests.py listening "/proc/$pid/net/tcp" "/proc/$pid/net/tcp6" | sort -u)
  expected=$( { printf '0.0.0.0:%s\n' "${ports[@]}"; echo "$admin"; } | sort -u)
  [ "$sockets" = "$expected" ] || fail "$overlay: the pod listens on
$sockets
but its containerPorts and loopback admin port are
$expected"
  [[ $admin == 127.* ]] || fail "$overlay: the admin port $admin is not on loopback"

  # SIGTERM as the kubelet sends it at once (no preStop): readiness fails at once, the
  # listeners keep accepting for drain_delay, then the process exits 0 within the grace period.
  local listener_port
  listener_port=$(printf '%s\n' "${ports[@]}" | grep -vxE "$ready_port|$metrics_port" | head -1)
  step "$overlay: SIGTERM: readiness 503, :$listener_port accepting for drain_delay ${drain_delay}s, exit 0 within ${grace}s"
  local start=$SECONDS
  podman kill --signal TERM "$name" >/dev/null
  wait_until 2 "$overlay: readiness answering 503 after SIGTERM" answers 503 "$pid" "$ready_port" "$ready_path"
  if [ "${drain_delay%.*}" -ge 2 ]; then
    accepts "$pid" "$listener_port" || fail "$overlay: :$listener_port refused a connection $((SECONDS - start))s after SIGTERM, inside the ${drain_delay}s drain_delay"
  fi
  local code_file="$work/exit-$1"
  timeout $((grace - (SECONDS - start))) podman wait "$name" >"$code_file" 2>/dev/null ||
    fail "$overlay: still running ${grace}s after SIGTERM (terminationGracePeriodSeconds): the kubelet would SIGKILL it"
  local elapsed=$((SECONDS - start))
  [ "$(tail -1 "$code_file")" = 0 ] || fail "$overlay: exited $(tail -1 "$code_file") after SIGTERM"
  [ "$elapsed" -ge "${drain_delay%.*}" ] || fail "$overlay: exited ${elapsed}s after SIGTERM, before the ${drain_delay}s drain_delay"
  step "$overlay: SIGTERM -> exit 0 in ${elapsed}s (drain_delay ${drain_delay}s, grace ${grace}s)"
}
run_pod client-cluster
run_pod server-cluster
printf '%s: OK\n' "$check_name"
