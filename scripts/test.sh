#!/usr/bin/env bash
# The `make test` runner: starts a throw-away OpenBao (server mode, TLS, raft, file audit) on
# free loopback ports under target/test-stack, runs the whole workspace's tests with
# cargo-nextest against it, and stops it again on every exit path.
set -euo pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TEST_DIR="${ROOT_DIR}/target/test-stack"

usage() {
    cat <<EOF
Usage: scripts/test.sh [nextest arguments...]

Runs scripts/setup.sh, starts a throw-away OpenBao in ${TEST_DIR#"${ROOT_DIR}/"} on free ports,
then: cargo nextest run --workspace --no-fail-fast [nextest arguments...]
The exit code is nextest's. OpenBao is stopped at the end, also on failure or Ctrl-C.

The tests get, in their environment:
  TEST_BAO_ADDR       https://127.0.0.1:<port>
  TEST_BAO_CACERT     CA that signed the server certificate
  TEST_BAO_TOKEN      root token
  TEST_BAO_AUDIT_LOG  file audit log of the server
  TEST_WRONG_CACERT   an unrelated CA (for TLS failure tests)
  TEST_BAO_BIN        absolute path of the bao binary (for tests that run their own server)
  TEST_BAO_DIR        the state directory of the shared server
  TEST_BAO_MTLS_ADDR  a second listener of that server that requires a client certificate
  TEST_CLIENT_CERT    a client certificate (and TEST_CLIENT_KEY its key) it accepts
AppRole auth is enabled at approle/; tests create their own mounts, policies and roles.

Examples:
  scripts/test.sh
  scripts/test.sh -p vault-secrets
  scripts/test.sh -E 'test(approle)'
EOF
}

case "${1:-}" in
-h | --help)
    usage
    exit 0
    ;;
esac

# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -f "${TEST_DIR}/pids/bao.pid" ]]; then
        stop_pid "${TEST_DIR}/pids/bao.pid" "test OpenBao"
    fi
    exit "${rc}"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"${ROOT_DIR}/scripts/setup.sh"

# One run at a time per checkout: a second run waits instead of wiping the first one's server.
mkdir -p "${ROOT_DIR}/target"
exec 9>"${ROOT_DIR}/target/test-stack.lock"
if ! flock -n 9; then
    step "Another test run holds ${TEST_DIR}: waiting for it (up to 30 min)"
    flock -w 1800 9 || die "the other test run did not finish within 30 minutes"
fi

# A server left over by a run that was killed with SIGKILL: stop it before wiping its directory.
if [[ -f "${TEST_DIR}/pids/bao.pid" ]]; then
    stop_pid "${TEST_DIR}/pids/bao.pid" "leftover test OpenBao"
fi
step "Preparing ${TEST_DIR}"
rm -rf "${TEST_DIR}"
mkdir -p "${TEST_DIR}"

mapfile -t ports < <(free_ports 3)
((${#ports[@]} == 3)) || die "could not find three free ports"

bao_tls "${TEST_DIR}"
make_ca "${TEST_DIR}/wrong-ca.pem" "${TEST_DIR}/wrong-ca-key.pem" "unrelated test CA"
bao_client_cert "${TEST_DIR}"
bao_config "${TEST_DIR}" "${ports[0]}" "${ports[1]}" "${ports[2]}"
bao_start "${TEST_DIR}"
bao_init_unseal "${TEST_DIR}"
bao_ensure_auth "${TEST_DIR}" approle approle

TEST_BAO_ADDR="$(bao_addr "${TEST_DIR}")"
read -r TEST_BAO_TOKEN <"${TEST_DIR}/admin-token"
export TEST_BAO_ADDR TEST_BAO_TOKEN
export TEST_BAO_CACERT="${TEST_DIR}/tls/ca.pem"
export TEST_BAO_AUDIT_LOG="${TEST_DIR}/logs/audit.log"
export TEST_WRONG_CACERT="${TEST_DIR}/wrong-ca.pem"
export TEST_BAO_BIN="${BAO_BIN}"
export TEST_BAO_DIR="${TEST_DIR}"
export TEST_BAO_MTLS_ADDR="https://127.0.0.1:${ports[2]}"
export TEST_CLIENT_CERT="${TEST_DIR}/tls/client.pem"
export TEST_CLIENT_KEY="${TEST_DIR}/tls/client-key.pem"
# The tests must only see the servers they are given.
unset VAULT_TOKEN BAO_TOKEN VAULT_ADDR BAO_ADDR VAULT_CACERT BAO_CACERT

step "cargo nextest run --workspace --no-fail-fast${*:+ $*} (OpenBao at ${TEST_BAO_ADDR})"
rc=0
(cd "${ROOT_DIR}" && cargo nextest run --workspace --no-fail-fast "$@") || rc=$?
if ((rc == 0)); then
    step "Tests passed"
else
    step "Tests failed (nextest exit code ${rc}); OpenBao log: ${TEST_DIR}/logs/bao.log"
fi
exit "${rc}"
