#!/usr/bin/env bash
# Idempotent OpenBao bootstrap of the local stack: KV v2 at secret/ with the sample secrets,
# the devsecops-app policy, AppRole auth and the devsecops-app role. Uses the admin token of
# the state directory. Existing secrets are never overwritten.
set -euo pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

POLICY_NAME="devsecops-app"
POLICY_FILE="${ROOT_DIR}/deploy/vault/policies/devsecops-app.hcl"
ROLE_NAME="devsecops-app"

usage() {
    cat <<EOF
Usage: scripts/bootstrap.sh [STATE_DIR]   (default: .stack)

Configures the running, unsealed OpenBao of STATE_DIR with STATE_DIR/admin-token:
  - KV v2 secrets engine at secret/
  - sample secrets secret/app/database and secret/app/api (only when absent)
  - policy ${POLICY_NAME} from deploy/vault/policies/devsecops-app.hcl
  - AppRole auth at approle/ and role ${ROLE_NAME}; role_id written to STATE_DIR/approle/role-id
Safe to run again: nothing that exists is recreated, operator edits to secrets are kept.
EOF
}

case "${1:-}" in
-h | --help)
    usage
    exit 0
    ;;
-*)
    usage >&2
    exit 2
    ;;
esac
(($# <= 1)) || {
    usage >&2
    exit 2
}

STATE_DIR="${1:-${ROOT_DIR}/.stack}"
[[ -d "${STATE_DIR}" ]] || die "state directory ${STATE_DIR} does not exist (start the stack first)"
STATE_DIR="$(cd "${STATE_DIR}" && pwd)"

step "Bootstrapping OpenBao at $(bao_addr "${STATE_DIR}")"
[[ "$(bao_health_code "${STATE_DIR}")" == "200" ]] ||
    die "OpenBao is not active (sys/health $(bao_health_code "${STATE_DIR}")): start and unseal it first"

# --- KV v2 at secret/ --------------------------------------------------------------------------

kv_version="$(bao_admin "${STATE_DIR}" secrets list -format=json | python3 -c '
import json, sys
m = json.loads(sys.stdin.read()).get("secret/")
if m is None:
    print("none")
elif m.get("type") != "kv":
    print("other:" + str(m.get("type")))
else:
    print((m.get("options") or {}).get("version", "1"))
')"
case "${kv_version}" in
none)
    step "Enabling KV v2 at secret/"
    bao_admin "${STATE_DIR}" secrets enable -path=secret -version=2 kv >/dev/null
    ;;
2) info "KV v2 already enabled at secret/" ;;
1)
    step "Upgrading the KV engine at secret/ to version 2"
    bao_admin "${STATE_DIR}" kv enable-versioning secret/ >/dev/null
    ;;
*) die "secret/ is mounted with an unexpected engine (${kv_version#other:}); expected kv v2" ;;
esac

# KV v2 finishes its upgrade asynchronously after mounting; wait until it accepts reads.
kv_ready() {
    local rc=0
    bao_admin "${STATE_DIR}" kv metadata get secret/app/database >/dev/null 2>&1 || rc=$?
    [[ ${rc} == 0 || ${rc} == 2 ]]
}
wait_for 30 kv_ready || die "KV v2 at secret/ does not answer"

# --- Sample secrets (documented throw-away values of the local stack) --------------------------

# seed_secret <path> <key=value...>: writes the secret only when it has no metadata yet.
seed_secret() {
    local path="$1" rc=0
    shift
    bao_admin "${STATE_DIR}" kv metadata get "${path}" >/dev/null 2>&1 || rc=$?
    case "${rc}" in
    0) info "${path} already exists, left unchanged" ;;
    2)
        step "Writing sample secret ${path}"
        bao_admin "${STATE_DIR}" kv put "${path}" "$@" >/dev/null
        ;;
    *) die "could not read the metadata of ${path} (bao exit code ${rc})" ;;
    esac
}

seed_secret secret/app/database \
    host=postgresql.example.com port=5432 username=app_user password=secure_password_123
seed_secret secret/app/api \
    endpoint=https://api.example.com api_key=sample_api_key_123

# --- Policy ------------------------------------------------------------------------------------

[[ -f "${POLICY_FILE}" ]] || die "policy file ${POLICY_FILE} is missing"
step "Writing policy ${POLICY_NAME}"
bao_admin "${STATE_DIR}" policy write "${POLICY_NAME}" "${POLICY_FILE}" >/dev/null

# --- AppRole -----------------------------------------------------------------------------------

bao_ensure_auth "${STATE_DIR}" approle approle

step "Writing AppRole role ${ROLE_NAME}"
bao_admin "${STATE_DIR}" write "auth/approle/role/${ROLE_NAME}" \
    token_policies="${POLICY_NAME}" \
    token_no_default_policy=true \
    token_ttl=1h \
    token_max_ttl=24h \
    secret_id_num_uses=0 \
    secret_id_ttl=0 \
    secret_id_bound_cidrs=127.0.0.1/32 \
    token_bound_cidrs=127.0.0.1/32 >/dev/null

mkdir -p "${STATE_DIR}/approle"
chmod 0700 "${STATE_DIR}/approle"
role_id="$(bao_admin "${STATE_DIR}" read -field=role_id "auth/approle/role/${ROLE_NAME}/role-id")"
[[ -n "${role_id}" ]] || die "could not read the role_id of ${ROLE_NAME}"
(
    umask 077
    printf '%s\n' "${role_id}" >"${STATE_DIR}/approle/role-id.tmp"
)
mv -f "${STATE_DIR}/approle/role-id.tmp" "${STATE_DIR}/approle/role-id"
info "role_id written to ${STATE_DIR}/approle/role-id"
step "Bootstrap complete"
