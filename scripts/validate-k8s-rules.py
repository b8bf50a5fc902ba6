#!/usr/bin/env python3
"""Project rules for the rendered manifests of k8s/ (run by validate-k8s.sh).

  validate-k8s-rules.py base RENDERED.yaml
      the base: hardening, sizing, one wildcard through the socket proxy,
      admin ports, secrets, network policies (see check_base);
  validate-k8s-rules.py crds RENDERED.yaml
      the Prometheus Operator objects against the operator's models, unknown
      fields included (kubernetes-validate has schemas for built-in kinds only);
  validate-k8s-rules.py monitoring RENDERED.yaml BASE.yaml OUTDIR
      alert rules and dashboard: only metrics and label values the services
      export; writes OUTDIR/polysocket.rules.yaml (for promtool) and
      OUTDIR/dashboard.json;
  validate-k8s-rules.py nginx BASE.yaml OUTDIR
      writes the socket proxy's two files from the rendered ConfigMap to
      OUTDIR, for `nginx -t`.

Prints what it checked; exits 1 with one ERROR line per broken rule.
"""
import ipaddress
import json
import re
import sys

import yaml

errors = []


def err(msg):
    errors.append(msg)


def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def kn(d):
    return f"{d['kind']}/{d['metadata']['name']}"


def finish(summary):
    for line in summary:
        print(line)
    if errors:
        for e in errors:
            print(f"ERROR {e}")
        sys.exit(1)


# What the binaries export (README.md, "Metrics"). Rules and the dashboard may
# use only these, plus the few series of Prometheus and kube-state-metrics
# below.
METRICS = {
    "polysocket_creates_total": {"outcome": {
        "ok", "invalid", "refused", "rate_limited", "limit_reached", "no_capacity", "daemon_timeout",
        "fleet_unavailable", "upstream_unreachable", "upstream_rejected", "upstream_timeout", "upstream_failed"}},
    "polysocket_create_seconds": {},
    "polysocket_redis_errors_total": {},
    "polysocket_sockets_open": {},
    "polysocket_socket_capacity": {},
    "polysocket_polls_waiting": {},
    "polysocket_fleet_registered": {},
    "polysocket_draining": {},
    "polysocket_messages_total": {"direction": {"upstream", "client"}},
    "polysocket_bytes_total": {"direction": {"upstream", "client"}},
    "polysocket_upstream_handshake_seconds": {},
    "polysocket_socket_closes_total": {"cause": {"delivered", "idle", "abandoned"}},
}
HISTOGRAMS = {"polysocket_create_seconds", "polysocket_upstream_handshake_seconds"}
EXTERNAL = {"up", "kube_pod_status_ready", "kube_deployment_status_replicas_available"}


def duration_seconds(text):
    """Parses the services' durations (500ms, 15s, 2m, 1h)."""
    m = re.fullmatch(r"(\d+)(ms|s|m|h)", str(text).strip())
    if not m:
        return None
    n, unit = int(m.group(1)), m.group(2)
    return n * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


def quantity_bytes(text):
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi)?", str(text))
    if not m:
        return None
    return int(m.group(1)) * {None: 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}[m.group(2)]


def quantity_cpu(text):
    text = str(text)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def pod_spec(w):
    return w["spec"]["template"]["spec"]


def selects(selector, labels):
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


# --- base ----------------------------------------------------------------------


