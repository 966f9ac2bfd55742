#!/usr/bin/env python3
"""Checks the Kubernetes manifests without a cluster.

    python3 deploy/kubernetes/check.py        # needs PyYAML; kustomize or kubectl to render

1. Every YAML file parses, and every path a kustomization.yaml names exists.
2. Every TOUCHSTONE_* variable the manifests set names a setting that
   services/platform/src/config.rs defines (a renamed setting is otherwise
   ignored in silence or stops start-up).
3. With `kustomize` or `kubectl` on PATH, each overlay renders to exactly the
   expected objects, and each service's objects agree with each other: ports,
   probes, health names, Secrets, ConfigMaps, peers, hardening, the migrate
   phase label (Jobs and what they need only), and network policies admitting exactly the callers each
   service has.

Exits non-zero with one line per problem.
"""

import pathlib
import re
import shutil
import subprocess
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"
CONFIG_RS = ROOT / "services" / "platform" / "src" / "config.rs"

# service -> (gRPC port, gRPC service name for readiness, services it calls
# with the service token)
SERVICES = {
    "register": (50051, "touchstone.register.v1.RegisterService", []),
    "complaints": (50052, "touchstone.complaints.v1.ComplaintsService", ["register"]),
    "feedback": (50053, "touchstone.feedback.v1.FeedbackService", ["register"]),
    "kpi": (50054, "touchstone.kpi.v1.KpiService", ["complaints", "feedback"]),
    "gateway": (
        50055,
        "touchstone.gateway.v1.GatewayService",
        ["register", "complaints", "feedback", "kpi"],
    ),
}
GATEWAY_HTTP_PORT = 8080
OVERLAYS = {"dev": "touchstone-dev", "prod": "touchstone", "prod-cloudnative-pg": "touchstone",
            "prod-cloudnative-pg-keda": "touchstone"}
# Overlays whose databases are CloudNativePG Clusters behind Poolers
# (components/cloudnative-pg), with PodMonitors, and the kind that
# autoscales each Deployment.
CNPG_OVERLAYS = {"prod-cloudnative-pg": "HorizontalPodAutoscaler",
                 "prod-cloudnative-pg-keda": "ScaledObject"}
POSTGRES_CA = "/etc/touchstone/postgres-ca/ca.crt"

problems = []


def problem(msg):
    problems.append(msg)


