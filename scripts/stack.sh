#!/usr/bin/env bash
# The local stack: OpenBao (server mode, TLS, raft, file audit) and the devsecops-app, run
# natively under .stack/. See `scripts/stack.sh --help`.
set -euo pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

STACK_DIR="${ROOT_DIR}/.stack"
BAO_PORT="${BAO_PORT:-8200}"
BAO_CLUSTER_PORT="$((BAO_PORT + 1))"
APP_PORT="${APP_PORT:-5000}"
APP_URL="http://127.0.0.1:${APP_PORT}"
APP_BIN="${ROOT_DIR}/target/release/devsecops-app"
APP_PID="${STACK_DIR}/pids/app.pid"
BAO_PID="${STACK_DIR}/pids/bao.pid"
APP_LOG="${STACK_DIR}/logs/app.log"
BAO_LOG="${STACK_DIR}/logs/bao.log"
ROLE_NAME="devsecops-app"

usage() {
    cat <<EOF
Usage: scripts/stack.sh <command>

Commands:
  start         set up (if needed), build the app, start OpenBao, initialise/unseal it,
                bootstrap it and start the app; a no-op when everything is up
  stop          stop the app and OpenBao (by pid file)
  restart       stop, then start
  status        running/stopped for each process, OpenBao seal state
  destroy       stop, then delete .stack/ (all data, keys and tokens)
  health        app /health and /ready, OpenBao sys/health
  vault-status  bao status
  vault-init    run the OpenBao bootstrap again (scripts/bootstrap.sh)
  vault-shell   interactive bash with BAO_ADDR/VAULT_ADDR, CA and admin token exported
  logs          follow app.log and bao.log (LOGS_FOLLOW=0 only prints the last lines)
  logs-app      follow app.log
  logs-vault    follow bao.log

Environment:
  BAO_PORT  OpenBao API port (default 8200; the cluster port is BAO_PORT+1)
  APP_PORT  app port (default 5000)

State lives in .stack/ (git-ignored); source .stack/env for BAO_ADDR, VAULT_ADDR, APP_URL.
EOF
}

[[ "${BAO_PORT}" =~ ^[0-9]+$ ]] || die "BAO_PORT must be a number (got '${BAO_PORT}')"
[[ "${APP_PORT}" =~ ^[0-9]+$ ]] || die "APP_PORT must be a number (got '${APP_PORT}')"

# --- helpers -----------------------------------------------------------------------------------

bao_running() { pid_alive "${BAO_PID}"; }
app_running() { pid_alive "${APP_PID}"; }

write_env_file() {
    local addr ca
    addr="https://127.0.0.1:${BAO_PORT}"
    ca="${STACK_DIR}/tls/ca.pem"
    {
        echo "# Written by scripts/stack.sh start. Use: source .stack/env"
        printf 'export BAO_ADDR=%q\n' "${addr}"
        printf 'export BAO_CACERT=%q\n' "${ca}"
        printf 'export VAULT_ADDR=%q\n' "${addr}"
        printf 'export VAULT_CACERT=%q\n' "${ca}"
        printf 'export APP_URL=%q\n' "${APP_URL}"
    } >"${STACK_DIR}/env.tmp"
    mv -f "${STACK_DIR}/env.tmp" "${STACK_DIR}/env"
}

app_health_code() {
    curl -s -o /dev/null -w '%{http_code}' --max-time 2 "${APP_URL}/health" 2>/dev/null || true
}
_app_healthy() { [[ "$(app_health_code)" == "200" ]]; }

# A fresh response-wrapped secret_id for the app; only the wrapping token is stored.
write_wrapped_secret_id() {
    local token
    step "Issuing a fresh response-wrapped secret_id (wrap TTL 300 s)"
    token="$(bao_admin "${STACK_DIR}" write -wrap-ttl=300s -f -field=wrapping_token \
        "auth/approle/role/${ROLE_NAME}/secret-id")" || die "could not issue a secret_id"
    [[ -n "${token}" ]] || die "OpenBao returned an empty wrapping token"
    mkdir -p "${STACK_DIR}/approle"
    (
        umask 077
        printf '%s\n' "${token}" >"${STACK_DIR}/approle/secret-id.wrapped.tmp"
    )
    mv -f "${STACK_DIR}/approle/secret-id.wrapped.tmp" "${STACK_DIR}/approle/secret-id.wrapped"
}

