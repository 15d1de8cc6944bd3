#!/usr/bin/env bash
# Checks the deployment files under deploy/ with whatever tools this machine
# has; a check whose tool is missing is skipped and says so. Needs no
# network and changes nothing outside a temporary directory.
#
#   scripts/check-deploy.sh
#
# Environment:
#   RAMPART_BIN   a built rampart binary (e.g. target/release/rampart). The
#                 systemd unit is verified with it as ExecStart (else
#                 /bin/true), and when it has `rampart config check`, the
#                 binary's own validation is run on the example config.
#
# Ends with one line, `check-deploy: N passed, M failed, K skipped`, and
# exits non-zero when a check failed.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

unit=deploy/systemd/rampart.service
toml=deploy/systemd/rampart.toml
k8s=deploy/kubernetes
containerfile=deploy/container/Containerfile
config_rs=crates/rampart-server/src/config.rs

passed=0
failed=0
skipped=0
pass() { echo "PASS  $*"; passed=$((passed + 1)); }
fail() { echo "FAIL  $*"; failed=$((failed + 1)); }
skip() { echo "SKIP  $*"; skipped=$((skipped + 1)); }
have() { command -v "$1" >/dev/null 2>&1; }
indent() { sed 's/^/      /'; }
# verdict PASS_MESSAGE FAIL_MESSAGE [PROBLEM...]: one line, and the
# problems indented under a failure.
verdict() {
	local ok=$1 ko=$2
	shift 2
	if [ $# -eq 0 ]; then
		pass "$ok"
	else
		fail "$ko"
		printf '%s\n' "$@" | indent
	fi
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

has_tomllib=no
if have python3 && python3 -c 'import tomllib' 2>/dev/null; then
	has_tomllib=yes
fi
has_pyyaml=no
if have python3 && python3 -c 'import yaml' 2>/dev/null; then
	has_pyyaml=yes
fi

# Checks configuration files (TOML): they parse, have no dangerous_* or
# insecure_* key, and listen on ports above 1023 (no capability is
# granted); or, with --keys-from, that every key is one config.rs accepts.
# Usage: check_toml_py [--keys-from config.rs] FILE...
check_toml_py() {
	python3 - "$@" <<'PY'
import re, sys, tomllib

args = sys.argv[1:]
known = None
if args[:1] == ["--keys-from"]:
    src = open(args[1], encoding="utf-8").read()
    m = re.search(r"const KEYS: &\[\(&str, Kind\)\] = &\[(.*?)\n\];", src, re.S)
    if not m:
        sys.exit(f"{args[1]}: the KEYS table was not found")
    known = set(re.findall(r'\(\s*"([a-z0-9_]+)",\s*Kind::', m.group(1)))
    args = args[2:]
problems = []
for path in args:
    with open(path, "rb") as f:
        try:
            doc = tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            problems.append(f"{path}: {e}")
            continue
    def walk(table, prefix=""):
        for k, v in table.items():
            if k.startswith(("dangerous_", "insecure_")):
                problems.append(f"{path}: key {prefix}{k} is not for production")
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
    if known is not None:
        for k in doc:
            if k not in known:
                problems.append(f"{path}: key {k} is not in config.rs KEYS")
        continue
    walk(doc)
    for k in ("quic_bind", "tcp_bind", "http_bind"):
        v = doc.get(k)
        if v:
            port = int(v.rsplit(":", 1)[1])
            if port < 1024:
                problems.append(f"{path}: {k} = {v}: port below 1024 needs CAP_NET_BIND_SERVICE")
for p in problems:
    print(p)
sys.exit(1 if problems else 0)
PY
}

# The TOML embedded in the ConfigMap, written to $tmp/configmap.toml.
extract_configmap_toml() {
	python3 - "$k8s/configmap.yaml" "$tmp/configmap.toml" <<'PY'
import sys, yaml
for doc in yaml.safe_load_all(open(sys.argv[1], encoding="utf-8")):
    if doc and doc.get("kind") == "ConfigMap":
        open(sys.argv[2], "w", encoding="utf-8").write(doc["data"]["rampart.toml"])
        break
else:
    sys.exit("no ConfigMap with data.rampart.toml")
PY
}

echo "== systemd"

# 1. The hardening settings are there (guards against their silent removal).
missing=()
for line in \
	'User=rampart' 'Group=rampart' 'DynamicUser=no' \
	'ExecStart=/usr/local/bin/rampart server --config /etc/rampart/rampart.toml' \
	'ProtectSystem=strict' 'ProtectHome=yes' 'PrivateTmp=yes' 'PrivateDevices=yes' \
	'NoNewPrivileges=yes' 'CapabilityBoundingSet=' 'AmbientCapabilities=' \
	'ReadWritePaths=/var/lib/rampart' 'StateDirectory=rampart' 'ConfigurationDirectory=rampart' \
	'ProtectKernelTunables=yes' 'ProtectKernelModules=yes' 'ProtectKernelLogs=yes' \
	'ProtectControlGroups=yes' 'ProtectClock=yes' 'ProtectHostname=yes' \
	'RestrictNamespaces=yes' 'RestrictRealtime=yes' 'RestrictSUIDSGID=yes' \
	'LockPersonality=yes' 'MemoryDenyWriteExecute=yes' \
	'RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX' 'SystemCallArchitectures=native' \
	'SystemCallFilter=@system-service' 'SystemCallFilter=~@privileged @resources' \
	'UMask=0077' 'LimitNOFILE=65536' 'KillSignal=SIGTERM' 'TimeoutStopSec=45' \
	'Restart=on-failure'; do
	grep -qxF -- "$line" "$unit" || missing+=("$line")
done
verdict "$unit: hardening settings present" "$unit: missing settings:" "${missing[@]}"

# 2 and 3. systemd-analyze, on a copy whose ExecStart exists here.
if have systemd-analyze; then
	bin=/bin/true
	if [ -n "${RAMPART_BIN:-}" ]; then
		if [ -x "$RAMPART_BIN" ] && [ -f "$RAMPART_BIN" ]; then
			bin=$(realpath "$RAMPART_BIN")
		else
			fail "RAMPART_BIN=$RAMPART_BIN is not an executable file; verifying with /bin/true"
		fi
	fi
	mkdir "$tmp/unit"
	copy="$tmp/unit/rampart.service"
	sed "s#^ExecStart=/usr/local/bin/rampart #ExecStart=$bin #" "$unit" >"$copy"
	rc=0
	out=$(cd "$tmp/unit" && systemd-analyze verify ./rampart.service 2>&1) || rc=$?
	# Lines about other units of this machine, if any, are not ours.
	ours=$(printf '%s\n' "$out" | grep -F 'rampart.service' || true)
	others=$(printf '%s\n' "$out" | grep -vF 'rampart.service' | grep -v '^$' || true)
	if [ "$rc" -eq 0 ] && [ -z "$ours" ]; then
		pass "systemd-analyze verify $unit (ExecStart=$bin)"
	else
		fail "systemd-analyze verify $unit (exit $rc):"
		printf '%s\n' "${ours:-$out}" | indent
	fi
	if [ -n "$others" ]; then
		echo "      (ignored, about other units:)"
		printf '%s\n' "$others" | indent
	fi

	if systemd-analyze security --help 2>&1 | grep -q -- '--offline'; then
		rc=0
		out=$(systemd-analyze security --offline=true --no-pager "$copy" 2>&1) || rc=$?
		score=$(printf '%s\n' "$out" | grep -o 'Overall exposure level.*' || true)
		if [ "$rc" -eq 0 ] && [ -n "$score" ]; then
			pass "systemd-analyze security --offline: $score"
		else
			fail "systemd-analyze security --offline (exit $rc):"
			printf '%s\n' "$out" | tail -n 20 | indent
		fi
	else
		skip "systemd-analyze security: this systemd has no --offline (needs 250+)"
	fi
else
	skip "systemd-analyze verify: systemd-analyze not installed"
	skip "systemd-analyze security: systemd-analyze not installed"
fi

# 4 and 5. The example configuration.
if [ "$has_tomllib" = yes ]; then
	if out=$(check_toml_py "$toml" 2>&1); then
		pass "$toml: parses, no dangerous_/insecure_ key, ports above 1023"
	else
		fail "$toml:"
		printf '%s\n' "$out" | indent
	fi
	if [ -f "$config_rs" ]; then
		if out=$(check_toml_py --keys-from "$config_rs" "$toml" 2>&1); then
			pass "$toml: every key is one config.rs accepts"
		else
			fail "$toml: keys against $config_rs:"
			printf '%s\n' "$out" | indent
		fi
	else
		skip "$toml keys: $config_rs not found"
	fi
else
	skip "$toml: python3 with tomllib (3.11+) not found"
	skip "$toml keys: python3 with tomllib (3.11+) not found"
fi

# 6. The binary's own validation, when RAMPART_BIN is set and has it.
if [ -z "${RAMPART_BIN:-}" ]; then
	skip "rampart config check: RAMPART_BIN not set"
elif ! "$RAMPART_BIN" config check --help >/dev/null 2>&1; then
	skip "rampart config check: $RAMPART_BIN has no \`config check\` command"
elif out=$("$RAMPART_BIN" config check "$toml" 2>&1); then
	pass "rampart config check $toml"
else
	fail "rampart config check $toml:"
	printf '%s\n' "$out" | indent
fi

echo "== kubernetes"

# 7. Client-side dry run; kubectl needs an API server even for that (to map
# kinds), so without one it is skipped.
if ! have kubectl; then
	skip "kubectl create --dry-run=client: kubectl not installed"
elif ! kubectl create --dry-run=client --validate=false -o name --request-timeout=10s \
	-f "$k8s/namespace.yaml" >/dev/null 2>&1; then
	skip "kubectl create --dry-run=client: no Kubernetes API server reachable (offline checks below)"
else
	bad=()
	for f in "$k8s"/*.yaml; do
		if ! out=$(kubectl create --dry-run=client -o name --request-timeout=10s -f "$f" 2>&1); then
			bad+=("$f: $out")
		fi
	done
	verdict "kubectl create --dry-run=client: every manifest" "kubectl create --dry-run=client:" "${bad[@]}"
fi

# 8. kustomize (built into kubectl) works offline: every document must be
# valid YAML with a kind and a metadata.name.
if have kubectl; then
	mkdir "$tmp/kustomize"
	cp "$k8s"/*.yaml "$tmp/kustomize/"
	{
		echo "resources:"
		for f in "$k8s"/*.yaml; do echo "  - $(basename "$f")"; done
	} >"$tmp/kustomize/kustomization.yaml"
	if out=$(kubectl kustomize "$tmp/kustomize" 2>&1); then
		n=$(printf '%s\n' "$out" | grep -c '^kind:' || true)
		pass "kubectl kustomize (offline): $n objects"
	else
		fail "kubectl kustomize (offline):"
		printf '%s\n' "$out" | indent
	fi
else
	skip "kubectl kustomize: kubectl not installed"
fi

# 9 and 10. The manifests' content, and the configuration in the ConfigMap.
if [ "$has_pyyaml" = yes ]; then
	if out=$(
		python3 - "$k8s"/*.yaml <<'PY' 2>&1
import sys, yaml

problems = []
objs = []
for path in sys.argv[1:]:
    try:
        docs = [d for d in yaml.safe_load_all(open(path, encoding="utf-8")) if d]
    except yaml.YAMLError as e:
        problems.append(f"{path}: {e}")
        continue
    for d in docs:
        name = (d.get("metadata") or {}).get("name")
        if not (d.get("apiVersion") and d.get("kind") and name):
            problems.append(f"{path}: a document lacks apiVersion, kind or metadata.name")
        objs.append((path, d))

def get(d, *keys):
    for k in keys:
        d = (d or {}).get(k) if isinstance(d, dict) else None
    return d

ports = {("UDP", 7400), ("TCP", 7401), ("TCP", 7402)}
for path, d in objs:
    kind = d.get("kind")
    if kind != "Namespace" and get(d, "metadata", "namespace") != "rampart":
        problems.append(f"{path}: {kind} {get(d, 'metadata', 'name')} is not in namespace rampart")
    if kind in ("StatefulSet", "Deployment"):
        pod = get(d, "spec", "template", "spec")
        psc = pod.get("securityContext") or {}
        for k, want in (("runAsNonRoot", True), ("runAsUser", 10001), ("fsGroup", 10001)):
            if psc.get(k) != want:
                problems.append(f"{path}: pod securityContext.{k} should be {want}")
        if get(psc, "seccompProfile", "type") != "RuntimeDefault":
            problems.append(f"{path}: pod seccompProfile should be RuntimeDefault")
        for c in pod.get("containers", []):
            sc = c.get("securityContext") or {}
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{path}: {c['name']}: allowPrivilegeEscalation should be false")
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{path}: {c['name']}: readOnlyRootFilesystem should be true")
            if get(sc, "capabilities", "drop") != ["ALL"]:
                problems.append(f"{path}: {c['name']}: capabilities should drop ALL")
            if not (get(c, "resources", "requests") and get(c, "resources", "limits")):
                problems.append(f"{path}: {c['name']}: resource requests and limits are needed")
            for probe in ("livenessProbe", "readinessProbe"):
                if not c.get(probe):
                    problems.append(f"{path}: {c['name']}: no {probe}")
            got = {(p.get("protocol", "TCP"), p["containerPort"]) for p in c.get("ports", [])}
            if got != ports:
                problems.append(f"{path}: {c['name']}: container ports {sorted(got)} != {sorted(ports)}")
        secrets = {get(v, "secret", "secretName") for v in pod.get("volumes", [])}
        if "rampart-tls" not in secrets:
            problems.append(f"{path}: no volume from the Secret rampart-tls")
    if kind == "Service":
        got = {(p.get("protocol", "TCP"), p["port"]) for p in get(d, "spec", "ports") or []}
        if got != ports:
            problems.append(f"{path}: Service {d['metadata']['name']}: ports {sorted(got)} != {sorted(ports)}")
    if kind == "Secret" and (d.get("data") or d.get("stringData")):
        problems.append(f"{path}: Secret {d['metadata']['name']} carries material; create it out of band")
policies = [d for _, d in objs if d.get("kind") == "NetworkPolicy"]
if not any(get(p, "spec", "podSelector") == {} and
           set(get(p, "spec", "policyTypes") or []) == {"Ingress", "Egress"} and
           not get(p, "spec", "ingress") and not get(p, "spec", "egress")
           for p in policies):
    problems.append("networkpolicy: no default deny of ingress and egress for all pods")
for p in policies:
    for rule in get(p, "spec", "egress") or []:
        for port in rule.get("ports") or [{}]:
            if port.get("port") != 53:
                problems.append(f"networkpolicy {p['metadata']['name']}: egress beyond DNS: {rule}")
                break
    for rule in get(p, "spec", "ingress") or []:
        for port in rule.get("ports") or [{}]:
            if (port.get("protocol", "TCP"), port.get("port")) not in ports:
                problems.append(f"networkpolicy {p['metadata']['name']}: ingress beyond Rampart's ports: {rule}")
                break
for p in problems:
    print(p)
print(f"{len(objs)} objects")
sys.exit(1 if problems else 0)
PY
	); then
		pass "$k8s: $(printf '%s\n' "$out" | tail -n 1), fields, security contexts, ports, policies"
	else
		fail "$k8s:"
		printf '%s\n' "$out" | indent
	fi

	if [ "$has_tomllib" != yes ]; then
		skip "$k8s/configmap.yaml rampart.toml: python3 with tomllib (3.11+) not found"
	elif ! out=$(extract_configmap_toml 2>&1); then
		fail "$k8s/configmap.yaml: $out"
	else
		what="parses, no dangerous_/insecure_ key, ports above 1023"
		rc=0
		out=$(check_toml_py "$tmp/configmap.toml" 2>&1) || rc=$?
		if [ -f "$config_rs" ]; then
			what="$what, keys known to config.rs"
			out+=$'\n'$(check_toml_py --keys-from "$config_rs" "$tmp/configmap.toml" 2>&1) || rc=$?
		fi
		if [ "$rc" -eq 0 ]; then
			pass "$k8s/configmap.yaml rampart.toml: $what"
		else
			fail "$k8s/configmap.yaml rampart.toml:"
			printf '%s\n' "$out" | indent
		fi
	fi
else
	skip "$k8s: python3 with PyYAML not found (not installed by this script)"
	skip "$k8s/configmap.yaml rampart.toml: python3 with PyYAML not found"
fi

echo "== container"

# 11. Static checks: multi-stage, a non-root numeric USER, nothing fetched
# by ADD, the default ports, no secret-looking ENV/ARG.
problems=()
first=$(grep -vE '^[[:space:]]*(#|$)' "$containerfile" | head -n 1)
[[ "$first" =~ ^FROM[[:space:]] ]] || problems+=("the first instruction is not FROM: $first")
[ "$(grep -cE '^FROM[[:space:]]' "$containerfile")" -ge 2 ] || problems+=("not a multi-stage build")
user=$(grep -E '^USER[[:space:]]' "$containerfile" | tail -n 1 | awk '{print $2}')
uid=${user%%:*}
if ! [[ "$uid" =~ ^[0-9]+$ ]] || [ "$uid" -eq 0 ]; then
	problems+=("the last USER is not a non-zero numeric uid: '${user}'")
fi
if grep -qiE '^ADD[[:space:]].*(https?|ftp)://' "$containerfile"; then
	problems+=("ADD fetches from the network")
fi
for p in 7400/udp 7401/tcp 7402/tcp; do
	grep -qE "^EXPOSE[[:space:]].*\b$p\b" "$containerfile" || problems+=("EXPOSE lacks $p")
done
grep -qF 'ENTRYPOINT ["/usr/local/bin/rampart"]' "$containerfile" || problems+=("ENTRYPOINT is not the rampart binary")
if grep -qiE '^(ENV|ARG)[[:space:]].*(SECRET|PASSWORD|TOKEN|MASTER_KEY|API_KEY)' "$containerfile"; then
	problems+=("ENV/ARG looks like a baked-in secret")
fi
verdict "$containerfile: multi-stage, USER $user, no ADD from a URL, ports, entrypoint" "$containerfile:" "${problems[@]}"

# 12. docker build --check (lint only, nothing built) when a daemon answers
# and the base images are already local: this script never pulls.
if ! have docker; then
	skip "docker build --check: docker not installed"
elif ! docker info >/dev/null 2>&1; then
	skip "docker build --check: no docker daemon answers"
elif ! docker build --help 2>&1 | grep -q -- '--check'; then
	skip "docker build --check: this docker build has no --check (needs BuildKit/buildx 0.15+)"
else
	missing_images=()
	for image in $(awk '/^FROM[[:space:]]/ {print $2}' "$containerfile"); do
		docker image inspect "$image" >/dev/null 2>&1 || missing_images+=("$image")
	done
	if [ ${#missing_images[@]} -gt 0 ]; then
		skip "docker build --check: base images not present locally (not pulled): ${missing_images[*]}"
	elif out=$(docker build --check --pull=false -f "$containerfile" . 2>&1); then
		pass "docker build --check $containerfile"
	else
		fail "docker build --check $containerfile:"
		printf '%s\n' "$out" | tail -n 20 | indent
	fi
fi

echo "check-deploy: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