def load_all(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def check_files():
    for path in sorted(KUBE.rglob("*.yaml")):
        try:
            load_all(path)
        except yaml.YAMLError as e:
            problem(f"{path.relative_to(ROOT)}: does not parse: {e}")
    for path in sorted(KUBE.rglob("kustomization.yaml")):
        k = load_all(path)[0]
        here = path.parent
        named = list(k.get("resources", [])) + list(k.get("components", []))
        named += [p["path"] for p in k.get("patches", []) if "path" in p]
        for gen in k.get("configMapGenerator", []) + k.get("secretGenerator", []):
            named += gen.get("envs", []) + gen.get("files", [])
        for name in named:
            target = here / name
            if target.is_dir():
                if not (target / "kustomization.yaml").is_file():
                    problem(f"{path.relative_to(ROOT)}: {name}/ has no kustomization.yaml")
            elif not target.is_file():
                problem(f"{path.relative_to(ROOT)}: {name} does not exist")


def known_settings():
    """Environment names of every setting in config.rs, e.g. TOUCHSTONE_HUB__HTTP_LISTEN."""
    src = CONFIG_RS.read_text()
    structs = {}
    for m in re.finditer(r"pub struct (\w+) \{(.*?)\n\}", src, re.S):
        fields = re.findall(r"pub (\w+): ([\w:<>]+),", m.group(2))
        structs[m.group(1)] = {name: ty for name, ty in fields}
    names = set()

    def walk(struct, prefix):
        for field, ty in structs[struct].items():
            env = f"{prefix}{field.upper()}"
            if ty in structs:
                walk(ty, env + "__")
            else:
                names.add(env)

    walk("Settings", "TOUCHSTONE_")
    return names


def check_setting_names():
    if not CONFIG_RS.is_file():
        return
    known = known_settings()
    used = set()
    for path in KUBE.rglob("*.env"):
        for line in path.read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                used.add((line.split("=", 1)[0], path))
    for path in KUBE.rglob("*.yaml"):
        for m in re.finditer(r"\b(TOUCHSTONE_[A-Z0-9_]+)\b", path.read_text()):
            if "__" in m.group(1) or m.group(1) in known:
                used.add((m.group(1), path))
    for name, path in sorted(used):
        if name not in known and not name.endswith("_"):
            problem(f"{path.relative_to(ROOT)}: {name} is not a setting in config.rs")


def renderer():
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


def env_of(container, configmaps):
    """The container's environment: ConfigMaps in order, then env (values or refs)."""
    env = {}
    for src in container.get("envFrom", []):
        env.update(configmaps.get(src["configMapRef"]["name"], {}))
    for e in container.get("env", []):
        env[e["name"]] = e.get("value", e.get("valueFrom"))
    return env


def check_overlay(name, namespace, render):
    cnpg = name in CNPG_OVERLAYS
    scaler = CNPG_OVERLAYS.get(name)
    out = subprocess.run(
        render + [str(KUBE / "overlays" / name)], capture_output=True, text=True
    )
    if out.returncode != 0:
        problem(f"overlay {name}: does not build: {out.stderr.strip()}")
        return
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    where = f"overlay {name}"
    objects = {}
    configmaps = {}
    for d in docs:
        kind, meta = d["kind"], d["metadata"]
        if meta.get("namespace") != namespace:
            problem(f"{where}: {kind}/{meta['name']} is not in namespace {namespace}")
        if meta.get("labels", {}).get("app.kubernetes.io/part-of") != "touchstone":
            problem(f"{where}: {kind}/{meta['name']} lacks the part-of label")
        if kind == "ConfigMap":
            base = re.sub(r"-[a-z0-9]{10}$", "", meta["name"])
            objects[(kind, base)] = d
            configmaps[meta["name"]] = d.get("data", {})
        else:
            objects[(kind, meta["name"])] = d

    expected = {("ConfigMap", "touchstone-common")}
    for svc in SERVICES:
        n = f"touchstone-{svc}"
        for kind in ("Deployment", "Service", "ServiceAccount", "PodDisruptionBudget",
                     "NetworkPolicy", "ConfigMap"):
            expected.add((kind, n))
        expected.add(("Job", f"{n}-migrate"))
        expected.add(("Service", f"{n}-pods"))
        if cnpg:
            expected |= {("Cluster", f"{n}-db"), ("Pooler", f"{n}-pooler"), (scaler, n)}
    if cnpg:
        expected |= {("PodMonitor", m) for m in
                     ("touchstone", "touchstone-postgres", "touchstone-poolers")}
        expected.add(("NetworkPolicy", "touchstone-metrics"))
    # `kubectl apply -l touchstone/phase=migrate` must select the Jobs and
    # all they need (ConfigMaps, ServiceAccounts), and nothing that would
    # start a rollout.
    for (kind, n), d in objects.items():
        phase = d["metadata"].get("labels", {}).get("touchstone/phase")
        if (phase == "migrate") != (kind in ("Job", "ConfigMap", "ServiceAccount")):
            problem(f"{where}: {kind}/{n}: label touchstone/phase is {phase!r}")
    for k in sorted(set(objects) - expected):
        problem(f"{where}: unexpected {k[0]}/{k[1]}")
    for k in sorted(expected - set(objects)):
        problem(f"{where}: missing {k[0]}/{k[1]}")

    secrets = {
        d["metadata"]["name"]
        for d in load_all(KUBE / "base" / "secret.example.yaml")
    }
    common = configmaps.get(
        objects.get(("ConfigMap", "touchstone-common"), {}).get("metadata", {}).get("name"), {}
    )
    for svc, port in ((s, v[0]) for s, v in SERVICES.items()):
        peer = common.get(f"TOUCHSTONE_PEERS__{svc.upper()}")
        # The headless Service: one address per ready pod, balanced per call.
        if svc != "gateway" and peer != f"http://touchstone-{svc}-pods:{port}":
            problem(f"{where}: TOUCHSTONE_PEERS__{svc.upper()} is {peer!r}")

    callers = {svc: set() for svc in SERVICES}
    for svc, (_, _, calls) in SERVICES.items():
        for callee in calls:
            callers[callee].add(svc)

    for svc, (port, grpc_name, calls) in SERVICES.items():
        n = f"touchstone-{svc}"
        up = svc.upper()
        dep = objects.get(("Deployment", n))
        job = objects.get(("Job", f"{n}-migrate"))
        if not dep or not job:
            continue
        w = f"{where}: Deployment/{n}"
        labels = {"app.kubernetes.io/name": n}
        if dep["spec"]["selector"]["matchLabels"] != labels:
            problem(f"{w}: selector is {dep['spec']['selector']['matchLabels']}")
        pod = dep["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        if c.get("args") != ["serve", svc]:
            problem(f"{w}: args {c.get('args')}")
        ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        want_ports = {"grpc": port}
        if svc == "gateway":
            want_ports["http"] = GATEWAY_HTTP_PORT
        if ports != want_ports:
            problem(f"{w}: ports {ports}, expected {want_ports}")
        ann = dep["spec"]["template"]["metadata"].get("annotations", {})
        if ann.get("prometheus.io/port") != str(port):
            problem(f"{w}: prometheus.io/port is {ann.get('prometheus.io/port')}")
        for probe, service in (("startupProbe", None), ("readinessProbe", grpc_name),
                               ("livenessProbe", "liveness")):
            g = c.get(probe, {}).get("grpc")
            if not g or g.get("port") != port or g.get("service") != service:
                problem(f"{w}: {probe} is {c.get(probe)}")
        psc, csc = pod.get("securityContext", {}), c.get("securityContext", {})
        if not (psc.get("runAsNonRoot") and psc.get("seccompProfile", {}).get("type") == "RuntimeDefault"
                and csc.get("readOnlyRootFilesystem") and csc.get("allowPrivilegeEscalation") is False
                and csc.get("capabilities", {}).get("drop") == ["ALL"]):
            problem(f"{w}: hardening is incomplete")
        if pod.get("automountServiceAccountToken") is not False or pod.get("enableServiceLinks") is not False:
            problem(f"{w}: mounts an API token or injects service links")
        if pod.get("serviceAccountName") != n:
            problem(f"{w}: service account {pod.get('serviceAccountName')}")
        if "preStop" not in c.get("lifecycle", {}):
            problem(f"{w}: no preStop")
        if not c.get("resources", {}).get("limits"):
            problem(f"{w}: no resource limits")
        if dep["spec"].get("strategy", {}).get("rollingUpdate", {}).get("maxUnavailable") != 0:
            problem(f"{w}: rollout may take pods down before new ones are ready")

        env = env_of(c, configmaps)
        if env.get(f"TOUCHSTONE_{up}__LISTEN") != f"0.0.0.0:{port}":
            problem(f"{w}: TOUCHSTONE_{up}__LISTEN is {env.get(f'TOUCHSTONE_{up}__LISTEN')}")
        if svc == "gateway" and env.get("TOUCHSTONE_HUB__HTTP_LISTEN") != f"0.0.0.0:{GATEWAY_HTTP_PORT}":
            problem(f"{w}: TOUCHSTONE_HUB__HTTP_LISTEN is {env.get('TOUCHSTONE_HUB__HTTP_LISTEN')}")
        if env.get(f"TOUCHSTONE_{up}__MIGRATE_ON_START") != "false":
            problem(f"{w}: serving pods must not migrate")
        if not env.get(f"TOUCHSTONE_{up}__APP_ROLE"):
            problem(f"{w}: no TOUCHSTONE_{up}__APP_ROLE")
        if f"TOUCHSTONE_{up}__MIGRATION_URL" in env:
            problem(f"{w}: serving pods must not hold the owner role's URL")
        refs = {e["valueFrom"]["secretKeyRef"]["name"]: e["valueFrom"]["secretKeyRef"]["key"]
                for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}
        want_refs = {n, f"{n}-db-approle"} if cnpg else {n}
        if set(refs) != want_refs:
            problem(f"{w}: reads Secrets {sorted(refs)}, expected {sorted(want_refs)}")
        if cnpg:
            check_cnpg_service(where, svc, objects, dep, job, env, configmaps, scaler)
        vols = {v["name"]: v for v in pod.get("volumes", [])}
        mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
        if vols.get(mounts.get("/tmp"), {}).get("emptyDir") is None:
            problem(f"{w}: no emptyDir on /tmp")
        token_file = env.get("TOUCHSTONE_SERVICE_TOKEN_FILE")
        if calls:
            mount_dir, _, file_name = (token_file or "").rpartition("/")
            vol = vols.get(mounts.get(mount_dir), {}).get("secret", {})
            if vol.get("secretName") != "touchstone-service-token" or file_name not in [
                i["path"] for i in vol.get("items", [])
            ]:
                problem(f"{w}: TOUCHSTONE_SERVICE_TOKEN_FILE ({token_file}) is not the mounted token")
            if any("subPath" in m for m in c.get("volumeMounts", [])):
                problem(f"{w}: a subPath mount never sees a rotated token")
        elif token_file:
            problem(f"{w}: calls no one but has a service token")
        for s in set(refs) | {v["secret"]["secretName"] for v in vols.values() if "secret" in v}:
            if cnpg and s.startswith(f"{n}-db-"):
                continue
            if s not in secrets:
                problem(f"{w}: Secret {s} is not in secret.example.yaml")

        sa = job["spec"]["template"]["spec"].get("serviceAccountName")
        if ("ServiceAccount", sa) not in objects:
            problem(f"{where}: Job/{n}-migrate: runs as a missing ServiceAccount {sa}")
        jc = job["spec"]["template"]["spec"]["containers"][0]
        jw = f"{where}: Job/{n}-migrate"
        if jc.get("args") != ["migrate", svc]:
            problem(f"{jw}: args {jc.get('args')}")
        jenv = env_of(jc, configmaps)
        for key in (f"TOUCHSTONE_{up}__MIGRATION_URL", f"TOUCHSTONE_{up}__DATABASE_URL",
                    f"TOUCHSTONE_{up}__APP_ROLE"):
            if not jenv.get(key):
                problem(f"{jw}: no {key}")
        if job["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/name") == n:
            problem(f"{jw}: its pods would join the Service")
        if not job["spec"]["template"]["spec"].get("securityContext", {}).get("runAsNonRoot"):
            problem(f"{jw}: hardening is incomplete")

        pods = objects.get(("Service", f"{n}-pods"))
        if pods:
            spec = pods["spec"]
            if (spec.get("clusterIP") != "None" or spec.get("selector") != labels
                    or spec.get("publishNotReadyAddresses")
                    or [p.get("port") for p in spec.get("ports", [])] != [port]):
                problem(f"{where}: Service/{n}-pods is not a headless Service of the ready pods on {port}")

        svc_obj = objects.get(("Service", n))
        if svc_obj:
            if svc_obj["spec"]["selector"] != labels:
                problem(f"{where}: Service/{n}: selector {svc_obj['spec']['selector']}")
            for p in svc_obj["spec"]["ports"]:
                if p["targetPort"] not in ports or p["port"] != ports[p["targetPort"]]:
                    problem(f"{where}: Service/{n}: port {p}")
        pdb = objects.get(("PodDisruptionBudget", n))
        if pdb and pdb["spec"]["selector"]["matchLabels"] != labels:
            problem(f"{where}: PodDisruptionBudget/{n}: selector")
        np = objects.get(("NetworkPolicy", n))
        if np:
            if np["spec"]["podSelector"]["matchLabels"] != labels:
                problem(f"{where}: NetworkPolicy/{n}: podSelector")
            admitted = set()
            for rule in np["spec"].get("ingress", []):
                rule_ports = {p["port"] for p in rule.get("ports", [])}
                for f in rule.get("from", []):
                    name = f.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name")
                    if name:
                        admitted.add(name.removeprefix("touchstone-"))
                        if rule_ports != {port}:
                            problem(f"{where}: NetworkPolicy/{n}: {name} admitted to {rule_ports}")
                    elif svc == "gateway" and "namespaceSelector" in f:
                        if rule_ports != {GATEWAY_HTTP_PORT}:
                            problem(f"{where}: NetworkPolicy/{n}: ingress namespace admitted to {rule_ports}")
                    else:
                        problem(f"{where}: NetworkPolicy/{n}: admits {f}")
            if admitted != callers[svc]:
                problem(f"{where}: NetworkPolicy/{n}: admits {sorted(admitted)}, callers are {sorted(callers[svc])}")


def check_cnpg_service(where, svc, objects, dep, job, env, configmaps, scaler):
    """A service on CloudNativePG: its Cluster has replicas on separate nodes
    and the app role; its Pooler pools transactions on the primary; the
    serving pods reach it through the pooler with verify-full and the
    transaction pooler setting; the migration Job reaches the primary
    directly, as the owner, with verify-full."""
    n = f"touchstone-{svc}"
    up = svc.upper()
    cluster = objects.get(("Cluster", f"{n}-db"), {}).get("spec", {})
    cw = f"{where}: Cluster/{n}-db"
    if cluster.get("instances", 0) < 2:
        problem(f"{cw}: fewer than two instances")
    if cluster.get("bootstrap", {}).get("initdb", {}).get("owner") != f"touchstone_{svc}_owner":
        problem(f"{cw}: the database owner is not touchstone_{svc}_owner")
    roles = {r["name"]: r for r in cluster.get("managed", {}).get("roles", [])}
    app = roles.get(f"touchstone_{svc}_app", {})
    if not app.get("login") or app.get("bypassrls") or app.get("superuser") \
            or app.get("passwordSecret", {}).get("name") != f"{n}-db-approle":
        problem(f"{cw}: no plain login role touchstone_{svc}_app with Secret {n}-db-approle")
    if f"{n}-pooler" not in cluster.get("certificates", {}).get("serverAltDNSNames", []):
        problem(f"{cw}: the server certificate does not name {n}-pooler (verify-full fails)")
    pooler = objects.get(("Pooler", f"{n}-pooler"), {}).get("spec", {})
    pw = f"{where}: Pooler/{n}-pooler"
    if pooler.get("cluster", {}).get("name") != f"{n}-db" or pooler.get("type") != "rw":
        problem(f"{pw}: not the read-write pooler of {n}-db")
    if pooler.get("pgbouncer", {}).get("poolMode") != "transaction":
        problem(f"{pw}: not in transaction mode")
    scaling = objects.get((scaler, n), {}).get("spec", {})
    if scaling.get("scaleTargetRef", {}).get("name") != n:
        problem(f"{where}: {scaler}/{n} scales {scaling.get('scaleTargetRef')}")
    if scaler == "ScaledObject":
        queries = [t.get("metadata", {}).get("query", "") for t in scaling.get("triggers", [])]
        if not any(f'service="{svc}"' in q for q in queries):
            problem(f"{where}: ScaledObject/{n} has no request-rate trigger for {svc}")
        if calls_feed(svc) and not any(f'consumer="{svc}"' in q for q in queries):
            problem(f"{where}: ScaledObject/{n} has no feed-lag trigger for {svc}")

    def mounted_ca(podspec, container):
        vols = {v["name"]: v for v in podspec.get("volumes", [])}
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        vol = vols.get(mounts.get(POSTGRES_CA.rsplit("/", 1)[0]), {}).get("secret", {})
        return vol.get("secretName") == f"{n}-db-ca"

    app_url = (f"postgres://$(DB_APP_USER):$(DB_APP_PASSWORD)@{n}-pooler:5432/touchstone_{svc}"
               f"?sslmode=verify-full&sslrootcert={POSTGRES_CA}")
    for kind, obj, vars_ in (("Deployment", dep, env),
                             ("Job", job, env_of(job["spec"]["template"]["spec"]["containers"][0],
                                                 configmaps))):
        podspec = obj["spec"]["template"]["spec"]
        c = podspec["containers"][0]
        w = f"{where}: {kind}/{obj['metadata']['name']}"
        if vars_.get(f"TOUCHSTONE_{up}__DATABASE_URL") != app_url:
            problem(f"{w}: TOUCHSTONE_{up}__DATABASE_URL is not {app_url}")
        if vars_.get(f"TOUCHSTONE_{up}__DATABASE_POOLER") != "transaction":
            problem(f"{w}: TOUCHSTONE_{up}__DATABASE_POOLER is not transaction")
        names = [e["name"] for e in c.get("env", [])]
        url_at = names.index(f"TOUCHSTONE_{up}__DATABASE_URL")
        if not {"DB_APP_USER", "DB_APP_PASSWORD"} <= set(names[:url_at]):
            problem(f"{w}: DB_APP_USER and DB_APP_PASSWORD must come before the URL naming them")
        if not mounted_ca(podspec, c):
            problem(f"{w}: {POSTGRES_CA} is not the Secret {n}-db-ca")
    jc = job["spec"]["template"]["spec"]["containers"][0]
    jenv = env_of(jc, configmaps)
    if jenv.get(f"TOUCHSTONE_{up}__MIGRATION_URL") != \
            f"$(DB_OWNER_URI)?sslmode=verify-full&sslrootcert={POSTGRES_CA}":
        problem(f"{where}: Job/{n}-migrate: TOUCHSTONE_{up}__MIGRATION_URL is not the owner's, verify-full")
    owner = jenv.get("DB_OWNER_URI") or {}
    if owner.get("secretKeyRef", {}).get("name") != f"{n}-db-app":
        problem(f"{where}: Job/{n}-migrate: DB_OWNER_URI is not from {n}-db-app")


def calls_feed(svc):
    """Whether the service applies another's change feed (its consumer name
    is the service's own)."""
    return svc in ("complaints", "feedback", "kpi")


def main():
    check_files()
    check_setting_names()
    render = renderer()
    if render is None:
        print("check.py: no kustomize or kubectl on PATH; overlays not rendered", file=sys.stderr)
    else:
        for name, namespace in OVERLAYS.items():
            check_overlay(name, namespace, render)
    for p in problems:
        print(p)
    if problems:
        sys.exit(1)
    print("deploy/kubernetes: manifests check out"
          + ("" if render else " (overlays not rendered)"))


if __name__ == "__main__":
    main()
