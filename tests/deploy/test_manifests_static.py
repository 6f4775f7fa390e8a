#!/usr/bin/env python3
"""Static checks of docker/nginx.conf, docker/compose.yaml and docker/k8s.yaml, and of the
promises between them and batchd: the same port, the same body limit, shutdown timers that
nest (an orchestrator's kill comes after batchd's drain), probes on the right endpoints,
selectors that match the pods, a state dir (the store, SPEC §8) that is a writable volume
of each replica's own, apart from the data dir. nginx.conf is also rendered for loopback and passed through
`nginx -t`. Needs python3-yaml (Debian) for the YAML files.
"""
import os
import re
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deploylib as dl  # noqa: E402

try:
    import yaml
except ImportError:  # pragma: no cover
    yaml = None

DOCKER = os.path.join(dl.ROOT, "docker")


def read(name):
    with open(os.path.join(DOCKER, name), encoding="utf-8") as f:
        return f.read()


def nginx_directives(text):
    """(name, args) of every directive, comments stripped; blocks are flattened."""
    text = re.sub(r"#[^\n]*", "", text)
    out = []
    for stmt in re.split(r"[;{}]", text):
        words = stmt.split()
        if words:
            out.append((words[0], words[1:]))
    return out


def seconds(value):
    """'35s', '1m30s', '25', 25 -> seconds."""
    if isinstance(value, (int, float)):
        return float(value)
    total, matched = 0.0, False
    for num, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)?", str(value)):
        matched = True
        total += float(num) * {"ms": 0.001, "h": 3600, "m": 60, "s": 1, "": 1}[unit]
    assert matched, value
    return total


class NginxConfTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = nginx_directives(read("nginx.conf"))

    def values(self, name):
        return [args for n, args in self.d if n == name]

    def test_streaming_and_uploads_unbuffered(self):
        self.assertEqual(self.values("proxy_buffering"), [["off"]])
        self.assertEqual(self.values("proxy_request_buffering"), [["off"]])
        self.assertEqual(self.values("proxy_http_version"), [["1.1"]])
        self.assertIn(["Connection", '""'], self.values("proxy_set_header"))

    def test_body_limit_agrees_with_batchd(self):
        # batchd's default request body limit is 1 GiB (SPEC §1).
        (v,) = self.values("client_max_body_size")
        self.assertIn(v[0].lower(), ("1g", "1024m", str(1 << 30)))

    def test_balancing_and_passive_health_checks(self):
        self.assertEqual(self.values("least_conn"), [[]])
        servers = [s for s in self.values("server") if s]  # not the server { } block
        self.assertEqual(len(servers), 3)
        for s in servers:
            self.assertTrue(any(a.startswith("max_fails=") and a != "max_fails=0" for a in s), s)
            self.assertTrue(any(a.startswith("fail_timeout=") for a in s), s)
        (nu,) = self.values("proxy_next_upstream")
        for cond in ("error", "timeout", "http_503"):
            self.assertIn(cond, nu)

    def test_long_stream_timeouts(self):
        (rt,) = self.values("proxy_read_timeout")
        self.assertGreaterEqual(seconds(rt[0]), 600)
        (ct,) = self.values("proxy_connect_timeout")
        self.assertLessEqual(seconds(ct[0]), 5)

    def test_renders_and_passes_nginx_t(self):
        nginx = dl.which("nginx")
        if not nginx:
            self.skipTest("nginx not installed")
        prefix = tempfile.mkdtemp(prefix="nginx-t-")
        conf = dl.render_nginx([18001, 18002, 18003], 18000, prefix)
        r = subprocess.run([nginx, "-t", "-p", prefix, "-c", conf], capture_output=True,
                           text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(conf, encoding="utf-8") as f:
            rendered = f.read()
        self.assertNotRegex(re.sub(r"#[^\n]*", "", rendered), r"\bbatchd\d:\d+")
        for port in (18001, 18002, 18003):
            self.assertIn(f"server 127.0.0.1:{port} ", rendered)


@unittest.skipIf(yaml is None, "python3-yaml not installed")
class ComposeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.c = yaml.safe_load(read("compose.yaml"))

    def test_three_replicas_behind_nginx(self):
        svcs = self.c["services"]
        replicas = sorted(n for n in svcs if n.startswith("batchd"))
        self.assertEqual(len(replicas), 3)
        upstream = re.findall(r"^\s*server\s+(\w+):(\d+)", read("nginx.conf"), re.M)
        self.assertEqual(sorted(h for h, _ in upstream), replicas)
        for name in replicas:
            env = svcs[name]["environment"]
            port = env["BATCHD_LISTEN"].rsplit(":", 1)[1]
            self.assertTrue(all(p == port for _, p in upstream))
            self.assertGreater(seconds(svcs[name]["stop_grace_period"]),
                               seconds(env["BATCHD_GRACE_PERIOD"]),
                               "docker's SIGKILL must come after batchd's drain")
            self.assertEqual(svcs[name].get("stop_signal", "SIGTERM"), "SIGTERM")
            self.assertEqual(float(svcs[name]["cpus"]), 2.0)
        nginx = svcs["nginx"]
        self.assertTrue(any(v.startswith("./nginx.conf:") for v in nginx["volumes"]))
        self.assertNotIn("latest", nginx["image"])

    def test_a_state_volume_per_replica(self):
        svcs = self.c["services"]
        replicas = sorted(n for n in svcs if n.startswith("batchd"))
        seen = set()
        for name in replicas:
            state = svcs[name]["environment"]["BATCHD_STATE_DIR"]
            data = svcs[name]["environment"].get("BATCHD_DATA_DIR", "/var/lib/batchd")
            mounts = dict(reversed(v.split(":")[:2]) for v in svcs[name]["volumes"])
            self.assertIn(state, mounts, f"{name}: its state dir is not a volume")
            self.assertNotEqual(os.path.commonpath([state, data]), data,
                                f"{name}: the state dir is inside the data dir")
            vol = mounts[state]
            self.assertIn(vol, self.c["volumes"], f"{name}: {vol} is not a named volume")
            self.assertNotIn(vol, seen, f"{vol} is shared: a second batchd on it is refused")
            seen.add(vol)


@unittest.skipIf(yaml is None, "python3-yaml not installed")
class KubernetesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        docs = [d for d in yaml.safe_load_all(read("k8s.yaml")) if d]
        cls.docs = docs
        # The Service clients use: the one with a cluster IP (the headless one is the
        # StatefulSet's, for per-pod DNS).
        cls.by_kind = {d["kind"]: d for d in docs
                       if not (d["kind"] == "Service" and d["spec"].get("clusterIP") == "None")}

    def test_kinds_and_versions(self):
        self.assertEqual(self.by_kind["StatefulSet"]["apiVersion"], "apps/v1")
        self.assertEqual(self.by_kind["Service"]["apiVersion"], "v1")
        self.assertEqual(self.by_kind["HorizontalPodAutoscaler"]["apiVersion"], "autoscaling/v2")
        self.assertEqual(self.by_kind["PodDisruptionBudget"]["apiVersion"], "policy/v1")

    def pod(self):
        return self.by_kind["StatefulSet"]["spec"]["template"]

    def container(self):
        (c,) = self.pod()["spec"]["containers"]
        return c

    def test_probes(self):
        c = self.container()
        self.assertEqual(c["readinessProbe"]["httpGet"]["path"], "/readyz")
        self.assertEqual(c["livenessProbe"]["httpGet"]["path"], "/healthz")

    def test_cpu_limit_feeds_workers_auto(self):
        c = self.container()
        env = {e["name"]: e.get("value") for e in c["env"]}
        self.assertEqual(env["BATCHD_WORKERS"], "auto")
        self.assertEqual(str(c["resources"]["limits"]["cpu"]), "2")
        self.assertIn("cpu", c["resources"]["requests"], "the HPA needs a CPU request")
        self.assertIn("memory", c["resources"]["limits"])

    def test_shutdown_timers_nest(self):
        spec = self.pod()["spec"]
        c = self.container()
        env = {e["name"]: e.get("value") for e in c["env"]}
        cmd = c["lifecycle"]["preStop"]["exec"]["command"]
        self.assertEqual(cmd[0], "sleep")
        pre_stop = seconds(cmd[1])
        grace = seconds(env["BATCHD_GRACE_PERIOD"])
        self.assertGreater(pre_stop, 0)
        self.assertGreater(spec["terminationGracePeriodSeconds"], pre_stop + grace)

    def test_non_root(self):
        sc = self.pod()["spec"]["securityContext"]
        self.assertTrue(sc["runAsNonRoot"])
        self.assertNotEqual(sc.get("runAsUser"), 0)
        self.assertFalse(self.container()["securityContext"]["allowPrivilegeEscalation"])

    def test_selectors_match(self):
        labels = self.pod()["metadata"]["labels"]
        dep = self.by_kind["StatefulSet"]
        for sel in (dep["spec"]["selector"]["matchLabels"],
                    self.by_kind["Service"]["spec"]["selector"],
                    self.by_kind["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"]):
            self.assertLessEqual(sel.items(), labels.items())
        port = self.container()["ports"][0]
        svc_port = self.by_kind["Service"]["spec"]["ports"][0]
        self.assertIn(svc_port["targetPort"], (port["name"], port["containerPort"]))
        self.assertEqual(port["containerPort"], 8080)

    def test_hpa_on_cpu(self):
        hpa = self.by_kind["HorizontalPodAutoscaler"]["spec"]
        self.assertEqual(hpa["scaleTargetRef"]["kind"], "StatefulSet")
        self.assertEqual(hpa["scaleTargetRef"]["name"],
                         self.by_kind["StatefulSet"]["metadata"]["name"])
        (m,) = hpa["metrics"]
        self.assertEqual(m["resource"]["name"], "cpu")
        self.assertGreaterEqual(hpa["maxReplicas"], hpa["minReplicas"])
        pdb = self.by_kind["PodDisruptionBudget"]["spec"]
        # The PDB must leave room for voluntary evictions, or node drains hang.
        if "minAvailable" in pdb:
            self.assertLess(pdb["minAvailable"], hpa["minReplicas"])

    def test_state_dir_is_a_claim_per_pod(self):
        sts = self.by_kind["StatefulSet"]["spec"]
        c = self.container()
        env = {e["name"]: e.get("value") for e in c["env"]}
        state, data = env["BATCHD_STATE_DIR"], env["BATCHD_DATA_DIR"]
        self.assertNotEqual(os.path.commonpath([state, data]), data,
                            "the state dir is inside the data dir: batchd refuses it")
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        self.assertIn(state, mounts, "the state dir is not mounted")
        claims = {t["metadata"]["name"]: t["spec"] for t in sts["volumeClaimTemplates"]}
        self.assertIn(mounts[state], claims, "the state dir is not a per-pod claim")
        self.assertEqual(claims[mounts[state]]["accessModes"], ["ReadWriteOnce"])
        pod_volumes = {v["name"] for v in self.pod()["spec"].get("volumes", [])}
        self.assertNotIn(mounts[state], pod_volumes, "a pod volume shadows the claim")
        # Writable by the image's user (uid 10001), root file system read-only.
        self.assertEqual(self.pod()["spec"]["securityContext"]["fsGroup"], 10001)
        # The headless Service the StatefulSet names exists and selects its pods.
        (headless,) = [d for d in self.docs if d["kind"] == "Service" and
                       d["metadata"]["name"] == sts["serviceName"]]
        self.assertEqual(headless["spec"]["clusterIP"], "None")
        self.assertLessEqual(headless["spec"]["selector"].items(),
                             self.pod()["metadata"]["labels"].items())


if __name__ == "__main__":
    unittest.main(verbosity=2)
