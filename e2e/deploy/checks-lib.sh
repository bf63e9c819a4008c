# Sourced by the checks in e2e/checks/: installs what a check needs (Debian packages, the
# pinned Python tools in target/deploy-venv), and gives bounded waits. Every install is
# idempotent and a failed one stops the check with the command that failed. It lives here,
# outside e2e/checks/, because e2e/test.sh runs every e2e/checks/*.sh as a check.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export PATH="$PATH:/usr/sbin:/sbin"
# Terraform must never phone home for its version check.
export CHECKPOINT_DISABLE=1

VENV=target/deploy-venv
check_name=$(basename "$0" .sh)

fail() {
  printf '\nCHECK FAILED (%s): %s\n' "$check_name" "$*" >&2
  exit 1
}
step() { printf '== %s: %s\n' "$check_name" "$*"; }

# need_apt COMMAND PACKAGE [COMMAND PACKAGE ...]: installs each PACKAGE whose COMMAND is missing.
need_apt() {
  local missing=() commands=()
  while [ $# -ge 2 ]; do
    commands+=("$1")
    command -v "$1" >/dev/null 2>&1 || missing+=("$2")
    shift 2
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  step "installing from Debian: ${missing[*]}"
  # Package scripts must not start system services: the checks start their own servers.
  local made_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
    $sudo chmod +x /usr/sbin/policy-rc.d
    made_policy=1
  fi
  local rc=0
  { $sudo apt-get -o DPkg::Lock::Timeout=600 update -qq &&
    DEBIAN_FRONTEND=noninteractive $sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; } || rc=$?
  [ -n "$made_policy" ] && $sudo rm -f /usr/sbin/policy-rc.d
  [ $rc -eq 0 ] || fail "apt-get install ${missing[*]} failed (exit $rc)"
  local cmd
  for cmd in "${commands[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || fail "$cmd is still missing after apt-get install ${missing[*]}"
  done
}

# need_venv: the pinned tools of e2e/deploy/requirements.txt in target/deploy-venv,
# installed only when the venv is missing or the pins changed.
need_venv() {
  local stamp="$VENV/.requirements.txt"
  if [ -x "$VENV/bin/python" ] && cmp -s e2e/deploy/requirements.txt "$stamp"; then
    return 0
  fi
  step "installing the pinned Python tools into $VENV (e2e/deploy/requirements.txt)"
  python3 -m venv "$VENV" || fail "python3 -m venv $VENV failed (apt-get install python3-venv)"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r e2e/deploy/requirements.txt ||
    fail "pip install -r e2e/deploy/requirements.txt failed"
  cp e2e/deploy/requirements.txt "$stamp"
}

# offline CMD...: runs CMD in a new network namespace that has only a loopback that is
# down, so a tool that tries the network fails instead of reaching it.
offline() {
  unshare --net -- "$@"
}

# wait_until SECONDS WHAT CMD...: polls CMD every 0.1 s until it succeeds, or fails the check.
wait_until() {
  local limit=$1 what=$2
  shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || fail "$what: not within ${limit}s"
    sleep 0.1
  done
}