def check_base(path):
    docs = load(path)
    summary = []
    named = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    configmaps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    services = [d for d in docs if d["kind"] == "Service"]
    workloads = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")]

    for d in docs:
        if d["metadata"].get("namespace", "polysocket") != "polysocket" and d["kind"] != "Namespace":
            err(f"{kn(d)}: namespace is not polysocket")
        if d["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") != "polysocket":
            err(f"{kn(d)}: missing label app.kubernetes.io/part-of=polysocket")

    # Every container: hardened, bounded, probed, pinned.
    checked = 0
    envs = {}  # (workload name, container name) -> {name: value or None for valueFrom}
    for w in workloads:
        pod = pod_spec(w)
        psc = pod.get("securityContext", {})
        init = pod.get("initContainers", [])
        for c in init + pod["containers"]:
            where = f"{kn(w)} container {c['name']}"
            checked += 1
            res = c.get("resources", {})
            for kind in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if r not in res.get(kind, {}):
                        err(f"{where}: no resources.{kind}.{r}")
            if res.get("requests", {}).get("memory") != res.get("limits", {}).get("memory"):
                err(f"{where}: memory request {res.get('requests', {}).get('memory')} differs from its limit "
                    f"{res.get('limits', {}).get('memory')} (a pod above its request is evicted first)")
            if c not in init:
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
            image = c.get("image", "")
            tag = image.rsplit("/", 1)[-1].partition(":")[2]
            if "@sha256:" not in image and (not tag or tag == "latest"):
                err(f"{where}: image {image!r} is not pinned to a version")

            # Environment as the kubelet builds it: envFrom first, then env in
            # order, each $(VAR) seeing only what came before.
            env = {}
            for src in c.get("envFrom", []):
                ref = (src.get("configMapRef") or {}).get("name")
                if ref:
                    if ref not in configmaps:
                        err(f"{where}: envFrom ConfigMap {ref} does not exist")
                    env.update(configmaps.get(ref, {}).get("data", {}))
            for e in c.get("env", []):
                value = e.get("value")
                for ref in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", str(value or "")):
                    if ref not in env:
                        err(f"{where}: env {e['name']} uses $({ref}) before it is declared")
                env[e["name"]] = value if "valueFrom" not in e else e["valueFrom"]
            envs[(w["metadata"]["name"], c["name"])] = env
            argv = " ".join(map(str, c.get("command", []) + c.get("args", [])))
            if "--allow-private-targets" in argv or "POLYSOCKET_ALLOW_PRIVATE_TARGETS" in env:
                err(f"{where}: private targets must not be allowed")

            # The services: admin port, trusted proxies, keep-alive, Redis URL.
            if not re.search(r"/(router|polysocketd)$", str((c.get("command") or [""])[0])):
                continue
            admin = env.get("POLYSOCKET_ADMIN_LISTEN")
            admin_port = int(admin.rsplit(":", 1)[1]) if isinstance(admin, str) and ":" in admin else None
            ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
            if admin_port is None:
                err(f"{where}: POLYSOCKET_ADMIN_LISTEN is not set: /metrics and /readyz would be public")
            elif ports.get("admin") != admin_port:
                err(f"{where}: container port 'admin' is not POLYSOCKET_ADMIN_LISTEN's {admin_port}")
            for probe in ("livenessProbe", "readinessProbe"):
                port = (c.get(probe) or {}).get("httpGet", {}).get("port")
                if port not in ("admin", admin_port):
                    err(f"{where}: {probe} is not on the admin port")
            proxies = env.get("POLYSOCKET_TRUSTED_PROXIES")
            if not isinstance(proxies, str) or not proxies.strip():
                err(f"{where}: POLYSOCKET_TRUSTED_PROXIES is not set: every client would share the proxy's address")
            else:
                for cidr in proxies.split(","):
                    try:
                        ipaddress.ip_network(cidr.strip())
                    except ValueError:
                        err(f"{where}: POLYSOCKET_TRUSTED_PROXIES: {cidr!r} is not a CIDR")
            keep = duration_seconds(env.get("POLYSOCKET_KEEP_ALIVE", "5s"))
            if keep is None or keep <= 60:
                err(f"{where}: POLYSOCKET_KEEP_ALIVE must exceed the ingress's 60 s upstream keep-alive")
            url = env.get("POLYSOCKET_REDIS_URL")
            m = re.fullmatch(r"[^:]+://[^:@]*:(.*)@.+", url) if isinstance(url, str) else None
            if not m or m.group(1) != "$(REDIS_PASSWORD)":
                err(f"{where}: POLYSOCKET_REDIS_URL must take its password from $(REDIS_PASSWORD), is {url!r}")
            elif not isinstance(env.get("REDIS_PASSWORD"), dict) or "secretKeyRef" not in env["REDIS_PASSWORD"]:
                err(f"{where}: REDIS_PASSWORD must come from a Secret")

    # No Service or Ingress reaches an admin or health port.
    for s in services:
        for p in s["spec"].get("ports", []):
            if p.get("targetPort") in ("admin", "health", 9090) or p.get("port") == 9090:
                err(f"{kn(s)}: exposes the admin/health port {p}")

    # polysocketd: named by its pod, one wildcard, sized from its bounds.
    sts = [d for d in docs if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "polysocketd"]
    domain = None
    if len(sts) != 1:
        err("expected exactly one StatefulSet polysocketd")
        finish(summary)
        return
    s = sts[0]
    replicas = s["spec"].get("replicas", 1)
    c = pod_spec(s)["containers"][0]
    env = envs[("polysocketd", c["name"])]
    name_from = env.get("POLYSOCKET_DAEMON_NAME")
    if not isinstance(name_from, dict) or name_from.get("fieldRef", {}).get("fieldPath") != "metadata.name":
        err("StatefulSet/polysocketd: POLYSOCKET_DAEMON_NAME must come from the pod name (fieldRef metadata.name)")
    if "POLYSOCKET_FQDN" in env:
        err("StatefulSet/polysocketd: POLYSOCKET_FQDN is set: sockets would need a wildcard per daemon")
    domain = env.get("POLYSOCKET_SOCKET_DOMAIN")
    if not isinstance(domain, str) or not re.fullmatch(r"([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)+[a-z]{2,}", domain):
        err(f"StatefulSet/polysocketd: POLYSOCKET_SOCKET_DOMAIN is not a domain name: {domain!r}")
        domain = None
    last = f"{s['metadata']['name']}-{replicas - 1}"
    if len(last) > 40:
        err(f"StatefulSet/polysocketd: daemon name {last} is longer than 40 characters")
    grace = pod_spec(s).get("terminationGracePeriodSeconds", 30)
    drain = duration_seconds(env.get("POLYSOCKET_SHUTDOWN_GRACE", "20s"))
    if drain is None or grace <= drain:
        err(f"StatefulSet/polysocketd: terminationGracePeriodSeconds {grace} must exceed the "
            f"{env.get('POLYSOCKET_SHUTDOWN_GRACE', '20s')} drain")
    capacity = int(env.get("POLYSOCKET_CAPACITY", 10000))
    queue = int(env.get("POLYSOCKET_MAX_QUEUE_BYTES", 4 << 20))
    message = int(env.get("POLYSOCKET_MAX_MESSAGE_BYTES", 1 << 20))
    need = (128 << 20) + capacity * ((64 << 10) + queue + 2 * message)
    have = quantity_bytes(c.get("resources", {}).get("limits", {}).get("memory"))
    if have is None or have < need:
        err(f"StatefulSet/polysocketd: memory limit {c.get('resources', {}).get('limits', {}).get('memory')} is below "
            f"128 MiB + capacity x (64 KiB + max-queue-bytes + 2 x max-message-bytes) = {need / (1 << 20):.0f} MiB")
    listen_port = int(str(env.get("POLYSOCKET_LISTEN", "0.0.0.0:8081")).rsplit(":", 1)[1])
    headless = named.get(("Service", s["spec"]["serviceName"]))
    if not headless or headless["spec"].get("clusterIP") != "None":
        err(f"StatefulSet/polysocketd: its serviceName {s['spec']['serviceName']} is not a headless Service")
    elif not headless["spec"].get("publishNotReadyAddresses"):
        err(f"{kn(headless)}: draining daemons must stay resolvable (publishNotReadyAddresses)")
    for svc in services:
        if "statefulset.kubernetes.io/pod-name" in (svc["spec"].get("selector") or {}):
            err(f"{kn(svc)}: a Service per daemon pod; the socket proxy routes through the headless Service")
    summary.append(f"polysocketd: {replicas} replica(s) named {s['metadata']['name']}-N, sockets on "
                   f"s<hex>-<daemon>.{domain}, memory {have and have >> 20} MiB >= {need / (1 << 20):.0f} MiB")

    # The Ingress: the router's host and one wildcard, nothing per daemon.
    ingresses = [d for d in docs if d["kind"] == "Ingress"]
    hosts = {}
    for ing in ingresses:
        for r in ing["spec"].get("rules", []):
            for p in r.get("http", {}).get("paths", []):
                hosts[r.get("host")] = p["backend"]["service"]
        tls_hosts = {h for t in ing["spec"].get("tls", []) if t.get("secretName") for h in t.get("hosts", [])}
        for h in (r.get("host") for r in ing["spec"].get("rules", [])):
            if h not in tls_hosts:
                err(f"{kn(ing)}: host {h} has no TLS certificate")
    if domain:
        want = {f"router.{domain}": "router", f"*.{domain}": "socket-proxy"}
        got = {h: b["name"] for h, b in hosts.items()}
        if got != want:
            err(f"Ingress: hosts must be exactly {want}, are {got}")
    for h, b in hosts.items():
        svc = named.get(("Service", b["name"]))
        port = b.get("port", {})
        if not svc or not any(p.get("name") == port.get("name") or p.get("port") == port.get("number")
                              for p in svc["spec"]["ports"]):
            err(f"Ingress host {h}: no Service port {b}")

    # The socket proxy: its routing matches the StatefulSet, its ports the
    # Deployment, its timeouts the daemons'.
    proxy = named.get(("Deployment", "socket-proxy"))
    cms = [cm for n, cm in configmaps.items() if n.startswith("socket-proxy-config")]
    if not proxy or len(cms) != 1:
        err("expected a Deployment socket-proxy and one ConfigMap socket-proxy-config-<hash>")
    else:
        conf = cms[0]["data"].get("socket-proxy.conf", "")
        main = cms[0]["data"].get("nginx.conf", "")
        pc = pod_spec(proxy)["containers"][0]
        mounted = {v["configMap"]["name"] for v in pod_spec(proxy).get("volumes", []) if "configMap" in v}
        if cms[0]["metadata"]["name"] not in mounted:
            err("Deployment/socket-proxy does not mount the ConfigMap socket-proxy-config")
        m = re.search(r'server_name\s+"~([^"]+)"', conf)
        if not m:
            err("socket-proxy.conf: no regex server_name")
        else:
            rx = re.compile(m.group(1).replace("(?<", "(?P<"))
            for n in sorted({0, replicas - 1}):
                daemon = f"{s['metadata']['name']}-{n}"
                got = rx.search(f"s0123456789ab-{daemon}.{domain}")
                if not got or got.group("daemon") != daemon:
                    err(f"socket-proxy.conf: server_name does not route s0123456789ab-{daemon}.{domain} to {daemon}")
            for other in ("s0123456789ab-redis", "router", f"s0123456789a-{s['metadata']['name']}-0"):
                if rx.search(f"{other}.{domain}"):
                    err(f"socket-proxy.conf: server_name also matches {other}.{domain}")
        m = re.search(r"proxy_pass\s+http://\$daemon\.([a-z0-9-]+)\.([a-z0-9-]+)\.svc\.[a-z0-9.-]+:(\d+);", conf)
        if not m:
            err("socket-proxy.conf: proxy_pass is not http://$daemon.<service>.<namespace>.svc.<cluster domain>:<port>")
        elif (m.group(1), m.group(2), int(m.group(3))) != (s["spec"]["serviceName"], "polysocket", listen_port):
            err(f"socket-proxy.conf: proxy_pass goes to {m.group(1)}.{m.group(2)}:{m.group(3)}, the daemons are "
                f"{s['spec']['serviceName']}.polysocket:{listen_port}")
        ports = {p.get("name"): p["containerPort"] for p in pc.get("ports", [])}
        listens = [int(p) for p in re.findall(r"^\s*listen\s+(\d+)", conf, re.M)]
        if ports.get("http") not in listens or ports.get("health") not in listens:
            err(f"socket-proxy.conf: listens on {listens}, the container ports are {ports}")
        for key, floor in (("proxy_read_timeout", 60), ("keepalive_timeout", 60)):
            m = re.search(rf"^\s*{key}\s+(\d+)s;", conf, re.M)
            if not m or int(m.group(1)) <= floor:
                err(f"socket-proxy.conf: {key} must exceed {floor} s")
        m = re.search(r"^worker_processes\s+(\d+);", main, re.M)
        cpu = quantity_cpu(pc.get("resources", {}).get("limits", {}).get("cpu", "0"))
        if not m or int(m.group(1)) != cpu:
            err(f"nginx.conf: worker_processes must equal the CPU limit {cpu}")
        summary.append("socket-proxy: server_name and proxy_pass route s<hex>-<daemon> to "
                       f"<daemon>.{s['spec']['serviceName']}.polysocket:{listen_port}")

    # Generated secrets: the routers roll when the tokens file changes.
    router = named.get(("Deployment", "router"))
    if router:
        vols = [v.get("secret", {}).get("secretName", "") for v in pod_spec(router).get("volumes", [])]
        if not any(re.fullmatch(r"polysocket-tokens-[a-z0-9]{10}", v) for v in vols):
            err("Deployment/router: the tokens Secret is not generated with a hash (a new tokens file would not roll the routers)")

    # PodDisruptionBudgets never hold a broken pod.
    for pdb in (d for d in docs if d["kind"] == "PodDisruptionBudget"):
        if pdb["spec"].get("unhealthyPodEvictionPolicy") != "AlwaysAllow":
            err(f"{kn(pdb)}: unhealthyPodEvictionPolicy is not AlwaysAllow (an unready pod would block node drains)")
        if not any(selects(pdb["spec"]["selector"], pod_spec_labels(w)) for w in workloads):
            err(f"{kn(pdb)}: selects no workload")

    # Network policies: default deny, every workload let through somewhere,
    # Redis only from the services.
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    if not any(p["spec"].get("podSelector") == {} and set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
               and not p["spec"].get("ingress") and not p["spec"].get("egress") for p in policies):
        err("no default-deny NetworkPolicy (podSelector {}, Ingress and Egress, no rules)")
    for w in workloads:
        labels = pod_spec_labels(w)
        if not any(p["spec"].get("podSelector") and selects(p["spec"]["podSelector"], labels) for p in policies):
            err(f"{kn(w)}: no NetworkPolicy selects its pods (default deny leaves them unreachable)")
    for p in policies:
        if selects(p["spec"].get("podSelector") or {"matchLabels": {"x": "none"}}, {"app.kubernetes.io/name": "redis"}):
            peers = {frm.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name")
                     for rule in p["spec"].get("ingress", []) for frm in rule.get("from", [])}
            if peers != {"router", "polysocketd"}:
                err(f"{kn(p)}: Redis must admit exactly the router and the daemons, admits {peers}")
    redis = named.get(("Deployment", "redis"))
    if redis:
        argv = pod_spec(redis)["containers"][0].get("command", [])
        if "--requirepass" not in argv:
            err("Deployment/redis: no --requirepass")
        if "--protected-mode" in argv:
            err("Deployment/redis: leave protected-mode on")

    summary.append(f"checked {checked} container(s) in {len(workloads)} workload(s), {len(policies)} NetworkPolicy(s)")
    finish(summary)