start_app() {
    if app_running; then
        info "app already running (pid $(pid_of "${APP_PID}"))"
        return 0
    fi
    [[ -x "${APP_BIN}" ]] || die "${APP_BIN} is missing (the build did not produce it)"
    if port_in_use "${APP_PORT}"; then
        die "port ${APP_PORT} is already in use by another process: set another port (APP_PORT=...)"
    fi
    write_wrapped_secret_id
    step "Starting devsecops-app on ${APP_URL}"
    mkdir -p "${STACK_DIR}/logs" "${STACK_DIR}/pids"
    env -u VAULT_TOKEN -u BAO_TOKEN \
        VAULT_ADDR="https://127.0.0.1:${BAO_PORT}" \
        VAULT_CACERT="${STACK_DIR}/tls/ca.pem" \
        APP_ROLE_ID_FILE="${STACK_DIR}/approle/role-id" \
        APP_SECRET_ID_FILE="${STACK_DIR}/approle/secret-id.wrapped" \
        APP_HOST=127.0.0.1 \
        APP_PORT="${APP_PORT}" \
        APP_LOG_FORMAT=json \
        setsid nohup "${APP_BIN}" >>"${APP_LOG}" 2>&1 </dev/null &
    write_pid "${APP_PID}" "$!"

    local deadline=$((SECONDS + 60))
    until _app_healthy; do
        if ! app_running; then
            tail -n 30 "${APP_LOG}" >&2 || true
            rm -f "${APP_PID}" "${APP_PID}.start"
            die "the app exited during start-up (log above, full log in ${APP_LOG})"
        fi
        if ((SECONDS >= deadline)); then
            tail -n 30 "${APP_LOG}" >&2 || true
            die "the app (pid $(pid_of "${APP_PID}")) is not healthy after 60 s; it is left running: scripts/stack.sh stop"
        fi
        sleep 0.3
    done
    info "app is healthy (pid $(pid_of "${APP_PID}"))"
}

print_summary() {
    cat <<EOF

Stack is up.
  App:      ${APP_URL}  (/health, /ready, /api/secret, /api/config)
  OpenBao:  https://127.0.0.1:${BAO_PORT}  (UI: https://127.0.0.1:${BAO_PORT}/ui)
  CA:       ${STACK_DIR}/tls/ca.pem
  Admin token (root-equivalent): ${STACK_DIR}/admin-token
  Logs:     ${STACK_DIR}/logs/{app.log,bao.log,audit.log}

  Use the CLI:  source .stack/env   (or: make vault-shell)
EOF
}

# --- commands ----------------------------------------------------------------------------------

cmd_start() {
    if [[ ! -x "${BAO_BIN}" ]]; then
        step "OpenBao is not installed yet: running scripts/setup.sh"
        "${ROOT_DIR}/scripts/setup.sh"
    fi
    step "Building devsecops-app (release)"
    (cd "${ROOT_DIR}" && cargo build --release --locked -p devsecops-app) ||
        die "cargo build failed"

    mkdir -p "${STACK_DIR}"
    chmod 0700 "${STACK_DIR}"
    bao_tls "${STACK_DIR}"
    bao_config "${STACK_DIR}" "${BAO_PORT}" "${BAO_CLUSTER_PORT}"
    bao_start "${STACK_DIR}"
    bao_init_unseal "${STACK_DIR}"
    write_env_file
    "${ROOT_DIR}/scripts/bootstrap.sh" "${STACK_DIR}"
    start_app
    print_summary
}

cmd_stop() {
    stop_pid "${APP_PID}" "app"
    stop_pid "${BAO_PID}" "OpenBao"
}

cmd_destroy() {
    cmd_stop
    if [[ -d "${STACK_DIR}" ]]; then
        step "Deleting ${STACK_DIR}"
        rm -rf "${STACK_DIR}"
    else
        info "${STACK_DIR} does not exist"
    fi
}

cmd_status() {
    local state
    if bao_running; then
        if [[ -f "${STACK_DIR}/bao/addr" ]]; then
            state="initialized=$(bao_seal_field "${STACK_DIR}" initialized), sealed=$(bao_seal_field "${STACK_DIR}" sealed)"
        else
            state="address unknown"
        fi
        printf '%-9s %-8s pid %-8s %s (%s)\n' "OpenBao" "running" "$(pid_of "${BAO_PID}")" \
            "$(bao_addr "${STACK_DIR}")" "${state}"
    else
        printf '%-9s %s\n' "OpenBao" "stopped"
    fi
    if app_running; then
        printf '%-9s %-8s pid %-8s %s (/health %s)\n' "app" "running" "$(pid_of "${APP_PID}")" \
            "${APP_URL}" "$(app_health_code)"
    else
        printf '%-9s %s\n' "app" "stopped"
    fi
}

