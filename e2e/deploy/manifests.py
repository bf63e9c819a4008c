"""Offline checks of rendered Kubernetes manifests (kubectl kustomize output).

    manifests.py split RENDERED OUT_DIR
        Writes the built-in kinds (the ones the Kubernetes schemas know) to OUT_DIR/core.yaml
        and the cert-manager kinds to OUT_DIR/crds.yaml.
    manifests.py policy RENDERED [RENDERED ...]
        Checks what schemas cannot: that the Deployment, its ConfigMap's strait.toml, its
        Secrets, Service, NetworkPolicy, PDB, HPA and (when present) cert-manager
        Certificate agree: the probes on the health port, the scrape annotations on the
        metrics port, the admin port on loopback and named by no containerPort, Service or
        NetworkPolicy, the workload-label env, a hardened pod, and a grace period longer
        than preStop + drain_delay + drain_timeout. Exits 1 with every finding.
    manifests.py pod RENDERED OUT_DIR
        Lays out the Deployment's ConfigMap and Secret volumes in OUT_DIR as the kubelet
        does (a ..data symlink to a timestamped directory, files as links through it,
        group 65532, the volume's defaultMode) and prints the pod as the kubelet would
        run it, one `KEY value...` per line: COMMAND, ARGS, `MOUNT host_dir container_path`
        per volume mount, `ENV name value` per variable (the downward API resolved for a
        pod of this Deployment), `PORT port` per containerPort, READY and LIVE (`port
        path` of the probes), METRICS (`port path` of the scrape annotations), ADMIN
        (`address` of strait.toml's admin port), DRAIN_DELAY (seconds) and GRACE (seconds).
    manifests.py listening PROC_NET_TCP [PROC_NET_TCP6]
        Prints the listening TCP sockets in those /proc files (a process's network
        namespace) as `address:port`, one per line.
"""

import base64
import ipaddress
import os
import re
import sys
import tomllib

import yaml

CORE_GROUPS = {"v1", "apps/v1", "policy/v1", "autoscaling/v2", "networking.k8s.io/v1"}
FS_GROUP = 65532
# The engine's defaults (shared/src/config/schema.rs) for what strait.toml leaves out.
HTTP_DEFAULTS = {"health": "0.0.0.0:15021", "metrics": "0.0.0.0:15090", "admin": "127.0.0.1:15000"}
DRAIN_DEFAULTS = {"drain_delay": "5s", "drain_timeout": "30s"}
# shared/src/gateway/mod.rs CUT_GRACE: connections cut when drain_timeout runs out get this
# long to write their access-log records before the process exits.
CUT_GRACE = 5
# Where the probes, the scrapes and the Istio metrics' workload labels come from.
HEALTH_PATHS = (("readinessProbe", "/healthz/ready"), ("livenessProbe", "/healthz/live"), ("startupProbe", "/healthz/live"))
SCRAPE_PATH = "/stats/prometheus"
CANONICAL_LABEL = "service.istio.io/canonical-name"


def load(paths):
    docs = []
    for path in paths:
        with open(path) as f:
            docs.extend(d for d in yaml.safe_load_all(f) if d)
    return docs


def by_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def one(docs, kind):
    found = by_kind(docs, kind)
    if len(found) != 1:
        raise SystemExit(f"expected one {kind}, found {len(found)}")
    return found[0]


def duration_seconds(text):
    """humantime durations as the configs use them: 30s, 2m, 1h30m."""
    units = {"ms": 0.001, "s": 1, "m": 60, "min": 60, "h": 3600}
    parts = re.findall(r"(\d+)\s*(ms|min|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text.replace(" ", ""):
        raise SystemExit(f"cannot read the duration {text!r}")
    return sum(int(n) * units[u] for n, u in parts)


def split(rendered, out_dir):
    docs = load([rendered])
    core = [d for d in docs if d["apiVersion"] in CORE_GROUPS]
    crds = [d for d in docs if d["apiVersion"] not in CORE_GROUPS]
    unknown = [d["apiVersion"] for d in crds if not d["apiVersion"].startswith("cert-manager.io/")]
    if unknown:
        raise SystemExit(f"unexpected API groups: {unknown}")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "core.yaml"), "w") as f:
        yaml.safe_dump_all(core, f)
    with open(os.path.join(out_dir, "crds.yaml"), "w") as f:
        yaml.safe_dump_all(crds, f)
    print(f"{len(core)} built-in objects, {len(crds)} cert-manager objects")