def pod_spec_labels(w):
    return w["spec"]["template"]["metadata"].get("labels", {})


# --- Prometheus Operator objects -------------------------------------------------


def unknown_fields(given, parsed, path=""):
    """Keys of the input that the model dropped: fields it does not know."""
    out = []
    if isinstance(given, dict) and isinstance(parsed, dict):
        for k, v in given.items():
            if k not in parsed:
                out.append(f"{path}.{k}".lstrip("."))
            else:
                out += unknown_fields(v, parsed[k], f"{path}.{k}")
    elif isinstance(given, list) and isinstance(parsed, list):
        for i, (a, b) in enumerate(zip(given, parsed)):
            out += unknown_fields(a, b, f"{path}[{i}]")
    return out


def check_crds(path):
    from cloudcoil.models.prometheus_operator import v1
    import pydantic

    summary = []
    for d in load(path):
        if not d["apiVersion"].startswith("monitoring.coreos.com/"):
            continue
        model = getattr(v1, d["kind"], None)
        if d["apiVersion"] != "monitoring.coreos.com/v1" or model is None:
            err(f"{kn(d)}: no model for {d['apiVersion']} {d['kind']}")
            continue
        try:
            parsed = model.model_validate(d).model_dump(by_alias=True, exclude_unset=True, mode="json")
        except pydantic.ValidationError as e:
            err(f"{kn(d)}: {e}")
            continue
        for field in unknown_fields(d, parsed):
            err(f"{kn(d)}: unknown field {field}")
        summary.append(f"{kn(d)} valid (monitoring.coreos.com/v1, strict)")
    if not summary:
        err("no Prometheus Operator object found")
    finish(summary)


