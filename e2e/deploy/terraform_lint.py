"""Static checks of terraform/ that need no provider (providers cannot be downloaded here).

    terraform_lint.py TERRAFORM_DIR KUSTOMIZE_DIR LIB_RS

- every .tf file parses (python-hcl2);
- every variable has a description and a type, and is used in its module;
- every var.X, local.X and module.M.O reference names something declared;
- every module call passes only the module's variables and all its required ones;
- every output has a description, and every module output is consumed by a caller or
  exported by it;
- every resource's and data source's provider is in the module's required_providers;
- every file() a module reads exists (the kustomize files the gateway module shares);
- the gateway module's role settings agree with the kustomize overlays (command, ports,
  Service type, names, credential mounts, labels, the cluster id and canonical-service
  label of Istio's metrics), its NetworkPolicy opens the base's health and metrics ports
  (and so never the loopback admin port), and the examples' SQL is TUTORIAL_SQL.
Prints every finding and exits 1 if there is any.
"""

import glob
import os
import re
import sys
import tomllib

import hcl2
import yaml

findings = []


def finding(where, what):
    findings.append(f"{where}: {what}")


def blocks(parsed, kind):
    """[(name, body)] of `kind` blocks (variable, output, module, ...) across files."""
    out = []
    for doc in parsed:
        for block in doc.get(kind, []):
            for name, body in block.items():
                out.append((name, body))
    return out


def first(value):
    return value[0] if isinstance(value, list) and value else value


class Module:
    def __init__(self, path):
        self.path = path
        self.files = sorted(glob.glob(os.path.join(path, "*.tf")))
        self.text = ""
        self.parsed = []
        for f in self.files:
            text = open(f).read()
            self.text += text + "\n"
            try:
                self.parsed.append(hcl2.loads(text))
            except Exception as e:  # noqa: BLE001 - any parse error is the finding
                finding(f, f"does not parse: {e}")
        self.variables = dict(blocks(self.parsed, "variable"))
        self.outputs = dict(blocks(self.parsed, "output"))
        self.calls = dict(blocks(self.parsed, "module"))
        self.locals = {}
        for doc in self.parsed:
            for block in doc.get("locals", []):
                self.locals.update({k: v for k, v in block.items() if not k.startswith("__")})


def code_only(text):
    return "\n".join(re.sub(r"(^|\s)#.*$", "", line) for line in text.splitlines())


def check_module(m, modules):
    code = code_only(m.text)
    for name, body in m.variables.items():
        if not first(body.get("description", "")):
            finding(m.path, f"variable {name} has no description")
        if "type" not in body:
            finding(m.path, f"variable {name} has no type")
        if not re.search(rf"\bvar\.{name}\b", code):
            finding(m.path, f"variable {name} is never used")
    for ref in sorted(set(re.findall(r"\bvar\.([A-Za-z0-9_]+)", code))):
        if ref not in m.variables:
            finding(m.path, f"var.{ref} is not declared")
    for ref in sorted(set(re.findall(r"\blocal\.([A-Za-z0-9_]+)", code))):
        if ref not in m.locals:
            finding(m.path, f"local.{ref} is not declared")
    for name, body in m.outputs.items():
        if not first(body.get("description", "")):
            finding(m.path, f"output {name} has no description")

    required = set()
    for doc in m.parsed:
        for tf in doc.get("terraform", []):
            for rp in tf.get("required_providers", []):
                required.update(k for k in rp if not k.startswith("__"))
    used = set()
    for kind in ("resource", "data"):
        for doc in m.parsed:
            for block in doc.get(kind, []):
                used.update(t.split("_")[0] for t in block)
    for provider in sorted(used - required):
        finding(m.path, f"uses provider {provider} without declaring it in required_providers")

    for call, body in m.calls.items():
        source = os.path.normpath(os.path.join(m.path, first(body["source"])))
        target = modules.get(source)
        if target is None:
            finding(m.path, f"module {call}: no module at {source}")
            continue
        given = {k for k in body if not k.startswith("__")} - {"source", "providers", "depends_on", "count", "for_each", "version"}
        for arg in sorted(given - set(target.variables)):
            finding(m.path, f"module {call} passes {arg}, which {source} does not declare")
        for var, vbody in target.variables.items():
            if "default" not in vbody and var not in given:
                finding(m.path, f"module {call} does not pass the required variable {var}")
        for ref in sorted(set(re.findall(rf"\bmodule\.{call}\.([A-Za-z0-9_]+)", code))):
            if ref not in target.outputs:
                finding(m.path, f"module.{call}.{ref} is not an output of {source}")

    for path in re.findall(r'file\("([^"]+)"\)', m.text):
        resolved = path.replace("${path.module}", m.path)
        for name, value in m.locals.items():
            value = first(value)
            if isinstance(value, str) and "${" not in value.replace("${path.module}", ""):
                resolved = resolved.replace("${local.%s}" % name, value.replace("${path.module}", m.path))
        if "${" in resolved:
            finding(m.path, f"cannot resolve file({path})")
        elif not os.path.isfile(resolved):
            finding(m.path, f"file({path}) does not exist ({os.path.normpath(resolved)})")


