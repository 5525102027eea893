#!/usr/bin/python3
"""The Helm chart deploy/helm/xlstmd, rendered by tools/chart-render (Helm's semantics; no helm
binary on these machines):

- each ci/*-values.yaml renders to its committed golden in tests/deploy/golden (regenerate
  with --update and review the diff); with XLSTMD_HELM=/path/to/helm, `helm template` must
  print the same;
- yamllint passes on the chart's own YAML and on every rendering;
- values.yaml and each ci file (over the defaults) validate against values.schema.json with
  python3-jsonschema, independently of the renderer's validator;
- policy: non-root hardened pods, probes, resources, pinned images, selectors that match pod
  labels, targetPorts that name container ports, every .Values key used exists in values.yaml
  and in the schema, every daemon flag is a config key;
- bad values fail to render with the offending key named (tests/deploy/bad/*.yaml).

    test_chart.py --build-dir BUILD [--bin-dir BUILD/bin] [--update]
"""
import argparse
import copy
import glob
import json
import os
import re
import subprocess
import sys
import unittest

import jsonschema
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHART = os.path.join(ROOT, "deploy", "helm", "xlstmd")
HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(HERE, "golden")
ARGS = None
# Flags the chart sets from its own keys (ports, model, state, Redis, keys, TLS, backend).
MANAGED_FLAGS = {"model", "listen", "http-listen", "web-listen", "api-keys-file", "tls-cert",
                 "tls-key", "tls-client-ca", "state-dir", "redis-url", "redis-timeout",
                 "backend", "web-cors-origins", "no-web-ui", "help"}


def renderer():
    return os.path.join(ARGS.build_dir, "chart-render", "chart-render")


def render(*values, notes=False):
    cmd = [renderer(), CHART]
    for v in values:
        cmd += ["-f", v]
    if notes:
        cmd.append("--notes")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def ci_files():
    files = sorted(glob.glob(os.path.join(CHART, "ci", "*-values.yaml")))
    assert len(files) >= 5, files
    return files


def stem(path):
    return os.path.basename(path)[: -len("-values.yaml")]


def docs(text):
    return [d for d in yaml.safe_load_all(text) if d]


