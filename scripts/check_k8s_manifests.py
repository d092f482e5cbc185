#!/usr/bin/env python3
"""Checks Tessera's Kubernetes manifests before anyone applies them.

    check_k8s_manifests.py DIR [--docs DEPLOY_DOC.md] [--tessera BIN] [--kubernetes-version 1.37.0]

1. Every object in DIR's kustomization validates against the Kubernetes OpenAPI schemas in strict
   mode (unknown fields are errors), with the `kubernetes-validate` package's offline schemas.
2. The references between objects resolve, which no schema checks: Service, PDB and
   NetworkPolicy selectors match pods, probes and Services name ports that exist, HPAs target
   Deployments and scale on metrics the prometheus-adapter rules provide, volumes and env name
   ConfigMaps, PVCs and Secrets that exist (or that the deployment doc tells the reader to
   create, with those keys), and the fleet file's upstreams are Services on the right port with
   their key variables set in the router's environment.
3. With --tessera, the arguments every container of the `tessera` image runs with parse.

Prints one line per problem and exits 1 if there is any.
"""

import argparse
import os
import re
import shlex
import subprocess
import sys

import yaml

try:
    from kubernetes_validate import utils as kv
except ImportError:
    sys.exit("error: the kubernetes-validate package is missing: pip install kubernetes-validate==1.37.0")

NAMESPACED = {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy",
              "PersistentVolumeClaim", "ConfigMap", "Secret"}


class Checker:
    def __init__(self):
        self.problems = []

    def fail(self, where, message):
        self.problems.append(f"{where}: {message}")