def check_outputs_consumed(modules):
    for path, target in modules.items():
        if os.path.basename(os.path.dirname(path)) != "modules":
            continue
        consumers = []
        for caller in modules.values():
            for call, body in caller.calls.items():
                if os.path.normpath(os.path.join(caller.path, first(body["source"]))) == path:
                    consumers.append((caller, call))
        if not consumers:
            finding(path, "no example calls this module")
        for out in target.outputs:
            if not any(re.search(rf"\bmodule\.{call}\.{out}\b", code_only(caller.text)) for caller, call in consumers):
                finding(path, f"output {out} is consumed or exported by no caller")


def check_agreement(modules, tf_dir, k8s_dir, lib_rs):
    gateway = modules[os.path.normpath(os.path.join(tf_dir, "modules/gateway"))]
    roles = gateway.locals.get("roles")
    roles = first(roles) if roles else {}
    for role, overlay in (("egress", "client-cluster"), ("ingress", "server-cluster")):
        where = f"modules/gateway local.roles.{role} vs overlays/{overlay}"
        patch = yaml.safe_load(open(os.path.join(k8s_dir, "overlays", overlay, "deployment.yaml")))
        container = patch["spec"]["template"]["spec"]["containers"][0]
        service = yaml.safe_load(open(os.path.join(k8s_dir, "overlays", overlay, "service.yaml")))
        kustomization = yaml.safe_load(open(os.path.join(k8s_dir, "overlays", overlay, "kustomization.yaml")))
        settings = roles.get(role, {})
        if [settings.get("command")] != container["command"]:
            finding(where, f"command {settings.get('command')} != {container['command']}")
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        if settings.get("ports") != ports:
            finding(where, f"ports {settings.get('ports')} != {ports}")
        if settings.get("service_type") != service["spec"]["type"]:
            finding(where, f"Service type {settings.get('service_type')} != {service['spec']['type']}")
        if {p["name"]: p["port"] for p in service["spec"]["ports"]} != ports:
            finding(where, "the overlay's Service ports are not its container ports")
        if kustomization["namePrefix"] != f"strait-{role}-":
            finding(where, f"namePrefix {kustomization['namePrefix']} is not strait-{role}- (the module names objects strait-{role}-*)")
        if kustomization["namespace"] != first(gateway.variables["namespace"]["default"]):
            finding(where, "the overlay's namespace is not the module's default namespace")
        labels = {"app.kubernetes.io/component": role}
        for entry in yaml.safe_load(open(os.path.join(k8s_dir, "base", "kustomization.yaml")))["labels"] + kustomization["labels"]:
            labels.update(entry["pairs"])
        for key, value in labels.items():
            if key not in gateway.text or (value != role and f'"{value}"' not in gateway.text):
                finding(where, f"label {key}={value} is not set by the module")
        # Istio's workload labels: the overlay's cluster id and canonical service are the module's.
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        if settings.get("cluster_id") != env.get("ISTIO_META_CLUSTER_ID"):
            finding(where, f"cluster id {settings.get('cluster_id')} != the overlay's ISTIO_META_CLUSTER_ID {env.get('ISTIO_META_CLUSTER_ID')}")
        if 'name = "ISTIO_META_CLUSTER_ID"' not in gateway.text:
            finding(where, "the module does not set ISTIO_META_CLUSTER_ID")
        canonical = patch["spec"]["template"]["metadata"]["labels"].get("service.istio.io/canonical-name")
        if canonical != f"strait-{role}-gateway" or '"service.istio.io/canonical-name" = local.name' not in gateway.text:
            finding(where, f"the pods' service.istio.io/canonical-name ({canonical}) is not strait-{role}-gateway in both")
        # The credential mounts each example passes equal the overlay's.
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        secret_names = {v["name"]: v["secret"]["secretName"] for v in patch["spec"]["template"]["spec"]["volumes"]}
        modes = {v["secret"].get("defaultMode") for v in patch["spec"]["template"]["spec"]["volumes"]}
        if modes != {0o440} or "defaultMode = 288" not in gateway.text:
            finding(where, "Secret volumes' defaultMode is not 0440 in both")
        for name, secret in secret_names.items():
            if secret != f"strait-{role}-{name}":
                finding(where, f"overlay Secret {secret} is not named strait-{role}-{name} as the module names it")
        for example in ("examples/gke-two-clusters", "examples/existing-clusters"):
            ex = modules[os.path.normpath(os.path.join(tf_dir, example))]
            call = ex.calls.get(role)
            if call is None:
                finding(example, f"does not call the gateway module as {role}")
                continue
            if first(call["credentials"]) != mounts:
                finding(example, f"module {role} credentials {first(call['credentials'])} != overlay mounts {mounts}")
            if f"/{overlay}/strait.toml" not in first(call["config"]) or not first(ex.locals["overlays"]).endswith("deploy/kubernetes/overlays"):
                finding(example, f"module {role} config is not read from overlays/{overlay}/strait.toml")
    # The NetworkPolicy's second rule opens exactly the base's container ports (health and
    # metrics): the base lists no admin port, so the module cannot open it.
    base = yaml.safe_load(open(os.path.join(k8s_dir, "base", "deployment.yaml")))
    base_ports = [p["containerPort"] for p in base["spec"]["template"]["spec"]["containers"][0]["ports"]]
    policy = next((b for doc in gateway.parsed for r in doc.get("resource", []) for t, b in r.items() if t == "kubernetes_network_policy_v1"), {})
    rules = [first(i) for i in first(policy.get("gateway", {}).get("spec", [{}])).get("ingress", [])]
    dynamic_ports = [first(d["ports"]) for rule in rules for d in rule.get("dynamic", []) if "ports" in d]
    if not any(first(d.get("for_each")) == "${local.base_container.ports}" for d in dynamic_ports):
        finding("modules/gateway", f"the NetworkPolicy does not open the base's container ports {base_ports} (dynamic ports over local.base_container.ports)")
    for overlay in ("client-cluster", "server-cluster"):
        with open(os.path.join(k8s_dir, "overlays", overlay, "strait.toml"), "rb") as f:
            admin = int(tomllib.load(f).get("admin", {}).get("address", "127.0.0.1:15000").rsplit(":", 1)[1])
        if admin in base_ports or any(int(p) == admin for rule in rules for p in re.findall(r"'port': \[(\d+)\]", str(rule))):
            finding("modules/gateway", f"the NetworkPolicy opens the admin port {admin} of overlays/{overlay}/strait.toml")

    sql = re.search(r'pub const TUTORIAL_SQL: &str = "(.*?)";', open(lib_rs).read(), re.S)
    sql = " ".join(sql.group(1).replace("\\\n", " ").split()) if sql else None
    for example in ("examples/gke-two-clusters", "examples/existing-clusters"):
        ex = modules[os.path.normpath(os.path.join(tf_dir, example))]
        if " ".join(str(first(ex.locals.get("tutorial_sql", ""))).split()) != sql:
            finding(example, "local.tutorial_sql is not TUTORIAL_SQL of e2e/src/lib.rs")


def main(tf_dir, k8s_dir, lib_rs):
    dirs = sorted({os.path.dirname(f) for f in glob.glob(os.path.join(tf_dir, "**/*.tf"), recursive=True)})
    modules = {os.path.normpath(d): Module(os.path.normpath(d)) for d in dirs}
    for m in modules.values():
        check_module(m, modules)
    check_outputs_consumed(modules)
    check_agreement(modules, tf_dir, k8s_dir, lib_rs)
    for f in findings:
        print(f, file=sys.stderr)
    if findings:
        sys.exit(1)
    n_vars = sum(len(m.variables) for m in modules.values())
    n_out = sum(len(m.outputs) for m in modules.values())
    print(f"{len(modules)} modules, {sum(len(m.files) for m in modules.values())} files, {n_vars} variables, {n_out} outputs: no finding")


if __name__ == "__main__":
    main(*sys.argv[1:])