def coalesce(defaults, user):
    """Helm's: maps merge, null deletes, anything else replaces."""
    out = copy.deepcopy(defaults)
    for k, v in (user or {}).items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = coalesce(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load(path):
    with open(path) as f:
        return yaml.safe_load(f) or {}


def pod_specs(objs):
    """(object, pod template metadata, pod spec) for every workload and bare Pod."""
    for o in objs:
        if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            t = o["spec"]["template"]
            yield o, t.get("metadata", {}), t["spec"]
        elif o["kind"] == "Pod":
            yield o, o["metadata"], o["spec"]


class ChartTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        build = subprocess.run([os.path.join(ROOT, "tools", "chart-render", "build.sh"),
                                ARGS.build_dir], capture_output=True, text=True, timeout=600)
        if build.returncode != 0:
            raise RuntimeError("building chart-render failed:\n" + build.stdout + build.stderr)
        cls.rendered = {}
        for f in ci_files():
            r = render(f)
            if r.returncode != 0:
                raise RuntimeError(f"{f} does not render:\n{r.stderr}")
            n = render(f, notes=True)
            cls.rendered[stem(f)] = (r.stdout, n.stdout)

    # ---- goldens ----

    def test_renderings_equal_the_goldens(self):
        os.makedirs(GOLDEN, exist_ok=True)
        for name, (manifests, notes) in self.rendered.items():
            for suffix, text in ((".yaml", manifests), (".notes.txt", notes)):
                path = os.path.join(GOLDEN, name + suffix)
                if ARGS.update:
                    with open(path, "w") as f:
                        f.write(text)
                    continue
                self.assertTrue(os.path.exists(path), f"{path} missing: run with --update")
                with open(path) as f:
                    self.assertEqual(f.read(), text,
                                     f"{name}{suffix} changed: rerun with --update and review")
        if not ARGS.update:
            expected = {n + s for n in self.rendered for s in (".yaml", ".notes.txt")}
            self.assertEqual(set(os.listdir(GOLDEN)), expected, "stale goldens")

    def test_helm_template_prints_the_same_where_helm_exists(self):
        helm = os.environ.get("XLSTMD_HELM")
        if not helm:
            self.skipTest("no helm binary on this machine (set XLSTMD_HELM=/path/to/helm)")
        for f in ci_files():
            r = subprocess.run([helm, "template", "xlstmd", CHART, "-f", f, "--kube-version",
                                "1.29.0"], capture_output=True, text=True, timeout=120)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(r.stdout, self.rendered[stem(f)][0], f)

    # ---- lint and schema ----

    def test_yamllint(self):
        cfg = os.path.join(HERE, "yamllint.yaml")
        own = [os.path.join(CHART, "Chart.yaml"), os.path.join(CHART, "values.yaml")] + ci_files()
        r = subprocess.run(["yamllint", "-f", "parsable", "-c", cfg] + own,
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        for name, (manifests, _) in self.rendered.items():
            r = subprocess.run(["yamllint", "-f", "parsable", "-c", cfg, "-"], input=manifests,
                               capture_output=True, text=True, timeout=120)
            self.assertEqual(r.returncode, 0, f"{name}:\n{r.stdout}{r.stderr}")

    def test_values_files_validate_against_the_schema(self):
        with open(os.path.join(CHART, "values.schema.json")) as f:
            schema = json.load(f)
        jsonschema.Draft7Validator.check_schema(schema)
        validator = jsonschema.Draft7Validator(schema)
        defaults = load(os.path.join(CHART, "values.yaml"))
        self.assertEqual([e.message for e in validator.iter_errors(defaults)], [])
        for f in ci_files():
            merged = coalesce(defaults, load(f))
            self.assertEqual([e.message for e in validator.iter_errors(merged)], [], f)
        # Every object in the schema is closed: a misspelt key is an error, not ignored.
        def walk(node, where):
            if isinstance(node, dict):
                if node.get("type") == "object" and "properties" in node:
                    self.assertIs(node.get("additionalProperties"), False, where)
                for k, v in node.items():
                    if k not in ("podSecurityContext", "securityContext"):
                        walk(v, f"{where}.{k}")
        walk(schema, "schema")

    # ---- policy ----

    def test_pods_are_hardened_probed_and_bounded(self):
        for name, (manifests, _) in self.rendered.items():
            for o, meta, spec in pod_specs(docs(manifests)):
                what = f"{name}: {o['kind']}/{o['metadata']['name']}"
                psc = spec.get("securityContext", {})
                self.assertIs(psc.get("runAsNonRoot"), True, what)
                self.assertIsInstance(psc.get("runAsUser"), int, what)
                self.assertNotEqual(psc.get("runAsUser"), 0, what)
                self.assertEqual(psc.get("seccompProfile"), {"type": "RuntimeDefault"}, what)
                self.assertIs(spec.get("automountServiceAccountToken"), False, what)
                # Service links would add XLSTMD_PORT, XLSTMD_SERVICE_HOST, ... (a Service
                # named xlstmd) to the daemon's own environment namespace.
                self.assertIs(spec.get("enableServiceLinks"), False, what)
                for c in spec["containers"]:
                    cw = f"{what} container {c['name']}"
                    sc = c.get("securityContext", {})
                    self.assertIs(sc.get("readOnlyRootFilesystem"), True, cw)
                    self.assertIs(sc.get("allowPrivilegeEscalation"), False, cw)
                    self.assertEqual(sc.get("capabilities", {}).get("drop"), ["ALL"], cw)
                    res = c.get("resources", {})
                    self.assertTrue(res.get("requests"), cw + ": no resource requests")
                    self.assertIn("memory", res.get("limits", {}), cw + ": no memory limit")
                    image = c["image"]
                    self.assertRegex(image, r"(:[\w.-]+|@sha256:[0-9a-f]{64})$", cw)
                    self.assertFalse(image.endswith(":latest"), cw)
                    if o["kind"] != "Pod":
                        self.assertIn("readinessProbe", c, cw)
                        self.assertIn("livenessProbe", c, cw)
                    if c["name"] == "xlstmd":
                        self.assertIn("startupProbe", c, cw)
                        self.assertIn("preStop", c.get("lifecycle", {}), cw)
                        mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
                        self.assertIn("/tmp", mounts, cw)

    def test_selectors_match_and_target_ports_exist(self):
        for name, (manifests, _) in self.rendered.items():
            objs = docs(manifests)
            pods = [(meta.get("labels", {}), spec) for _, meta, spec in pod_specs(objs)
                    if _["kind"] != "Pod"]

            def selected(selector):
                return [(l, s) for l, s in pods
                        if all(l.get(k) == v for k, v in selector.items())]

            for o in objs:
                what = f"{name}: {o['kind']}/{o['metadata']['name']}"
                if o["kind"] in ("Deployment", "StatefulSet"):
                    labels = o["spec"]["template"]["metadata"]["labels"]
                    for k, v in o["spec"]["selector"]["matchLabels"].items():
                        self.assertEqual(labels.get(k), v, what)
                if o["kind"] == "Service":
                    matched = selected(o["spec"]["selector"])
                    self.assertEqual(len(matched), 1, f"{what} selects {len(matched)} workloads")
                    ports = {p["name"] for c in matched[0][1]["containers"]
                             for p in c.get("ports", [])}
                    for p in o["spec"]["ports"]:
                        self.assertIn(p["targetPort"], ports, what)
                if o["kind"] in ("PodDisruptionBudget",):
                    self.assertTrue(selected(o["spec"]["selector"]["matchLabels"]), what)
                if o["kind"] == "NetworkPolicy":
                    self.assertTrue(selected(o["spec"]["podSelector"]["matchLabels"]), what)
                if o["kind"] == "ServiceMonitor":
                    sel = o["spec"]["selector"]["matchLabels"]
                    svcs = [s for s in objs if s["kind"] == "Service" and
                            all(s["metadata"]["labels"].get(k) == v for k, v in sel.items())]
                    self.assertEqual(len(svcs), 1, what)
                    self.assertIn(o["spec"]["endpoints"][0]["port"],
                                  {p["name"] for p in svcs[0]["spec"]["ports"]}, what)

    def test_every_values_key_used_exists(self):
        defaults = load(os.path.join(CHART, "values.yaml"))
        with open(os.path.join(CHART, "values.schema.json")) as f:
            schema = json.load(f)
        used = set()
        for path in glob.glob(os.path.join(CHART, "templates", "**", "*"), recursive=True):
            if os.path.isdir(path):
                continue
            with open(path) as f:
                text = f.read()
            # Variables bound to part of .Values ($v := .Values, $e := $v.envoy, ...).
            alias = {}
            for var, expr in re.findall(r"\$(\w+)\s*:=\s*((?:\.Values|\$\w+)(?:\.[A-Za-z]\w*)*)"
                                        r"(?![\w.(])", text):
                base = expr.split(".")[0]
                if base.startswith("$"):
                    if base[1:] not in alias:
                        continue
                    expr = alias[base[1:]] + expr[len(base):]
                alias[var] = expr
            for expr in re.findall(r"(?:\.Values|\$\w+)(?:\.[A-Za-z]\w*)+", text):
                base = expr.split(".")[0]
                if base.startswith("$"):
                    if base[1:] not in alias:
                        continue
                    expr = alias[base[1:]] + expr[len(base):]
                used.add(expr)
            for key in re.findall(r'index \.Values\.config "([\w-]+)"', text):
                used.add(".Values.config." + key)
        self.assertGreater(len(used), 50)
        for expr in sorted(used):
            parts = expr.split(".")[2:]
            node, sch = defaults, schema
            for i, p in enumerate(parts):
                where = ".".join(parts[: i + 1])
                self.assertIsInstance(node, dict, f"{expr}: {where} is not a map in values.yaml")
                if parts[0] != "config":
                    self.assertIn(p, node, f"{expr}: {where} not in values.yaml")
                self.assertIn(p, sch.get("properties", {}), f"{expr}: {where} not in the schema")
                node, sch = node.get(p, {}), sch["properties"][p]

    def test_every_daemon_flag_is_a_config_key(self):
        help_text = subprocess.run([os.path.join(ARGS.bin_dir, "xlstmd"), "--help"],
                                   capture_output=True, text=True, timeout=30).stdout
        flags = set(re.findall(r"^  --([a-z0-9-]+)", help_text, re.M))
        self.assertGreater(len(flags), 40)
        with open(os.path.join(CHART, "values.schema.json")) as f:
            config = set(json.load(f)["properties"]["config"]["properties"])
        self.assertEqual(config, flags - MANAGED_FLAGS,
                         "values.schema.json config keys vs xlstmd --help (minus the flags "
                         "the chart sets itself)")

    def test_large_numbers_render_as_integers(self):
        for name, (manifests, _) in self.rendered.items():
            self.assertNotRegex(manifests, r"\d\.\d+e\+\d", name)
        cm = [o for o in docs(self.rendered["statefulset-gpu"][0]) if o["kind"] == "ConfigMap"]
        self.assertEqual(cm[0]["data"]["XLSTMD_HOST_STATE_BYTES"], "34359738368")

    def test_grace_period_covers_the_drain(self):
        for name, (manifests, _) in self.rendered.items():
            for o in docs(manifests):
                if o["kind"] in ("Deployment", "StatefulSet") and o["metadata"]["name"] == "xlstmd":
                    grace = o["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
                    self.assertGreaterEqual(grace, 5 + 30 + 60 + 10, name)
        sts = [o for o in docs(self.rendered["statefulset-gpu"][0]) if o["kind"] == "StatefulSet"]
        self.assertEqual(sts[0]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"],
                         5 + 60 + 120 + 10)

    def test_envoy_hashes_on_the_session_header(self):
        objs = docs(self.rendered["redis-envoy"][0])
        cm = [o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-envoy")]
        envoy = yaml.safe_load(cm[0]["data"]["envoy.yaml"])
        hcm = envoy["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
            "typed_config"]
        self.assertEqual([f["name"] for f in hcm["http_filters"]],
                         ["envoy.filters.http.grpc_web", "envoy.filters.http.cors",
                          "envoy.filters.http.router"])
        route = hcm["route_config"]["virtual_hosts"][0]["routes"][0]["route"]
        self.assertEqual(route["timeout"], "0s")
        self.assertEqual(route["hash_policy"], [{"header": {"header_name": "x-session-id"}}])
        cluster = envoy["static_resources"]["clusters"][0]
        self.assertEqual(cluster["lb_policy"], "RING_HASH")
        self.assertGreaterEqual(cluster["ring_hash_lb_config"]["minimum_ring_size"], 1024)
        self.assertIn("http2_protocol_options", json.dumps(cluster))
        self.assertIn("grpc_health_check", cluster["health_checks"][0])
        self.assertEqual(cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
                         ["address"]["socket_address"]["address"],
                         "xlstmd-headless.default.svc.cluster.local")

    def test_envoy_hashes_statefulset_pods_by_name(self):
        extra = os.path.join(HERE, "extra-sts-envoy.yaml")
        r = render(os.path.join(CHART, "ci", "statefulset-gpu-values.yaml"), extra)
        self.assertEqual(r.returncode, 0, r.stderr)
        cm = [o for o in docs(r.stdout) if o["kind"] == "ConfigMap" and
              o["metadata"]["name"].endswith("-envoy")]
        cluster = yaml.safe_load(cm[0]["data"]["envoy.yaml"])["static_resources"]["clusters"][0]
        self.assertIs(cluster["common_lb_config"]["consistent_hashing_lb_config"]
                      ["use_hostname_for_hashing"], True)
        eps = [e["endpoint"] for e in cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]]
        self.assertEqual([e["hostname"] for e in eps], ["xlstmd-0", "xlstmd-1", "xlstmd-2"])

    # ---- bad values ----

    def test_bad_values_fail_naming_the_key(self):
        cases = sorted(glob.glob(os.path.join(HERE, "bad", "*.yaml")))
        self.assertGreaterEqual(len(cases), 7)
        for case in cases:
            with open(case) as f:
                expect = re.findall(r"^# expect: (.+)$", f.read(), re.M)
            self.assertTrue(expect, f"{case}: no '# expect:' line")
            r = render(case)
            self.assertEqual(r.returncode, 1, f"{case} rendered:\n{r.stdout[:2000]}")
            self.assertTrue(r.stderr.startswith("Error: "), r.stderr)
            for e in expect:
                self.assertIn(e, r.stderr, case)


def main():
    global ARGS
    p = argparse.ArgumentParser()
    p.add_argument("--build-dir", required=True)
    p.add_argument("--bin-dir")
    p.add_argument("--update", action="store_true", help="rewrite the goldens")
    ARGS, rest = p.parse_known_args()
    ARGS.build_dir = os.path.abspath(ARGS.build_dir)
    ARGS.bin_dir = os.path.abspath(ARGS.bin_dir or os.path.join(ARGS.build_dir, "bin"))
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
    main()
