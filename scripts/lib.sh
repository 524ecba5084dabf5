#!/usr/bin/env bash
# shellcheck shell=bash
#
# Helpers shared by the scripts under scripts/. Source it, do not run it:
#
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# Messages:   step, info, warn, die
# Polling:    wait_for <seconds> <cmd...>
# Processes:  write_pid <file> <pid>, pid_alive <file>, pid_of <file>, stop_pid <file> [name]
# Ports:      port_in_use <port>, free_ports <count>
# OpenBao:    make_ca, bao_tls, bao_config, bao_start, bao_init_unseal, bao_cli, bao_admin,
#             bao_seal_field, bao_ensure_auth
#
# Every OpenBao helper takes a state directory (".stack" for the local stack, a throw-away
# directory for the tests) and keeps everything it writes below it:
#   <dir>/tls/{ca.pem,ca-key.pem,server.pem,server-key.pem}
#   <dir>/bao/{config.hcl,addr,data/}
#   <dir>/logs/{bao.log,audit.log}
#   <dir>/pids/bao.pid
#   <dir>/unseal-key, <dir>/admin-token     (mode 0600)

set -euo pipefail

if [[ "${BASH_SOURCE[0]}" == "${0}" ]]; then
    # Run directly: print the description above (the comment block at the top) and stop.
    sed -n '4,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
    case "${1:-}" in
    -h | --help) exit 0 ;;
    *) exit 2 ;;
    esac
fi

ROOT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS_BIN="${ROOT_DIR}/.tools/bin"
BAO_BIN="${TOOLS_BIN}/bao"
BAO_VERSION="2.7.2"
export ROOT_DIR TOOLS_BIN BAO_BIN BAO_VERSION

# ---------------------------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------------------------

if [[ -t 1 && -z "${NO_COLOR:-}" ]]; then
    _C_STEP=$'\033[1;34m'
    _C_WARN=$'\033[1;33m'
    _C_ERR=$'\033[1;31m'
    _C_OFF=$'\033[0m'
else
    _C_STEP=""
    _C_WARN=""
    _C_ERR=""
    _C_OFF=""
fi

step() { printf '%s==>%s %s\n' "${_C_STEP}" "${_C_OFF}" "$*"; }
info() { printf '    %s\n' "$*"; }
warn() { printf '%swarning:%s %s\n' "${_C_WARN}" "${_C_OFF}" "$*" >&2; }
die() {
    printf '%serror:%s %s\n' "${_C_ERR}" "${_C_OFF}" "$*" >&2
    exit 1
}

# ---------------------------------------------------------------------------------------------
# Polling
# ---------------------------------------------------------------------------------------------

# wait_for <seconds> <cmd...>: runs <cmd...> every 0.2 s until it succeeds (returns 0) or
# <seconds> have passed (returns 1). The command's output is discarded.
wait_for() {
    local timeout="$1"
    shift
    local deadline=$((SECONDS + timeout))
    while true; do
        if "$@" >/dev/null 2>&1; then
            return 0
        fi
        if ((SECONDS >= deadline)); then
            return 1
        fi
        sleep 0.2
    done
}

# ---------------------------------------------------------------------------------------------
# Pid files
#
# A pid file holds one line, the pid. Next to it, "<file>.start" holds the process start time
# (field 22 of /proc/<pid>/stat), so that a pid reused by an unrelated process after a reboot
# or a crash is never taken for ours.
# ---------------------------------------------------------------------------------------------

_proc_start_time() {
    local stat rest
    local -a fields
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    rest="${stat##*) }"
    read -r -a fields <<<"${rest}"
    # fields[0] is field 3 (state) of /proc/<pid>/stat, so field 22 (starttime) is fields[19].
    [[ "${fields[0]}" != "Z" ]] || return 1
    printf '%s\n' "${fields[19]}"
}

# write_pid <file> <pid>
write_pid() {
    local file="$1" pid="$2"
    mkdir -p "$(dirname "${file}")"
    printf '%s\n' "${pid}" >"${file}"
    _proc_start_time "${pid}" >"${file}.start" || true
}

# pid_of <file>: prints the pid stored in <file> (nothing if the file is missing or invalid).
pid_of() {
    local pid=""
    if [[ -f "$1" ]]; then
        read -r pid <"$1" || true
    fi
    [[ "${pid}" =~ ^[0-9]+$ ]] && printf '%s\n' "${pid}"
    return 0
}