# show_endpoint <label> <url> [curl args...]: status code and pretty-printed body.
show_endpoint() {
    local label="$1" url="$2" body code
    shift 2
    body="$(curl -s --max-time 5 -w '\n%{http_code}' "$@" "${url}" 2>/dev/null)" || true
    code="${body##*$'\n'}"
    body="${body%$'\n'*}"
    [[ "${code}" =~ ^[0-9]{3}$ ]] || code="000"
    if [[ "${code}" == "000" ]]; then
        printf '%s  %s -> no answer\n' "${label}" "${url}"
        return 1
    fi
    printf '%s  %s -> HTTP %s\n' "${label}" "${url}" "${code}"
    if [[ -n "${body}" ]]; then
        python3 -m json.tool <<<"${body}" 2>/dev/null | sed 's/^/    /' || printf '    %s\n' "${body}"
    fi
    [[ "${code}" == 2* ]]
}

cmd_health() {
    local rc=0
    show_endpoint "app    " "${APP_URL}/health" || rc=1
    show_endpoint "app    " "${APP_URL}/ready" || rc=1
    show_endpoint "OpenBao" "https://127.0.0.1:${BAO_PORT}/v1/sys/health" \
        --cacert "${STACK_DIR}/tls/ca.pem" || rc=1
    return "${rc}"
}

require_stack() {
    [[ -f "${STACK_DIR}/bao/addr" && -f "${STACK_DIR}/tls/ca.pem" ]] ||
        die "no local stack in ${STACK_DIR}: run scripts/stack.sh start (make start) first"
}

cmd_vault_status() {
    require_stack
    bao_cli "${STACK_DIR}" status
}

cmd_vault_init() {
    require_stack
    "${ROOT_DIR}/scripts/bootstrap.sh" "${STACK_DIR}"
}

cmd_vault_shell() {
    require_stack
    [[ -s "${STACK_DIR}/admin-token" ]] || die "no admin token in ${STACK_DIR}/admin-token"
    local addr token
    addr="$(bao_addr "${STACK_DIR}")"
    read -r token <"${STACK_DIR}/admin-token"
    step "Starting a shell with the admin token of ${addr} (exit to leave)"
    info "try: bao status; bao kv get secret/app/database"
    export BAO_ADDR="${addr}" VAULT_ADDR="${addr}"
    export BAO_CACERT="${STACK_DIR}/tls/ca.pem" VAULT_CACERT="${STACK_DIR}/tls/ca.pem"
    export BAO_TOKEN="${token}" VAULT_TOKEN="${token}"
    export PATH="${TOOLS_BIN}:${PATH}"
    cd "${ROOT_DIR}"
    exec bash -i
}

# show_logs <file...>: tail -F (or only print with LOGS_FOLLOW=0).
show_logs() {
    local f
    for f in "$@"; do
        [[ -e "${f}" ]] || info "${f} does not exist yet"
    done
    if [[ "${LOGS_FOLLOW:-1}" == "0" ]]; then
        local -a existing=()
        for f in "$@"; do
            [[ -e "${f}" ]] && existing+=("${f}")
        done
        ((${#existing[@]} > 0)) || return 0
        tail -n 100 "${existing[@]}"
    else
        exec tail -n 100 -F "$@"
    fi
}

case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop ;;
restart)
    cmd_stop
    cmd_start
    ;;
status) cmd_status ;;
destroy) cmd_destroy ;;
health) cmd_health ;;
vault-status) cmd_vault_status ;;
vault-init) cmd_vault_init ;;
vault-shell) cmd_vault_shell ;;
logs) show_logs "${APP_LOG}" "${BAO_LOG}" ;;
logs-app) show_logs "${APP_LOG}" ;;
logs-vault) show_logs "${BAO_LOG}" ;;
-h | --help | help)
    usage
    exit 0
    ;;
"")
    usage >&2
    exit 2
    ;;
*)
    echo "unknown command: $1" >&2
    usage >&2
    exit 2
    ;;
esac
