#!/usr/bin/env python3
"""Validates the rendered manifests against Kubernetes' and the operators'
schemas, and against policy, without a cluster:

    python3 deploy/kubernetes/validate.py     # in a venv with requirements.txt; kubectl or kustomize

1. Every overlay renders (kustomize or kubectl).
2. Built-in kinds validate with kubernetes-validate in strict mode (unknown
   fields are errors) for KUBERNETES_VERSION.
3. Custom resources (CloudNativePG Cluster and Pooler, KEDA ScaledObject,
   Prometheus Operator PodMonitor) validate against the CRD schemas vendored
   in schemas/ (see schemas/README.md), made strict the same way: a field the
   operator does not know is an error, not pruned in silence.
4. checkov's Kubernetes policies pass, except the few skipped below, each
   with the reason.

check.py checks what the manifests mean (names, ports, wiring); this checks
that the API server and the operators would take them. Exits non-zero with
one line per problem.
"""

import copy
import json
import pathlib
import shutil
import subprocess
import sys
import tempfile

import jsonschema
import kubernetes_validate
import yaml

KUBE = pathlib.Path(__file__).resolve().parent
SCHEMAS = KUBE / "schemas"
OVERLAYS = ["dev", "prod", "prod-cloudnative-pg", "prod-cloudnative-pg-keda"]
# The oldest minor the manifests are meant for whose schemas
# kubernetes-validate ships (gRPC probes are GA since 1.27).
KUBERNETES_VERSION = "1.29.0"

# checkov checks that do not fit, and why.
SKIPPED_CHECKS = {
    # Overlays pin a release tag of an example registry; docs/operations.md
    # says to pin your own registry's digest in your overlay.
    "CKV_K8S_43": "image by digest: the overlays are templates",
    # With a pinned tag or digest, IfNotPresent pulls exactly that image; the
    # dev overlay uses Always for its moving tag.
    "CKV_K8S_15": "imagePullPolicy Always",
    # Settings, the master key and database URLs among them, come from
    # TOUCHSTONE_* environment variables by design (docs/configuration.md);
    # the service token, which rotates, is a file.
    "CKV_K8S_35": "secrets as files instead of environment variables",
    # The migration Jobs' pods listen on no port and take no connection.
    "CKV2_K8S_6": "a NetworkPolicy for every pod (the migration Jobs)",
}

problems = []


def problem(msg):
    problems.append(msg)


def renderer():
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


def strict(schema):
    """A copy of a CRD schema in which every object with listed properties
    rejects others, as `kubectl apply --validate=strict` does, except where
    the CRD preserves unknown fields."""
    schema = copy.deepcopy(schema)

    def walk(s):
        if isinstance(s, dict):
            if (
                s.get("type") == "object"
                and "properties" in s
                and "additionalProperties" not in s
                and not s.get("x-kubernetes-preserve-unknown-fields")
            ):
                s["additionalProperties"] = False
            for v in s.values():
                walk(v)
        elif isinstance(s, list):
            for v in s:
                walk(v)

    walk(schema)
    return schema


def crd_schemas():
    schemas = {}
    for path in sorted(SCHEMAS.glob("*.json")):
        d = json.loads(path.read_text())
        top = d["openAPIV3Schema"]
        # apiVersion, kind and metadata are the API server's, not the CRD's.
        top = dict(top)
        top["properties"] = dict(top.get("properties", {}))
        for key in ("apiVersion", "kind", "metadata"):
            top["properties"][key] = {}
        schemas[(d["apiVersion"], d["kind"])] = strict(top)
    return schemas


def validate(where, docs, crds):
    for d in docs:
        api, kind, name = d.get("apiVersion"), d.get("kind"), d["metadata"]["name"]
        w = f"{where}: {kind}/{name}"
        if (api, kind) in crds:
            v = jsonschema.Draft7Validator(crds[(api, kind)])
            for e in sorted(v.iter_errors(d), key=lambda e: list(e.absolute_path)):
                path = ".".join(str(p) for p in e.absolute_path)
                problem(f"{w}: {path}: {e.message}")
            continue
        group = api.split("/")[0] if "/" in api else ""
        if "." in group and not group.endswith(".k8s.io"):
            problem(f"{w}: no schema for {api} {kind} in {SCHEMAS.name}/")
            continue
        try:
            kubernetes_validate.validate(d, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            problem(f"{w}: {path}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            problem(f"{w}: {e}")


def checkov(rendered):
    exe = shutil.which("checkov") or str(pathlib.Path(sys.executable).parent / "checkov")
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in rendered.items():
            (pathlib.Path(tmp) / f"{name}.yaml").write_text(text)
        out = subprocess.run(
            [exe, "-d", tmp, "--framework", "kubernetes", "--quiet", "--compact",
             "--skip-check", ",".join(SKIPPED_CHECKS), "--output", "json"],
            capture_output=True, text=True,
        )
    try:
        report = json.loads(out.stdout)
    except json.JSONDecodeError:
        problem(f"checkov did not run: {out.stderr.strip()[-500:]}")
        return
    reports = report if isinstance(report, list) else [report]
    for r in reports:
        for c in r.get("results", {}).get("failed_checks", []):
            problem(f"checkov {c['check_id']} ({c['check_name']}): {c['resource']} "
                    f"in {pathlib.Path(c['file_path']).name}")
        summary = r.get("summary", {})
        if summary:
            print(f"checkov: {summary.get('passed', 0)} passed, {summary.get('failed', 0)} failed, "
                  f"{len(SKIPPED_CHECKS)} checks skipped")


def main():
    render = renderer()
    if render is None:
        print("validate.py: needs kustomize or kubectl on PATH", file=sys.stderr)
        sys.exit(1)
    crds = crd_schemas()
    rendered = {}
    for name in OVERLAYS:
        out = subprocess.run(render + [str(KUBE / "overlays" / name)],
                             capture_output=True, text=True)
        if out.returncode != 0:
            problem(f"overlay {name}: does not build: {out.stderr.strip()}")
            continue
        rendered[name] = out.stdout
        docs = [d for d in yaml.safe_load_all(out.stdout) if d]
        validate(f"overlay {name}", docs, crds)
        print(f"overlay {name}: {len(docs)} objects validated against Kubernetes "
              f"{KUBERNETES_VERSION} and the operators' schemas")
    checkov(rendered)
    for p in problems:
        print(p)
    if problems:
        sys.exit(1)
    print("deploy/kubernetes: schemas and policy check out")


if __name__ == "__main__":
    main()