# pid_alive <file>: true if the process recorded in <file> is still the one we started.
pid_alive() {
    local file="$1" pid start recorded
    pid="$(pid_of "${file}")"
    [[ -n "${pid}" ]] || return 1
    kill -0 "${pid}" 2>/dev/null || return 1
    start="$(_proc_start_time "${pid}")" || return 1
    if [[ -f "${file}.start" ]]; then
        read -r recorded <"${file}.start" || true
        [[ -z "${recorded}" || "${recorded}" == "${start}" ]] || return 1
    fi
    return 0
}

# stop_pid <file> [name]: SIGTERM the process recorded in <file>, wait up to 10 s, then
# SIGKILL. Removes the pid file. A missing file or a dead process is not an error.
stop_pid() {
    local file="$1" name="${2:-$(basename "$1" .pid)}" pid
    if ! pid_alive "${file}"; then
        if [[ -f "${file}" ]]; then
            info "${name}: not running (removing stale pid file)"
        else
            info "${name}: not running"
        fi
        rm -f "${file}" "${file}.start"
        return 0
    fi
    pid="$(pid_of "${file}")"
    step "Stopping ${name} (pid ${pid})"
    kill -TERM "${pid}" 2>/dev/null || true
    if ! wait_for 10 _pid_gone "${file}"; then
        warn "${name} (pid ${pid}) did not stop within 10 s, sending SIGKILL"
        kill -KILL "${pid}" 2>/dev/null || true
        wait_for 5 _pid_gone "${file}" || warn "${name} (pid ${pid}) is still there"
    fi
    rm -f "${file}" "${file}.start"
}

_pid_gone() { ! pid_alive "$1"; }

# ---------------------------------------------------------------------------------------------
# Ports
# ---------------------------------------------------------------------------------------------

# port_in_use <port>: true if something accepts TCP connections on 127.0.0.1:<port>.
port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# free_ports <count>: prints <count> distinct free loopback ports, one per line.
free_ports() {
    python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
for s in socks:
    print(s.getsockname()[1])
for s in socks:
    s.close()
PY
}

# ---------------------------------------------------------------------------------------------
# OpenBao
# ---------------------------------------------------------------------------------------------

# _abs_dir <dir>: creates <dir> if needed and prints its absolute path.
_abs_dir() {
    mkdir -p "$1"
    (cd "$1" && pwd)
}

_require_bao() {
    [[ -x "${BAO_BIN}" ]] || die "${BAO_BIN} is missing: run scripts/setup.sh (make setup) first"
}

# make_ca <cert.pem> <key.pem> <common name>: a self-signed EC P-256 CA, valid 10 years.
# bao_client_cert <dir>: a client certificate signed by <dir>/tls/ca.pem, for TLS client
# authentication (<dir>/tls/client.pem and client-key.pem).
bao_client_cert() {
    local tls
    tls="$(_abs_dir "$1")/tls"
    (
        umask 077
        printf 'extendedKeyUsage = clientAuth\nbasicConstraints = critical, CA:FALSE\n' >"${tls}/client.ext"
        openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
            -keyout "${tls}/client-key.pem" -out "${tls}/client.csr" -subj "/CN=devsecops-app" 2>/dev/null
        openssl x509 -req -in "${tls}/client.csr" -CA "${tls}/ca.pem" -CAkey "${tls}/ca-key.pem" \
            -set_serial "0x$(openssl rand -hex 16)" -days 30 -sha256 \
            -extfile "${tls}/client.ext" -out "${tls}/client.pem" 2>/dev/null
    ) || die "openssl could not create the client certificate in ${tls}"
    rm -f "${tls}/client.csr" "${tls}/client.ext"
}

make_ca() {
    local cert="$1" key="$2" cn="$3"
    (
        umask 077
        openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
            -keyout "${key}" -out "${cert}" -days 3650 -subj "/CN=${cn}" \
            -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
            -addext "keyUsage=critical,keyCertSign,cRLSign" \
            -addext "subjectKeyIdentifier=hash" 2>/dev/null
    ) || die "openssl could not create the CA ${cert}"
    chmod 0600 "${key}"
    chmod 0644 "${cert}"
}