# --- monitoring ---------------------------------------------------------------


def metric_uses(expr, where):
    """Checks the metric names and label values one PromQL expression uses."""
    for name in re.findall(r"\b(polysocket_[a-z_]+|kube_[a-z_]+)\b", expr):
        base = re.sub(r"_(bucket|sum|count)$", "", name) if name.startswith("polysocket_") else name
        if name.startswith("polysocket_") and name != base and base not in HISTOGRAMS:
            err(f"{where}: {name}: {base} is not a histogram")
        if base not in METRICS and base not in EXTERNAL:
            err(f"{where}: unknown metric {name}")
    for name, selector in re.findall(r"\b(polysocket_[a-z_]+)\{([^}]*)\}", expr):
        labels = METRICS.get(name, {})
        for label, op, value in re.findall(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"', selector):
            if label in labels:
                values = set(value.split("|")) if "~" in op else {value}
                for v in values - labels[label]:
                    err(f"{where}: {name} has no {label}={v!r}")


def check_monitoring(path, base_path, outdir):
    docs = load(path)
    base = load(base_path)
    summary = []
    rules = [d for d in docs if d["kind"] == "PrometheusRule"]
    if len(rules) != 1:
        err("expected one PrometheusRule")
    else:
        spec = rules[0]["spec"]
        with open(f"{outdir}/polysocket.rules.yaml", "w") as f:
            yaml.safe_dump(spec, f, sort_keys=False)
        n = 0
        for g in spec["groups"]:
            for r in g["rules"]:
                n += 1
                metric_uses(r["expr"], f"alert {r.get('alert', r.get('record'))}")
                if r.get("alert") and r.get("labels", {}).get("severity") not in ("critical", "warning", "info"):
                    err(f"alert {r['alert']}: severity must be critical, warning or info")
        summary.append(f"PrometheusRule: {n} rule(s) use only exported metrics")
        # The proxy's connection budget in the alert follows nginx.conf.
        proxy_cm = [d for d in base if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("socket-proxy-config")]
        main = proxy_cm[0]["data"]["nginx.conf"] if proxy_cm else ""
        wp = re.search(r"^worker_processes\s+(\d+);", main, re.M)
        wc = re.search(r"^\s*worker_connections\s+(\d+);", main, re.M)
        polls = int(wp.group(1)) * int(wc.group(1)) // 2 if wp and wc else None
        budget = [r for g in spec["groups"] for r in g["rules"] if r.get("alert") == "PolysocketSocketProxyNearCapacity"]
        if not budget or polls is None or f"({polls} *" not in budget[0]["expr"]:
            err(f"alert PolysocketSocketProxyNearCapacity must count {polls} polls per socket-proxy replica "
                "(worker_processes x worker_connections / 2 in nginx.conf)")

    monitors = [d for d in docs if d["kind"] == "PodMonitor"]
    admin_pods = {pod_spec_labels(w).get("app.kubernetes.io/name") for w in base
                  if w["kind"] in ("Deployment", "StatefulSet")
                  for c in pod_spec(w)["containers"] if any(p.get("name") == "admin" for p in c.get("ports", []))}
    for m in monitors:
        selected = set()
        for e in m["spec"]["selector"].get("matchExpressions", []):
            if e["key"] == "app.kubernetes.io/name" and e["operator"] == "In":
                selected |= set(e["values"])
        selected |= {v for k, v in m["spec"]["selector"].get("matchLabels", {}).items() if k == "app.kubernetes.io/name"}
        if selected != admin_pods:
            err(f"{kn(m)}: selects {sorted(selected)}, the pods with an admin port are {sorted(admin_pods)}")
        if any(ep.get("port") != "admin" for ep in m["spec"]["podMetricsEndpoints"]):
            err(f"{kn(m)}: must scrape the admin port")
    if not monitors:
        err("no PodMonitor")

    dashboards = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"].get("labels", {}).get("grafana_dashboard")]
    if len(dashboards) != 1:
        err("expected one ConfigMap labelled grafana_dashboard")
    else:
        for key, text in dashboards[0]["data"].items():
            try:
                dash = json.loads(text)
            except json.JSONDecodeError as e:
                err(f"dashboard {key}: not JSON: {e}")
                continue
            with open(f"{outdir}/dashboard.json", "w") as f:
                f.write(text)
            ids, exprs = set(), 0
            for p in dash.get("panels", []):
                if p["id"] in ids:
                    err(f"dashboard {key}: panel id {p['id']} twice")
                ids.add(p["id"])
                for t in p.get("targets", []):
                    if not t.get("expr"):
                        err(f"dashboard {key}: panel {p['title']!r} has a target without expr")
                        continue
                    exprs += 1
                    metric_uses(t["expr"], f"dashboard panel {p['title']!r}")
            for v in dash.get("templating", {}).get("list", []):
                q = v.get("query")
                if isinstance(q, dict):
                    metric_uses(q.get("query", ""), f"dashboard variable {v['name']}")
            if not dash.get("uid") or not exprs:
                err(f"dashboard {key}: no uid or no queries")
            summary.append(f"dashboard {key}: {len(ids)} panel(s), {exprs} quer(ies) on exported metrics")
    finish(summary)


# --- nginx ----------------------------------------------------------------------


def write_nginx(base_path, outdir):
    cms = [d for d in load(base_path) if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("socket-proxy-config")]
    if len(cms) != 1:
        err("expected one ConfigMap socket-proxy-config-<hash>")
    else:
        for key in ("nginx.conf", "socket-proxy.conf"):
            with open(f"{outdir}/{key}", "w") as f:
                f.write(cms[0]["data"][key])
    finish([])


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    {"base": check_base, "crds": check_crds, "monitoring": check_monitoring, "nginx": write_nginx}[mode](*args)