def load_documents(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def label_match(selector, labels):
    """Whether a LabelSelector (matchLabels and matchExpressions) selects these labels."""
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e["key"], e["operator"], e.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def documented_secrets(doc_path):
    """Secrets the deployment doc creates with `kubectl [-n NS] create secret generic NAME --from-literal=KEY=...`."""
    secrets = {}
    if not doc_path:
        return secrets
    with open(doc_path) as f:
        text = f.read().replace("\\\n", " ")
    for line in text.splitlines():
        if not re.search(r"\bkubectl\b.*\bcreate secret generic\b", line):
            continue
        words = shlex.split(line.strip(), comments=False, posix=True)
        i = words.index("generic")
        name = words[i + 1]
        keys = set()
        for w in words[i + 2:]:
            m = re.match(r"--from-(?:literal|file)=([^=]+)=", w)
            if m:
                keys.add(m.group(1))
        secrets[name] = keys
    return secrets


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir")
    ap.add_argument("--docs", help="the deployment doc, for the Secrets it tells the reader to create")
    ap.add_argument("--kubernetes-version", default="1.37.0")
    ap.add_argument("--tessera", help="a tessera binary: every container of the `tessera` image must "
                                      "pass its arguments to it without a parse error")
    args = ap.parse_args()
    c = Checker()

    kustomization_path = os.path.join(args.dir, "kustomization.yaml")
    if not os.path.exists(kustomization_path):
        sys.exit(f"error: {kustomization_path} does not exist")
    kustomization = load_documents(kustomization_path)[0]
    resources = kustomization.get("resources") or []
    on_disk = sorted(f for f in os.listdir(args.dir) if f.endswith((".yaml", ".yml")) and f != "kustomization.yaml")
    for f in on_disk:
        if f not in resources:
            c.fail("kustomization.yaml", f"{f} is in the directory but not in resources, so it is never applied")

    objects = []  # (file, document)
    for f in resources:
        path = os.path.join(args.dir, f)
        if not os.path.exists(path):
            c.fail("kustomization.yaml", f"resource {f} does not exist")
            continue
        try:
            docs = load_documents(path)
        except yaml.YAMLError as e:
            c.fail(f, f"not valid YAML: {e}")
            continue
        for d in docs:
            if not isinstance(d, dict) or "kind" not in d or "apiVersion" not in d:
                c.fail(f, "a document without kind and apiVersion")
                continue
            objects.append((f, d))

    generated = {}  # ConfigMap name -> {key: text}
    for g in kustomization.get("configMapGenerator") or []:
        data = {}
        for spec in g.get("files") or []:
            key, _, source = spec.partition("=")
            source = source or key
            path = os.path.join(args.dir, source)
            if not os.path.exists(path):
                c.fail("kustomization.yaml", f"configMapGenerator {g['name']}: file {source} does not exist")
                continue
            with open(path) as fh:
                data[os.path.basename(key)] = fh.read()
        generated[g["name"]] = data
        cm = {"apiVersion": "v1", "kind": "ConfigMap",
              "metadata": {"name": g["name"], "namespace": g.get("namespace", "default")}, "data": data}
        objects.append(("kustomization.yaml", cm))

    # 1. Schemas.
    for f, d in objects:
        where = f"{f}: {d['kind']}/{d.get('metadata', {}).get('name', '?')}"
        try:
            kv.validate(d, args.kubernetes_version, strict=True)
        except kv.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            c.fail(where, f"schema: {path}: {e.message}")
        except kv.SchemaNotFoundError:
            c.fail(where, f"no schema for {d['kind']} {d['apiVersion']} in Kubernetes {args.kubernetes_version}")

    # 2. References.
    def named(kind):
        return {(d["metadata"].get("namespace"), d["metadata"]["name"]): (f, d) for f, d in objects if d["kind"] == kind}

    namespaces = {d["metadata"]["name"] for _, d in objects if d["kind"] == "Namespace"}
    deployments = named("Deployment")
    services = named("Service")
    pvcs = named("PersistentVolumeClaim")
    configmaps = named("ConfigMap")
    secrets = {k: set((d.get("data") or {}) | (d.get("stringData") or {})) for k, (_, d) in named("Secret").items()}
    external = documented_secrets(args.docs)

    for f, d in objects:
        if d["kind"] in NAMESPACED:
            ns = d["metadata"].get("namespace")
            if ns not in namespaces:
                c.fail(f"{f}: {d['kind']}/{d['metadata']['name']}", f"namespace {ns!r} is not one of the manifests' Namespaces")

    def pods_matching(ns, selector):
        return [(name, d) for (dns, name), (_, d) in deployments.items()
                if dns == ns and label_match(selector, d["spec"]["template"]["metadata"].get("labels") or {})]

    def port_names(containers):
        return {p["name"]: p["containerPort"] for ctr in containers for p in ctr.get("ports") or [] if "name" in p}

    def check_secret(where, ns, name, key=None):
        if (ns, name) in secrets:
            if key is not None and key not in secrets[(ns, name)]:
                c.fail(where, f"Secret {name} has no key {key!r}")
        elif name in external:
            if key is not None and key not in external[name]:
                c.fail(where, f"the docs create Secret {name} without the key {key!r}")
        else:
            c.fail(where, f"Secret {name} is neither in the manifests nor created by the deployment doc")

    adapter_path = os.path.join(args.dir, "monitoring", "prometheus-adapter-values.yaml")
    adapter_metrics = set()
    if os.path.exists(adapter_path):
        values = load_documents(adapter_path)[0]
        adapter_metrics = {r["name"]["as"] for r in values.get("rules", {}).get("custom", [])}

    for (ns, name), (f, d) in deployments.items():
        where = f"{f}: Deployment/{name}"
        spec = d["spec"]
        template_labels = spec["template"]["metadata"].get("labels") or {}
        if not label_match(spec["selector"], template_labels):
            c.fail(where, "spec.selector does not match the pod template's labels")
        pod = spec["template"]["spec"]
        containers = pod.get("containers", [])
        ports = port_names(containers)
        volumes = {v["name"]: v for v in pod.get("volumes") or []}
        for ctr in pod.get("initContainers", []) + containers:
            cwhere = f"{where} container {ctr['name']}"
            requests = (ctr.get("resources") or {}).get("requests") or {}
            if "cpu" not in requests or "memory" not in requests:
                c.fail(cwhere, "no cpu and memory requests: the scheduler and the HPA need them")
            for m in ctr.get("volumeMounts") or []:
                if m["name"] not in volumes:
                    c.fail(cwhere, f"mounts volume {m['name']!r}, which the pod does not define")
            for e in ctr.get("env") or []:
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    check_secret(cwhere, ns, ref["name"], ref["key"])
        for ctr in containers:
            cwhere = f"{where} container {ctr['name']}"
            if "readinessProbe" not in ctr:
                c.fail(cwhere, "no readinessProbe: traffic would reach it before it can serve")
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                p = ctr.get(probe) or {}
                port = (p.get("httpGet") or p.get("tcpSocket") or {}).get("port")
                if isinstance(port, str) and port not in ports:
                    c.fail(cwhere, f"{probe} uses port {port!r}, which no container declares")
        for v in volumes.values():
            if "persistentVolumeClaim" in v and (ns, v["persistentVolumeClaim"]["claimName"]) not in pvcs:
                c.fail(where, f"volume {v['name']}: PVC {v['persistentVolumeClaim']['claimName']} does not exist")
            if "configMap" in v and (ns, v["configMap"]["name"]) not in configmaps:
                c.fail(where, f"volume {v['name']}: ConfigMap {v['configMap']['name']} does not exist")
            if "secret" in v:
                items = v["secret"].get("items") or [None]
                for item in items:
                    check_secret(f"{where} volume {v['name']}", ns, v["secret"]["secretName"], item and item["key"])

    for (ns, name), (f, d) in services.items():
        where = f"{f}: Service/{name}"
        matched = pods_matching(ns, {"matchLabels": d["spec"].get("selector") or {}})
        if not matched:
            c.fail(where, "its selector matches no Deployment's pods")
        for p in d["spec"].get("ports") or []:
            target = p.get("targetPort", p["port"])
            for dep_name, dep in matched:
                ports = port_names(dep["spec"]["template"]["spec"]["containers"])
                if isinstance(target, str) and target not in ports:
                    c.fail(where, f"targetPort {target!r} is not a port of Deployment/{dep_name}")
                if isinstance(target, int) and target not in ports.values():
                    c.fail(where, f"targetPort {target} is not a port of Deployment/{dep_name}")

    for f, d in objects:
        where = f"{f}: {d['kind']}/{d['metadata']['name']}"
        ns = d["metadata"].get("namespace")
        if d["kind"] == "HorizontalPodAutoscaler":
            ref = d["spec"]["scaleTargetRef"]
            if ref["kind"] != "Deployment" or (ns, ref["name"]) not in deployments:
                c.fail(where, f"scaleTargetRef {ref['kind']}/{ref['name']} does not exist")
            for m in d["spec"].get("metrics") or []:
                if m["type"] == "Pods" and m["pods"]["metric"]["name"] not in adapter_metrics:
                    c.fail(where, f"scales on pods metric {m['pods']['metric']['name']!r}, "
                                  "which no prometheus-adapter rule in monitoring/ provides")
                if m["type"] == "Resource" and (ns, ref["name"]) in deployments:
                    res = m["resource"]["name"]
                    ctrs = deployments[(ns, ref["name"])][1]["spec"]["template"]["spec"]["containers"]
                    if any(res not in ((x.get("resources") or {}).get("requests") or {}) for x in ctrs):
                        c.fail(where, f"scales on {res} utilization, but not every container requests {res}")
        if d["kind"] == "PodDisruptionBudget" and not pods_matching(ns, d["spec"]["selector"]):
            c.fail(where, "its selector matches no Deployment's pods")
        if d["kind"] == "NetworkPolicy":
            if not pods_matching(ns, d["spec"]["podSelector"]):
                c.fail(where, "its podSelector matches no Deployment's pods")
            for rule in d["spec"].get("ingress") or []:
                for peer in rule.get("from") or []:
                    if "podSelector" in peer and "namespaceSelector" not in peer \
                            and not pods_matching(ns, peer["podSelector"]):
                        c.fail(where, "an ingress podSelector matches no Deployment's pods")

    # The fleet file: upstreams are Services on the right port; key variables are in the router's env.
    for cm_name, data in generated.items():
        for key, text in data.items():
            if not key.endswith(".toml"):
                continue
            where = f"{key} (ConfigMap {cm_name})"
            readers = [(n, d) for (dns, n), (_, d) in deployments.items()
                       if any((v.get("configMap") or {}).get("name") == cm_name
                              for v in d["spec"]["template"]["spec"].get("volumes") or [])]
            if not readers:
                c.fail(where, "no Deployment mounts it")
            for url in re.findall(r'^\s*url\s*=\s*"([^"]+)"', text, re.M):
                m = re.match(r"https?://([a-z0-9-]+)(?:\.([a-z0-9-]+)(?:\.svc(?:\.cluster\.local)?)?)?:(\d+)$", url)
                if not m:
                    c.fail(where, f"upstream url {url} is not http://SERVICE[.NAMESPACE.svc.cluster.local]:PORT")
                    continue
                svc, svc_ns, port = m.group(1), m.group(2) or "tessera", int(m.group(3))
                if (svc_ns, svc) not in services:
                    c.fail(where, f"upstream url {url}: no Service {svc} in namespace {svc_ns}")
                elif port not in [p["port"] for p in services[(svc_ns, svc)][1]["spec"]["ports"]]:
                    c.fail(where, f"upstream url {url}: Service {svc} has no port {port}")
            for var in re.findall(r'^\s*api_keys?_env\s*=\s*"([^"]+)"', text, re.M):
                for n, d in readers:
                    env = {e["name"] for ctr in d["spec"]["template"]["spec"]["containers"] for e in ctr.get("env") or []}
                    if var not in env:
                        c.fail(where, f"names the variable {var}, which Deployment/{n} does not set")

    # The arguments the tessera containers run with are ones the binary accepts.
    if args.tessera:
        for (ns, name), (f, d) in deployments.items():
            pod = d["spec"]["template"]["spec"]
            for ctr in pod.get("initContainers", []) + pod.get("containers", []):
                if ctr.get("image", "").split(":")[0] != "tessera":
                    continue
                argv = [str(a) for a in (ctr.get("command") or []) + (ctr.get("args") or [])]
                # clap parses every argument before it acts on --help, so a bad one still fails.
                run = subprocess.run([args.tessera, *argv, "--help"], capture_output=True, text=True)
                if run.returncode != 0:
                    first = (run.stderr.strip().splitlines() or ["?"])[0]
                    c.fail(f"{f}: Deployment/{name} container {ctr['name']}", f"tessera rejects its arguments: {first}")

    for p in c.problems:
        print(f"error: {p}")
    if c.problems:
        return 1
    files = len({f for f, _ in objects})
    print(f"ok: {len(objects)} objects from {files} files valid against Kubernetes {args.kubernetes_version} "
          "(strict schemas); selectors, ports, volumes, Secrets, HPA metrics and fleet upstreams resolve")
    return 0


if __name__ == "__main__":
    sys.exit(main())