def config_of(docs, deployment):
    """The strait.toml the Deployment's --config names, parsed, and its ConfigMap."""
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    args = container.get("args", [])
    path = args[args.index("--config") + 1]
    mount_dir, key = os.path.split(path)
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == mount_dir)
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    name = volume["configMap"]["name"]
    configmap = next(c for c in by_kind(docs, "ConfigMap") if c["metadata"]["name"] == name)
    return tomllib.loads(configmap["data"][key]), configmap


def matches(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


def http_port(config, section, container):
    """(host, port) a gateway HTTP port binds, or None when its section says enabled = false:
    the container's `--SECTION-address` argument, else its STRAIT_SECTION_ADDRESS env, else
    [SECTION] address of strait.toml, else the engine's default (shared/src/cli.rs: the flag
    and the env override the file, and are not held to [admin] allow_remote)."""
    settings = config.get(section, {})
    if settings.get("enabled", True) is False:
        return None
    address = settings.get("address", HTTP_DEFAULTS[section])
    env = env_sources(container).get(f"STRAIT_{section.upper()}_ADDRESS")
    if isinstance(env, str):
        address = env
    args = container.get("args", [])
    for i, arg in enumerate(args):
        if arg == f"--{section}-address" and i + 1 < len(args):
            address = args[i + 1]
        elif arg.startswith(f"--{section}-address="):
            address = arg.split("=", 1)[1]
    host, port = address.rsplit(":", 1)
    return host.strip("[]"), int(port)


def is_loopback(host):
    return host == "::1" or host == "localhost" or host.startswith("127.")


def drain_settings(config):
    """(drain_delay, drain_timeout) in seconds, defaults filled in."""
    process = config.get("process", {})
    return tuple(duration_seconds(process.get(k, DRAIN_DEFAULTS[k])) for k in ("drain_delay", "drain_timeout"))


def pre_stop_seconds(container):
    """The preStop hook's length: its sleep action, 0 without a hook; None for any other hook
    (the image has no shell for an exec, and an httpGet to the gateway has no path to call)."""
    pre_stop = container.get("lifecycle", {}).get("preStop")
    if pre_stop is None:
        return 0
    return pre_stop["sleep"]["seconds"] if set(pre_stop) == {"sleep"} else None


def env_sources(container):
    """{name: value or the valueFrom dict} of the container's env."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def resolve_port(ports, port):
    """A probe's or Service's port (a name or a number) as a number, None for an unknown name."""
    return ports.get(port) if isinstance(port, str) else port


def network_policy_ports(docs, labels):
    """Every port number the NetworkPolicies selecting these pods admit; None when one
    admits every port (a rule without ports)."""
    opened = set()
    for np in by_kind(docs, "NetworkPolicy"):
        if not matches(np["spec"]["podSelector"].get("matchLabels", {}), labels):
            continue
        for rule in np["spec"].get("ingress", []):
            if "ports" not in rule:
                return None
            opened |= {p["port"] for p in rule["ports"]}
    return opened


def policy(paths):
    docs = load(paths)
    problems = []

    def expect(ok, what):
        if not ok:
            problems.append(what)

    deployment = one(docs, "Deployment")
    name = deployment["metadata"]["name"]
    pod = deployment["spec"]["template"]["spec"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
    container = pod["containers"][0]
    config, _ = config_of(docs, deployment)
    role = os.path.basename(container["command"][0])
    expect(role in ("strait-egress", "strait-ingress"), f"command runs {container['command']}, not a gateway")
    expect(matches(deployment["spec"]["selector"]["matchLabels"], labels), "the Deployment's selector misses its pods")

    # The HTTP ports: health (probes) and metrics (scrapes) reachable from outside the pod,
    # the admin port on loopback, and each on its own port.
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    health, metrics, admin = (http_port(config, s, container) for s in ("health", "metrics", "admin"))
    text = lambda bound: f"{bound[0]}:{bound[1]}" if bound else "(disabled)"
    expect(health is not None and health[0] == "0.0.0.0", f"[health] {text(health)} is not bound on 0.0.0.0: the kubelet cannot probe it")
    expect(metrics is not None and metrics[0] == "0.0.0.0", f"[metrics] {text(metrics)} is not bound on 0.0.0.0: Prometheus cannot scrape it")
    expect(admin is None or is_loopback(admin[0]), f"[admin] {text(admin)} is not on loopback: it serves the configuration and the log level")
    expect(config.get("admin", {}).get("allow_remote", False) is False, "[admin] allow_remote is set: the admin port must stay on loopback")
    health_port = health[1] if health else None
    metrics_port = metrics[1] if metrics else None
    admin_port = admin[1] if admin else None
    for what, port in (("health", health_port), ("metrics", metrics_port)):
        expect(port in ports.values(), f"the {what} port {port} is not a containerPort")
    expect(admin_port not in ports.values(), f"the admin port {admin_port} is a containerPort: it is loopback only")
    for probe, path in HEALTH_PATHS:
        get = container.get(probe, {}).get("httpGet", {})
        expect(get.get("path") == path, f"{probe} does not GET {path}")
        expect(resolve_port(ports, get.get("port")) == health_port, f"{probe} is not on the health port {health_port}")
    expect(annotations.get("prometheus.io/scrape") == "true", "no prometheus.io/scrape annotation")
    expect(annotations.get("prometheus.io/port") == str(metrics_port), f"prometheus.io/port {annotations.get('prometheus.io/port')} is not the metrics port {metrics_port}")
    expect(annotations.get("prometheus.io/path") == SCRAPE_PATH, f"prometheus.io/path is not {SCRAPE_PATH}")

    # Istio's workload labels (istio_tcp_*): from [telemetry], else the pod's environment.
    telemetry = config.get("telemetry", {})
    env = env_sources(container)

    def field(name):
        source = env.get(name)
        return source.get("fieldRef", {}).get("fieldPath") if isinstance(source, dict) else None

    if "workload_name" not in telemetry and "ISTIO_META_WORKLOAD_NAME" not in env:
        expect(field("POD_NAME") == "metadata.name", "POD_NAME is not the downward API's metadata.name (the workload label)")
    if "workload_namespace" not in telemetry:
        expect(field("POD_NAMESPACE") == "metadata.namespace", "POD_NAMESPACE is not the downward API's metadata.namespace")
    if "canonical_service" not in telemetry:
        expect(field("CANONICAL_SERVICE") == f"metadata.labels['{CANONICAL_LABEL}']", f"CANONICAL_SERVICE does not read the pod label {CANONICAL_LABEL}")
        expect(labels.get(CANONICAL_LABEL) == name, f"the pod label {CANONICAL_LABEL} is {labels.get(CANONICAL_LABEL)!r}, not the workload {name}")
    if "cluster_id" not in telemetry:
        cluster = env.get("ISTIO_META_CLUSTER_ID")
        expect(isinstance(cluster, str) and cluster != "", "ISTIO_META_CLUSTER_ID is not set to the cluster's ID")

    # Every listener's port is a container port, and no two ports of the process collide.
    listener_ports = set()
    for listener in config.get("listener", []):
        lport = int(listener["address"].rsplit(":", 1)[1])
        lhost = listener["address"].rsplit(":", 1)[0]
        listener_ports.add(lport)
        expect(lhost == "0.0.0.0", f"listener {listener['name']} binds {lhost}, not reachable from other pods")
        expect(lport in ports.values(), f"listener {listener['name']} port {lport} is not a containerPort")
    bound = [int(l["address"].rsplit(":", 1)[1]) for l in config.get("listener", [])] + [p for p in (health_port, metrics_port, admin_port) if p]
    expect(len(bound) == len(set(bound)), f"two of the process's ports collide: {sorted(bound)}")
    expect(set(ports.values()) == listener_ports | {health_port, metrics_port}, f"containerPorts {sorted(ports.values())} are not the listeners', health and metrics ports")

    # The NetworkPolicy admits the listeners, the probes and the scrapes, and never the admin port.
    opened = network_policy_ports(docs, labels)
    expect(opened is not None, "a NetworkPolicy rule admits every port (no ports list), the admin port too")
    if opened is not None:
        expect(opened == listener_ports | {health_port, metrics_port}, f"the NetworkPolicy admits {sorted(opened)}, not the listeners', health and metrics ports")
        expect(admin_port not in opened, f"the NetworkPolicy admits the admin port {admin_port}")

    # Every credential directory the config reads is a mounted Secret that exists (or that a
    # cert-manager Certificate writes).
    secrets = {s["metadata"]["name"] for s in by_kind(docs, "Secret")}
    certificates = {c["spec"]["secretName"]: c for c in by_kind(docs, "Certificate")}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    dirs = [listener["tls"]["dir"] for listener in config.get("listener", []) if "tls" in listener]
    dirs += [route["upstream_tls"]["dir"] for route in config.get("route", []) if "dir" in route.get("upstream_tls", {})]
    for d in dirs:
        mount = mounts.get(d)
        expect(mount is not None, f"credential dir {d} is not a volume mount")
        if mount is None:
            continue
        expect(mount.get("readOnly") is True and "subPath" not in mount, f"{d} must be a read-only directory mount (no subPath: updates would not arrive)")
        secret = volumes[mount["name"]].get("secret", {}).get("secretName")
        expect(secret in secrets or secret in certificates, f"{d} mounts Secret {secret}, which nothing creates")
        for s in by_kind(docs, "Secret"):
            if s["metadata"]["name"] == secret:
                expect(set(s["data"]) == {"tls.crt", "tls.key", "ca.crt"}, f"Secret {secret} is not tls.crt/tls.key/ca.crt")
        if secret in certificates:
            cert = certificates[secret]
            hosts = sorted({h for r in config.get("route", []) for h in r.get("hosts", [])})
            expect(sorted(cert["spec"]["dnsNames"]) == hosts, f"Certificate dnsNames {cert['spec']['dnsNames']} are not the routes' hosts {hosts}")
            issuer = cert["spec"]["issuerRef"]["name"]
            expect(issuer in {i["metadata"]["name"] for i in by_kind(docs, "Issuer")}, f"Certificate's issuer {issuer} is not rendered")
            expect("server auth" in cert["spec"].get("usages", []), "Certificate lacks the server auth usage")

    # Hardening.
    psc = pod.get("securityContext", {})
    csc = container.get("securityContext", {})
    expect(psc.get("runAsNonRoot") is True and csc.get("runAsNonRoot") is True, "runAsNonRoot is not set")
    expect(psc.get("runAsUser", 0) >= 10000, "runAsUser is not a high non-root uid")
    expect(csc.get("readOnlyRootFilesystem") is True, "the root filesystem is writable")
    expect(csc.get("allowPrivilegeEscalation") is False, "privilege escalation is allowed")
    expect(csc.get("capabilities", {}).get("drop") == ["ALL"], "capabilities are not all dropped")
    expect(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", "no RuntimeDefault seccomp profile")
    expect(pod.get("automountServiceAccountToken") is False, "the service account token is mounted")
    for kind in ("requests", "limits"):
        for res in ("cpu", "memory"):
            expect(res in container.get("resources", {}).get(kind, {}), f"no {res} {kind}")
    terms = pod.get("affinity", {}).get("podAntiAffinity", {}).get("preferredDuringSchedulingIgnoredDuringExecution", [])
    expect(any(t["podAffinityTerm"]["topologyKey"] == "topology.kubernetes.io/zone" for t in terms), "no anti-affinity across zones")

    # Drain: the grace period covers the preStop hook, the drain delay, the drain timeout, and
    # the few seconds cut connections get to write their records.
    delay, drain = drain_settings(config)
    sleep = pre_stop_seconds(container)
    expect(sleep is not None, "the preStop hook is not a sleep action (the image has no shell for exec)")
    sleep = sleep or 0
    grace = pod.get("terminationGracePeriodSeconds", 30)
    budget = sleep + delay + drain
    expect(grace > budget, f"terminationGracePeriodSeconds {grace} <= preStop {sleep} + drain_delay {delay:g} + drain_timeout {drain:g}")
    expect(grace >= budget + CUT_GRACE, f"terminationGracePeriodSeconds {grace} leaves cut connections less than {CUT_GRACE}s after preStop + drain_delay + drain_timeout ({budget:g}s) to write their records")

    # PDB, HPA and Service point at these pods.
    pdb = one(docs, "PodDisruptionBudget")
    expect(matches(pdb["spec"]["selector"]["matchLabels"], labels), "the PDB selects no gateway pod")
    hpa = one(docs, "HorizontalPodAutoscaler")
    expect(hpa["spec"]["scaleTargetRef"]["name"] == name, "the HPA scales another Deployment")
    expect(hpa["spec"]["minReplicas"] > pdb["spec"]["minAvailable"], "HPA minReplicas must exceed the PDB's minAvailable or drains block")
    expect(any(m["resource"]["name"] == "cpu" for m in hpa["spec"]["metrics"]), "the HPA does not scale on CPU")
    service = one(docs, "Service")
    expect(matches(service["spec"]["selector"], labels), "the Service selects no gateway pod")
    for p in service["spec"]["ports"]:
        target = resolve_port(ports, p["targetPort"])
        expect(target in listener_ports, f"Service port {p['name']} targets {p['targetPort']}, not a listener's port")
        expect(admin_port not in (p["port"], target), f"Service port {p['name']} exposes the admin port {admin_port}")
    if role == "strait-ingress":
        expect(service["spec"]["type"] == "LoadBalancer", "the ingress Service is not a LoadBalancer")
        expect(13306 in [p["port"] for p in service["spec"]["ports"]], "the ingress Service does not expose 13306")
    else:
        expect({3306, 15443} <= {p["port"] for p in service["spec"]["ports"]}, "the egress Service lacks 3306 or 15443")

    for p in problems:
        print(f"{name}: {p}", file=sys.stderr)
    if problems:
        raise SystemExit(1)
    admin_text = f"admin {admin[0]}:{admin_port} (loopback, unexposed)" if admin else "no admin port"
    print(f"{name}: {role}, health :{health_port}, metrics :{metrics_port}{SCRAPE_PATH}, {admin_text}, "
          f"grace {grace}s > preStop {sleep}s + drain_delay {delay:g}s + drain_timeout {drain:g}s (+{CUT_GRACE}s cut), {len(dirs)} credential mounts")


def lay_out(directory, files, mode):
    """The kubelet's atomic-writer layout: files in a timestamped dir behind ..data."""
    stamp = "..2026_01_01_00_00_00.000000001"
    os.makedirs(os.path.join(directory, stamp))
    for key, content in files.items():
        path = os.path.join(directory, stamp, key)
        with open(path, "wb") as f:
            f.write(content)
        os.chown(path, 0, FS_GROUP)
        os.chmod(path, mode)
        os.symlink(os.path.join("..data", key), os.path.join(directory, key))
    os.symlink(stamp, os.path.join(directory, "..data"))
    os.chmod(directory, 0o755)
    os.chmod(os.path.join(directory, stamp), 0o755)


def downward(deployment, pod_name, field_path):
    """What the kubelet puts in an env var's fieldRef for a pod of this Deployment."""
    metadata = deployment["spec"]["template"]["metadata"]
    label = re.fullmatch(r"metadata\.labels\['(.+)'\]", field_path)
    if label:
        return metadata.get("labels", {}).get(label.group(1), "")
    annotation = re.fullmatch(r"metadata\.annotations\['(.+)'\]", field_path)
    if annotation:
        return metadata.get("annotations", {}).get(annotation.group(1), "")
    values = {"metadata.name": pod_name, "metadata.namespace": deployment["metadata"].get("namespace", "default")}
    if field_path not in values:
        raise SystemExit(f"the check cannot resolve fieldRef {field_path}")
    return values[field_path]


def pod(rendered, out_dir):
    docs = load([rendered])
    deployment = one(docs, "Deployment")
    spec = deployment["spec"]["template"]["spec"]
    container = spec["containers"][0]
    config, _ = config_of(docs, deployment)
    configmaps = {c["metadata"]["name"]: c for c in by_kind(docs, "ConfigMap")}
    secrets = {s["metadata"]["name"]: s for s in by_kind(docs, "Secret")}
    print("COMMAND " + " ".join(container["command"]))
    print("ARGS " + " ".join(container.get("args", [])))
    for mount in container["volumeMounts"]:
        volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
        target = os.path.join(out_dir, mount["name"])
        if "configMap" in volume:
            data = configmaps[volume["configMap"]["name"]]["data"]
            lay_out(target, {k: v.encode() for k, v in data.items()}, volume["configMap"].get("defaultMode", 0o644))
        else:
            data = secrets[volume["secret"]["secretName"]]["data"]
            lay_out(target, {k: base64.b64decode(v) for k, v in data.items()}, volume["secret"].get("defaultMode", 0o644))
        print(f"MOUNT {target} {mount['mountPath']}")
    # A pod name as a ReplicaSet of this Deployment names its pods: NAME-HASH-SUFFIX.
    pod_name = f"{deployment['metadata']['name']}-5d9c7b6f4-x2x4q"
    for env in container.get("env", []):
        if "value" in env:
            value = env["value"]
        elif "fieldRef" in env.get("valueFrom", {}):
            value = downward(deployment, pod_name, env["valueFrom"]["fieldRef"]["fieldPath"])
        else:
            raise SystemExit(f"the check cannot resolve env {env['name']}: {env.get('valueFrom')}")
        print(f"ENV {env['name']} {value}")
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for port in ports.values():
        print(f"PORT {port}")
    for key, probe in (("READY", "readinessProbe"), ("LIVE", "livenessProbe")):
        get = container[probe]["httpGet"]
        print(f"{key} {resolve_port(ports, get['port'])} {get['path']}")
    annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
    print(f"METRICS {annotations['prometheus.io/port']} {annotations['prometheus.io/path']}")
    admin = http_port(config, "admin", container)
    if admin:
        print(f"ADMIN {admin[0]}:{admin[1]}")
    delay, _ = drain_settings(config)
    print(f"DRAIN_DELAY {delay:g}")
    print(f"GRACE {spec.get('terminationGracePeriodSeconds', 30)}")


def listening(*paths):
    """/proc/net/tcp{,6} rows in state 0A (LISTEN): local addresses, decoded."""
    for path in paths:
        with open(path) as f:
            rows = [line.split() for line in f.readlines()[1:]]
        for row in rows:
            if row[3] != "0A":
                continue
            address, port = row[1].split(":")
            raw = bytes.fromhex(address)
            # The kernel prints each 32-bit word in host (little-endian) order.
            words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            host = ".".join(str(b) for b in words) if len(words) == 4 else "[" + ipaddress.IPv6Address(words).compressed + "]"
            print(f"{host}:{int(port, 16)}")


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    {"split": lambda: split(*args), "policy": lambda: policy(args), "pod": lambda: pod(*args), "listening": lambda: listening(*args)}[command]()
