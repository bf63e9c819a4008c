"""Offline checks of rendered Kubernetes manifests (kubectl kustomize output).

    manifests.py split RENDERED OUT_DIR
        Writes the built-in kinds (the ones the Kubernetes schemas know) to OUT_DIR/core.yaml
        and the cert-manager kinds to OUT_DIR/crds.yaml.
    manifests.py policy RENDERED [RENDERED ...]
        Checks what schemas cannot: that the Deployment, its ConfigMap's strait.toml, its
        Secrets, Service, PDB, HPA and (when present) cert-manager Certificate agree, and that
        the pod is hardened and drains within its grace period. Exits 1 with every finding.
    manifests.py pod RENDERED OUT_DIR
        Lays out the Deployment's ConfigMap and Secret volumes in OUT_DIR as the kubelet
        does (a ..data symlink to a timestamped directory, files as links through it,
        group 65532, the volume's defaultMode) and prints, one per line: the container's
        command, then its args, then `MOUNT host_dir container_path` per volume mount,
        then `PROBE port path` for the readiness probe.
"""

import base64
import os
import re
import sys
import tomllib

import yaml

CORE_GROUPS = {"v1", "apps/v1", "policy/v1", "autoscaling/v2", "networking.k8s.io/v1"}
FS_GROUP = 65532


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

    # Admin port: reachable by the kubelet, and what the probes and Prometheus use.
    admin = config.get("admin", {}).get("address", "127.0.0.1:15021")
    host, port = admin.rsplit(":", 1)
    expect(host == "0.0.0.0", f"[admin] address {admin} is not reachable by the kubelet (bind 0.0.0.0)")
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe, path in (("readinessProbe", "/healthz/ready"), ("livenessProbe", "/healthz/live"), ("startupProbe", "/healthz/live")):
        get = container.get(probe, {}).get("httpGet", {})
        expect(get.get("path") == path, f"{probe} does not GET {path}")
        expect(ports.get(get.get("port"), get.get("port")) == int(port), f"{probe} is not on the admin port {port}")
    expect(annotations.get("prometheus.io/scrape") == "true", "no prometheus.io/scrape annotation")
    expect(annotations.get("prometheus.io/port") == port, "prometheus.io/port is not the admin port")
    expect(annotations.get("prometheus.io/path") == "/metrics", "prometheus.io/path is not /metrics")

    # Every listener's port is a container port.
    for listener in config.get("listener", []):
        lport = int(listener["address"].rsplit(":", 1)[1])
        lhost = listener["address"].rsplit(":", 1)[0]
        expect(lhost == "0.0.0.0", f"listener {listener['name']} binds {lhost}, not reachable from other pods")
        expect(lport in ports.values(), f"listener {listener['name']} port {lport} is not a containerPort")

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

    # Drain: the grace period covers the preStop sleep and the drain.
    drain = duration_seconds(config.get("process", {}).get("drain_timeout", "30s"))
    sleep = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds")
    expect(sleep is not None, "no preStop sleep action (the image has no shell for exec sleep)")
    grace = pod.get("terminationGracePeriodSeconds", 30)
    expect(sleep is not None and grace > drain + sleep, f"terminationGracePeriodSeconds {grace} <= drain_timeout {drain} + preStop {sleep}")

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
        expect(p["targetPort"] in ports or p["targetPort"] in ports.values(), f"Service port {p['name']} targets no container port")
    if role == "strait-ingress":
        expect(service["spec"]["type"] == "LoadBalancer", "the ingress Service is not a LoadBalancer")
        expect(13306 in [p["port"] for p in service["spec"]["ports"]], "the ingress Service does not expose 13306")
    else:
        expect({3306, 15443} <= {p["port"] for p in service["spec"]["ports"]}, "the egress Service lacks 3306 or 15443")

    for p in problems:
        print(f"{name}: {p}", file=sys.stderr)
    if problems:
        raise SystemExit(1)
    print(f"{name}: {role}, admin {admin}, grace {grace}s > preStop {sleep}s + drain {drain:g}s, {len(dirs)} credential mounts")


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


def pod(rendered, out_dir):
    docs = load([rendered])
    deployment = one(docs, "Deployment")
    spec = deployment["spec"]["template"]["spec"]
    container = spec["containers"][0]
    configmaps = {c["metadata"]["name"]: c for c in by_kind(docs, "ConfigMap")}
    secrets = {s["metadata"]["name"]: s for s in by_kind(docs, "Secret")}
    print(" ".join(container["command"]))
    print(" ".join(container.get("args", [])))
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
    get = container["readinessProbe"]["httpGet"]
    port = {p["name"]: p["containerPort"] for p in container["ports"]}.get(get["port"], get["port"])
    print(f"PROBE {port} {get['path']}")


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    {"split": lambda: split(*args), "policy": lambda: policy(args), "pod": lambda: pod(*args)}[command]()