# bao_tls <dir>: a local CA and a server certificate for 127.0.0.1 / localhost signed by it,
# under <dir>/tls. Does nothing when they already exist.
bao_tls() {
    local dir tls
    dir="$(_abs_dir "$1")"
    tls="${dir}/tls"
    if [[ -s "${tls}/ca.pem" && -s "${tls}/server.pem" && -s "${tls}/server-key.pem" ]]; then
        info "TLS certificates already present in ${tls}"
        return 0
    fi
    step "Creating a local CA and an OpenBao server certificate in ${tls}"
    mkdir -p "${tls}"
    chmod 0700 "${tls}"
    make_ca "${tls}/ca.pem" "${tls}/ca-key.pem" "devsecops-vault local CA"
    (
        umask 077
        cat >"${tls}/server.ext" <<'EOF'
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
EOF
        openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
            -keyout "${tls}/server-key.pem" -out "${tls}/server.csr" \
            -subj "/CN=localhost" 2>/dev/null
        openssl x509 -req -in "${tls}/server.csr" -CA "${tls}/ca.pem" -CAkey "${tls}/ca-key.pem" \
            -set_serial "0x$(openssl rand -hex 16)" -days 825 -sha256 \
            -extfile "${tls}/server.ext" -out "${tls}/server.pem" 2>/dev/null
    ) || die "openssl could not create the server certificate in ${tls}"
    rm -f "${tls}/server.csr" "${tls}/server.ext"
    chmod 0600 "${tls}/server-key.pem"
    chmod 0644 "${tls}/server.pem"
    openssl verify -CAfile "${tls}/ca.pem" "${tls}/server.pem" >/dev/null ||
        die "the new server certificate does not verify against ${tls}/ca.pem"
}

