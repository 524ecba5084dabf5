#!/usr/bin/env bash
# Runs the OpenBao CLI (.tools/bin/bao) against the local stack with its admin token.
#   scripts/vault.sh kv get secret/app/database
set -euo pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

STACK_DIR="${ROOT_DIR}/.stack"

usage() {
    cat <<EOF
Usage: scripts/vault.sh <bao arguments...>

Runs ${BAO_BIN#"${ROOT_DIR}/"} against the local stack (address and CA from .stack/) with the
admin token in .stack/admin-token. Examples:
  scripts/vault.sh kv list secret/app/
  scripts/vault.sh kv get secret/app/database
  scripts/vault.sh policy read devsecops-app
EOF
}

case "${1:-}" in
-h | --help)
    usage
    exit 0
    ;;
"")
    usage >&2
    exit 2
    ;;
esac

[[ -f "${STACK_DIR}/bao/addr" && -s "${STACK_DIR}/admin-token" ]] ||
    die "no initialised local stack in ${STACK_DIR}: run make start first"
bao_admin "${STACK_DIR}" "$@"