# bao_config <dir> <api_port> <cluster_port>: writes <dir>/bao/config.hcl (server mode, raft
# storage, TLS listener on 127.0.0.1, file audit device) and <dir>/bao/addr.
bao_config() {
    local dir="$1" api_port="$2" cluster_port="$3" mtls_port="${4:-}"
    [[ "${api_port}" =~ ^[0-9]+$ && "${cluster_port}" =~ ^[0-9]+$ && "${mtls_port}" =~ ^[0-9]*$ ]] ||
        die "bao_config: ports must be numbers (got '${api_port}' '${cluster_port}' '${mtls_port}')"
    dir="$(_abs_dir "${dir}")"
    [[ "${dir}" != *[\"\\]* ]] || die "the state directory path must not contain quotes or backslashes: ${dir}"
    mkdir -p "${dir}/bao/data" "${dir}/logs" "${dir}/pids"
    chmod 0700 "${dir}" "${dir}/bao" "${dir}/bao/data"
    cat >"${dir}/bao/config.hcl" <<EOF
# Written by scripts/lib.sh (bao_config). Changes are overwritten on the next start.
# No disable_mlock: OpenBao 2.7 dropped mlock support and warns about the unknown field.
ui            = true
api_addr      = "https://127.0.0.1:${api_port}"
cluster_addr  = "https://127.0.0.1:${cluster_port}"

storage "raft" {
  path    = "${dir}/bao/data"
  node_id = "bao-local-1"
}

listener "tcp" {
  address         = "127.0.0.1:${api_port}"
  cluster_address = "127.0.0.1:${cluster_port}"
  tls_cert_file   = "${dir}/tls/server.pem"
  tls_key_file    = "${dir}/tls/server-key.pem"
  tls_min_version = "tls12"
}

# OpenBao 2.x only accepts audit devices declared in the server configuration.
audit "file" "file" {
  options {
    file_path = "${dir}/logs/audit.log"
  }
}
EOF
    if [[ -n "${mtls_port}" ]]; then
        cat >>"${dir}/bao/config.hcl" <<EOF

# A second listener that requires a client certificate signed by the same CA.
listener "tcp" {
  address                            = "127.0.0.1:${mtls_port}"
  tls_cert_file                      = "${dir}/tls/server.pem"
  tls_key_file                       = "${dir}/tls/server-key.pem"
  tls_min_version                    = "tls12"
  tls_require_and_verify_client_cert = true
  tls_client_ca_file                 = "${dir}/tls/ca.pem"
}
EOF
    fi
    printf 'https://127.0.0.1:%s\n' "${api_port}" >"${dir}/bao/addr"
}

# bao_addr <dir>: the https URL of the OpenBao configured in <dir>.
bao_addr() {
    local addr=""
    [[ -f "$1/bao/addr" ]] && read -r addr <"$1/bao/addr"
    [[ -n "${addr}" ]] || die "no OpenBao address in $1/bao/addr (run bao_config first)"
    printf '%s\n' "${addr}"
}

# bao_cli <dir> <bao args...>: the bao CLI against the server of <dir>, without a token.
bao_cli() {
    local dir="$1"
    shift
    _require_bao
    env -u VAULT_TOKEN -u BAO_TOKEN -u VAULT_ADDR -u VAULT_CACERT -u VAULT_NAMESPACE \
        -u BAO_NAMESPACE -u BAO_CLIENT_CERT -u BAO_CLIENT_KEY -u VAULT_CLIENT_CERT -u VAULT_CLIENT_KEY \
        BAO_ADDR="$(bao_addr "${dir}")" BAO_CACERT="${dir}/tls/ca.pem" "${BAO_BIN}" "$@"
}

# bao_admin <dir> <bao args...>: the bao CLI with the admin (root) token of <dir>.
bao_admin() {
    local dir="$1" token=""
    shift
    [[ -s "${dir}/admin-token" ]] || die "no admin token in ${dir}/admin-token (OpenBao not initialised?)"
    read -r token <"${dir}/admin-token"
    BAO_TOKEN="${token}" bao_cli_with_token "${dir}" "$@"
}

# Same as bao_cli but keeps BAO_TOKEN from the caller's environment.
bao_cli_with_token() {
    local dir="$1"
    shift
    _require_bao
    env -u VAULT_TOKEN -u VAULT_ADDR -u VAULT_CACERT -u VAULT_NAMESPACE -u BAO_NAMESPACE \
        BAO_ADDR="$(bao_addr "${dir}")" BAO_CACERT="${dir}/tls/ca.pem" "${BAO_BIN}" "$@"
}

# _bao_curl <dir> <path> [curl args...]: an unauthenticated request to <addr>/v1/<path>.
_bao_curl() {
    local dir="$1" path="$2"
    shift 2
    curl -sS --max-time 5 --cacert "${dir}/tls/ca.pem" "$@" "$(bao_addr "${dir}")/v1/${path}"
}

# bao_health_code <dir>: the HTTP status of sys/health (200 active, 429 standby, 501 not
# initialised, 503 sealed), or 000 when nothing answers.
bao_health_code() {
    _bao_curl "$1" sys/health -o /dev/null -w '%{http_code}' 2>/dev/null || true
}

_bao_answers() { [[ "$(bao_health_code "$1")" != "000" ]]; }
_bao_active() { [[ "$(bao_health_code "$1")" == "200" ]]; }

# bao_seal_field <dir> <field>: prints a field of sys/seal-status ("initialized", "sealed"...)
# as true/false/value, or "unknown" when OpenBao does not answer.
bao_seal_field() {
    local json
    json="$(_bao_curl "$1" sys/seal-status 2>/dev/null)" || {
        echo unknown
        return 0
    }
    python3 -c '
import json, sys
try:
    v = json.loads(sys.stdin.read()).get(sys.argv[1])
except Exception:
    v = None
print("unknown" if v is None else (str(v).lower() if isinstance(v, bool) else v))
' "$2" <<<"${json}"
}

# bao_start <dir>: starts `bao server` in the background (pid in <dir>/pids/bao.pid, output in
# <dir>/logs/bao.log) and waits until its listener answers. No-op when already running.
bao_start() {
    local dir pid addr port
    dir="$(_abs_dir "$1")"
    _require_bao
    [[ -f "${dir}/bao/config.hcl" ]] || die "no ${dir}/bao/config.hcl (run bao_config first)"
    if pid_alive "${dir}/pids/bao.pid"; then
        info "OpenBao already running (pid $(pid_of "${dir}/pids/bao.pid"))"
        return 0
    fi
    addr="$(bao_addr "${dir}")"
    port="${addr##*:}"
    if port_in_use "${port}"; then
        die "port ${port} is already in use by another process: set another port (BAO_PORT=...)"
    fi
    step "Starting OpenBao on ${addr}"
    mkdir -p "${dir}/logs" "${dir}/pids"
    # setsid: its own session, so a Ctrl-C in the terminal that started it does not reach it;
    # it is stopped by pid (stop_pid) only.
    setsid nohup "${BAO_BIN}" server -config="${dir}/bao/config.hcl" >>"${dir}/logs/bao.log" 2>&1 </dev/null &
    pid=$!
    write_pid "${dir}/pids/bao.pid" "${pid}"
    local deadline=$((SECONDS + 30))
    until _bao_answers "${dir}"; do
        if ! pid_alive "${dir}/pids/bao.pid"; then
            tail -n 30 "${dir}/logs/bao.log" >&2 || true
            rm -f "${dir}/pids/bao.pid" "${dir}/pids/bao.pid.start"
            die "OpenBao exited during start-up (log above, full log in ${dir}/logs/bao.log)"
        fi
        if ((SECONDS >= deadline)); then
            tail -n 30 "${dir}/logs/bao.log" >&2 || true
            die "OpenBao (pid ${pid}) does not answer on ${addr} after 30 s"
        fi
        sleep 0.2
    done
    info "OpenBao is listening (pid ${pid})"
}

# bao_init_unseal <dir>: initialises OpenBao (1 key share) when needed, storing the unseal key
# in <dir>/unseal-key and the root token in <dir>/admin-token (0600), unseals it when sealed
# and waits until it is active.
bao_init_unseal() {
    local dir initialized sealed out
    dir="$(_abs_dir "$1")"
    initialized="$(bao_seal_field "${dir}" initialized)"
    case "${initialized}" in
    true) ;;
    false)
        step "Initialising OpenBao (raft bootstrap takes a few seconds)"
        out="$(bao_cli "${dir}" operator init -key-shares=1 -key-threshold=1 -format=json)" ||
            die "bao operator init failed"
        (
            umask 077
            python3 -c '
import json, os, sys
d = json.loads(sys.stdin.read())
key = d["unseal_keys_b64"][0]
token = d["root_token"]
for name, value in (("unseal-key", key), ("admin-token", token)):
    path = os.path.join(sys.argv[1], name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    os.chmod(path, 0o600)
' "${dir}" <<<"${out}"
        ) || die "could not store the unseal key and admin token in ${dir}"
        info "unseal key in ${dir}/unseal-key, admin token in ${dir}/admin-token (mode 0600)"
        ;;
    *) die "OpenBao at $(bao_addr "${dir}") does not answer sys/seal-status" ;;
    esac

    sealed="$(bao_seal_field "${dir}" sealed)"
    if [[ "${sealed}" == "true" ]]; then
        step "Unsealing OpenBao"
        [[ -s "${dir}/unseal-key" ]] || die "OpenBao is sealed and ${dir}/unseal-key is missing"
        # The key goes through stdin, never through a command line.
        python3 -c '
import json, sys
print(json.dumps({"key": open(sys.argv[1]).read().strip()}))
' "${dir}/unseal-key" |
            _bao_curl "${dir}" sys/unseal -X PUT -H 'Content-Type: application/json' \
                --data-binary @- -o /dev/null -f ||
            die "unsealing failed (wrong key in ${dir}/unseal-key?)"
        [[ "$(bao_seal_field "${dir}" sealed)" == "false" ]] ||
            die "OpenBao is still sealed after unsealing (wrong key in ${dir}/unseal-key?)"
    fi

    if ! _bao_active "${dir}"; then
        info "waiting for OpenBao to become active"
        wait_for 60 _bao_active "${dir}" ||
            die "OpenBao is unsealed but not active after 60 s (sys/health: $(bao_health_code "${dir}"))"
    fi
    info "OpenBao is initialised, unsealed and active"
}

# bao_ensure_auth <dir> <type> <path>: enables an auth method at <path>/ unless it exists.
bao_ensure_auth() {
    local dir="$1" type="$2" path="${3%/}"
    if bao_admin "${dir}" auth list -format=json | _json_has_key "${path}/"; then
        info "auth method ${type} already enabled at ${path}/"
    else
        step "Enabling auth method ${type} at ${path}/"
        bao_admin "${dir}" auth enable -path="${path}" "${type}" >/dev/null
    fi
}

# _json_has_key <key>: true if the JSON object on stdin has <key> at its top level.
_json_has_key() {
    python3 -c '
import json, sys
sys.exit(0 if sys.argv[1] in json.loads(sys.stdin.read()) else 1)
' "$1"
}
