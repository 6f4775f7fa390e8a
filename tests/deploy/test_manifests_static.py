#!/usr/bin/env python3
"""Static checks of docker/nginx.conf, docker/compose.yaml and docker/k8s.yaml, and of the
promises between them and batchd: the same port, the same body limit, shutdown timers that
nest (an orchestrator's kill comes after batchd's drain), probes on the right endpoints,
selectors that match the pods, a state dir apart from the data dir, and cluster mode's
wiring (SPEC §9): one Redis with persistence on (appendonly, appendfsync always, noeviction,
its data on a volume or claim of its own), every replica's BATCHD_REDIS pointing at it by
IP, replica names unique, a data dir shared by the replicas, nginx without stickiness. The
cluster checks are functions returning the problems they find, also fed broken copies of
the files (mutation self-checks). nginx.conf is also rendered for loopback and passed
through `nginx -t`. Needs python3-yaml (Debian) for the YAML files.
"""
import copy
import ipaddress
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


def size_bytes(value):
    """'1GiB', '256MiB', 1024 -> bytes (batchd's units: KiB/MiB/GiB and KB/MB/GB alike;
    Kubernetes' quantities Ki/Mi/Gi)."""
    m = re.fullmatch(r"(\d+)\s*([KMGT]?)(i?B?)?", str(value).strip(), re.I)
    assert m, value
    return int(m.group(1)) * 1024 ** " KMGT".index((m.group(2) or " ").upper())


def redis_size(value):
    """Redis' memory units: 1k = 1000, 1kb = 1024, ... (redis.conf)."""
    m = re.fullmatch(r"(\d+)\s*([kmg]?)(b?)", str(value).strip(), re.I)
    assert m, value
    unit = " kmg".index((m.group(2) or " ").lower())
    return int(m.group(1)) * (1024 if m.group(3) else 1000) ** unit


def redis_options(args):
    """`redis-server --opt value ...` (or the args after the image's entrypoint) -> dict."""
    args = [str(a) for a in args]
    if args and not args[0].startswith("--"):
        args = args[1:]  # redis-server, or a config file
    opts, i = {}, 0
    while i < len(args):
        assert args[i].startswith("--"), args
        name = args[i][2:]
        values = []
        i += 1
        while i < len(args) and not args[i].startswith("--"):
            values.append(args[i])
            i += 1
        opts[name] = " ".join(values)
    return opts


def redis_persistence_problems(opts, where):
    """SPEC §9's 'with Redis' own persistence on': every write in the AOF, fsynced before
    Redis answers (a 202 or a recorded result must survive a crash of Redis or its host),
    and a full Redis refusing writes rather than evicting batches."""
    problems = []
    if opts.get("appendonly") != "yes":
        problems.append(f"{where}: appendonly is not yes")
    if opts.get("appendfsync", "everysec") != "always":
        problems.append(f"{where}: appendfsync is not always")
    if opts.get("maxmemory-policy", "noeviction") != "noeviction":
        problems.append(f"{where}: maxmemory-policy evicts keys")
    if "dir" not in opts:
        problems.append(f"{where}: no --dir for the append-only file")
    return problems


REPLICA_NAME = re.compile(r"[A-Za-z0-9._-]+")  # server/config.c check_cluster


def redis_url(url):
    """redis://HOST:PORT[/DB] -> (host, port, db) or None."""
    m = re.fullmatch(r"redis://([^:/]+):(\d+)(?:/(\d+))?", url or "")
    return (m.group(1), int(m.group(2)), int(m.group(3) or 0)) if m else None


def compose_problems(c, nginx_conf):
    """What is wrong with compose.yaml's cluster mode (empty: nothing)."""
    problems = []
    svcs = c["services"]
    replicas = sorted(n for n in svcs if n.startswith("batchd"))
    redis = [n for n, s in svcs.items() if str(s.get("image", "")).startswith("redis:")]
    if len(redis) != 1:
        return [f"one redis service expected, found {redis}"]
    (rname,) = redis
    r = svcs[rname]
    image = r["image"]
    if "latest" in image or not re.search(r"bookworm", image):
        problems.append(f"redis image {image}: not a pinned Debian (bookworm) one")
    cmd = r.get("command")
    if isinstance(cmd, str):
        cmd = cmd.split()
    opts = redis_options(cmd or [])
    problems += redis_persistence_problems(opts, rname)
    mounts = dict(reversed(v.split(":")[:2]) for v in r.get("volumes", []))
    if opts.get("dir") not in mounts or mounts.get(opts.get("dir")) not in (c.get("volumes") or {}):
        problems.append(f"{rname}: its --dir {opts.get('dir')} is not a named volume")
    port = int(opts.get("port", 6379))
    # Redis' fixed address on a network whose dynamic range leaves it out.
    nets = r.get("networks") or {}
    addrs = {n: (v or {}).get("ipv4_address") for n, v in nets.items()} if isinstance(nets, dict) \
        else {}
    addrs = {n: a for n, a in addrs.items() if a}
    if not addrs:
        problems.append(f"{rname}: no fixed ipv4_address (hiredis would resolve a name)")
    for net, addr in addrs.items():
        ipam = (((c.get("networks") or {}).get(net) or {}).get("ipam") or {}).get("config") or []
        ok = False
        for block in ipam:
            subnet = ipaddress.ip_network(block["subnet"])
            dyn = ipaddress.ip_network(block.get("ip_range", block["subnet"]))
            if ipaddress.ip_address(addr) in subnet and ipaddress.ip_address(addr) not in dyn:
                ok = True
        if not ok:
            problems.append(f"{rname}: {addr} not in {net}'s subnet, or inside its ip_range")
    maxmemory = redis_size(opts["maxmemory"]) if "maxmemory" in opts else None
    names = {}
    for name in replicas:
        s = svcs[name]
        env = s.get("environment") or {}
        url = redis_url(env.get("BATCHD_REDIS"))
        if not url:
            problems.append(f"{name}: BATCHD_REDIS {env.get('BATCHD_REDIS')!r} is not "
                            f"redis://HOST:PORT[/DB]")
        else:
            host, p, _ = url
            if host not in addrs.values():
                problems.append(f"{name}: BATCHD_REDIS host {host} is not redis' address")
            if p != port:
                problems.append(f"{name}: BATCHD_REDIS port {p}, redis listens on {port}")
            snets = s.get("networks") or ["default"]
            if not any(n in snets for n, a in addrs.items() if a == host):
                problems.append(f"{name}: not on the network redis' address is on")
        rn = env.get("BATCHD_REPLICA_NAME")
        if not rn or not REPLICA_NAME.fullmatch(str(rn)):
            problems.append(f"{name}: BATCHD_REPLICA_NAME {rn!r} missing or not [A-Za-z0-9._-]+")
        elif rn in names:
            problems.append(f"{name}: BATCHD_REPLICA_NAME {rn} is also {names[rn]}'s")
        else:
            names[rn] = name
        deps = s.get("depends_on") or {}
        if rname not in deps:
            problems.append(f"{name}: does not depend on {rname} (stopped after it, it could "
                            f"not record the results of its drain)")
        if maxmemory and size_bytes(env.get("BATCHD_MAX_STORED_BYTES", "10GiB")) >= maxmemory:
            problems.append(f"{name}: BATCHD_MAX_STORED_BYTES is not below redis' maxmemory")
    # {"path"} inputs: every replica sees the same data dir (a chunk runs on any of them).
    data = set()
    for name in replicas:
        env = svcs[name].get("environment") or {}
        ddir = env.get("BATCHD_DATA_DIR", "/var/lib/batchd")
        m = dict(reversed(v.split(":")[:2]) for v in svcs[name].get("volumes", []))
        data.add(m.get(ddir))
    if len(data) != 1 or None in data:
        problems.append(f"the replicas do not share one data volume: {data}")
    # Any replica answers any stored batch: the balancer must not pin clients.
    d = nginx_directives(nginx_conf)
    sticky = [n for n, _ in d if n in ("ip_hash", "hash", "sticky", "sticky_cookie_insert")]
    if sticky:
        problems.append(f"nginx.conf pins clients: {sticky}")
    return problems


def k8s_problems(docs):
    """What is wrong with k8s.yaml's cluster mode (empty: nothing)."""
    problems = []
    (sts,) = [d for d in docs if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "batchd"]
    pod = sts["spec"]["template"]
    (c,) = pod["spec"]["containers"]
    env = {e["name"]: e for e in c["env"]}
    if "BATCHD_REDIS" not in env:
        return ["batchd has no BATCHD_REDIS"]
    rn = env.get("BATCHD_REPLICA_NAME", {})
    if ((rn.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath") != "metadata.name":
        problems.append("BATCHD_REPLICA_NAME is not the pod's name (fieldRef metadata.name)")
    url = env["BATCHD_REDIS"].get("value", "")
    m = re.fullmatch(r"redis://\$\((\w+)_SERVICE_HOST\):\$\((\w+)_SERVICE_PORT\)(?:/(\d+))?",
                     url)
    redis_sts = [d for d in docs if d["kind"] == "StatefulSet" and d is not sts]
    if not m:
        # An external Redis: then an IP, and no Redis of our own.
        u = redis_url(url)
        try:
            ipaddress.ip_address(u[0] if u else "")
        except ValueError:
            problems.append(f"BATCHD_REDIS {url!r}: neither $(X_SERVICE_HOST) nor an IP")
        if redis_sts:
            problems.append("a Redis StatefulSet, but BATCHD_REDIS does not use it")
        return problems
    if m.group(1) != m.group(2):
        problems.append(f"BATCHD_REDIS names two Services: {url}")
    if pod["spec"].get("enableServiceLinks") is False:
        problems.append("enableServiceLinks is off: $(..._SERVICE_HOST) stays unexpanded")
    svcs = [d for d in docs if d["kind"] == "Service" and
            d["metadata"]["name"].upper().replace("-", "_") == m.group(1)]
    if len(svcs) != 1:
        return problems + [f"no Service for {m.group(1)}_SERVICE_HOST"]
    (svc,) = svcs
    if svc["spec"].get("clusterIP") == "None":
        problems.append(f"Service {svc['metadata']['name']} is headless: no _SERVICE_HOST")
    if docs.index(svc) > docs.index(sts):
        problems.append(f"Service {svc['metadata']['name']} comes after the batchd StatefulSet: "
                        f"pods created before it lack its variables")
    sel = svc["spec"].get("selector") or {}
    targets = [d for d in redis_sts
               if sel and sel.items() <= d["spec"]["template"]["metadata"]["labels"].items()]
    if len(targets) != 1:
        return problems + [f"Service {svc['metadata']['name']} selects {len(targets)} StatefulSets"]
    (rsts,) = targets
    rpod = rsts["spec"]["template"]
    if sel.items() <= pod["metadata"]["labels"].items():
        problems.append("the Redis Service selects batchd's pods too")
    bsel = sts["spec"]["selector"]["matchLabels"]
    if bsel.items() <= rpod["metadata"]["labels"].items():
        problems.append("batchd's selector selects the Redis pods too")
    if rsts["spec"].get("replicas", 1) != 1:
        problems.append("more than one Redis pod: they would not share data")
    (rc,) = rpod["spec"]["containers"]
    args = list(rc.get("command") or []) + list(rc.get("args") or [])
    opts = redis_options(args)
    problems += redis_persistence_problems(opts, "redis")
    mounts = {v["mountPath"]: v["name"] for v in rc.get("volumeMounts", [])}
    claims = {t["metadata"]["name"]: t["spec"]
              for t in rsts["spec"].get("volumeClaimTemplates", [])}
    if mounts.get(opts.get("dir")) not in claims:
        problems.append(f"redis' --dir {opts.get('dir')} is not on a claim of its own")
    elif claims[mounts[opts["dir"]]]["accessModes"] != ["ReadWriteOnce"]:
        problems.append("redis' claim is not ReadWriteOnce")
    if not rpod["spec"].get("securityContext", {}).get("fsGroup"):
        problems.append("no fsGroup: the claim may not be writable by redis")
    ports = {p.get("name"): p["containerPort"] for p in rc["ports"]}
    port = int(opts.get("port", 6379))
    (sp,) = svc["spec"]["ports"]
    if port not in ports.values():
        problems.append(f"redis' container does not expose its port {port}")
    if sp.get("targetPort", sp["port"]) not in (port, *[n for n, v in ports.items() if v == port]):
        problems.append("the Redis Service's targetPort is not redis' port")
    heads = [d for d in docs if d["kind"] == "Service" and
             d["metadata"]["name"] == rsts["spec"].get("serviceName")]
    if len(heads) != 1 or heads[0]["spec"].get("clusterIP") != "None":
        problems.append("the Redis StatefulSet's serviceName is not a headless Service")
    if "maxmemory" in opts:
        stored = env.get("BATCHD_MAX_STORED_BYTES", {}).get("value", "10GiB")
        if size_bytes(stored) >= redis_size(opts["maxmemory"]):
            problems.append("BATCHD_MAX_STORED_BYTES is not below redis' maxmemory")
        limit = rc.get("resources", {}).get("limits", {}).get("memory")
        if not limit or size_bytes(limit) <= redis_size(opts["maxmemory"]):
            problems.append("redis' memory limit is not above its maxmemory")
    return problems


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

    def test_state_dir_apart_and_never_shared(self):
        # In cluster mode nothing is written to the state dir (the image's VOLUME gives each
        # container its own); a state volume named here must still be one replica's only.
        svcs = self.c["services"]
        replicas = sorted(n for n in svcs if n.startswith("batchd"))
        seen = set()
        for name in replicas:
            env = svcs[name]["environment"]
            state = env.get("BATCHD_STATE_DIR", "/var/lib/batchd-state")  # the image's ENV
            data = env.get("BATCHD_DATA_DIR", "/var/lib/batchd")
            self.assertNotEqual(os.path.commonpath([state, data]), data,
                                f"{name}: the state dir is inside the data dir")
            mounts = dict(reversed(v.split(":")[:2]) for v in svcs[name]["volumes"])
            if not env.get("BATCHD_REDIS"):
                self.assertIn(state, mounts, f"{name}: without Redis its store is not a volume")
            if state in mounts:
                self.assertNotIn(mounts[state], seen, f"{mounts[state]} is shared")
                seen.add(mounts[state])

    def test_cluster_mode(self):
        self.assertEqual(compose_problems(self.c, read("nginx.conf")), [])

    def test_cluster_checks_catch_mistakes(self):
        """Each broken copy must be refused: the checks above are only as good as these."""
        conf = read("nginx.conf")

        def mutated(fn):
            c = copy.deepcopy(self.c)
            fn(c)
            return compose_problems(c, conf)

        def redis_cmd(c, old, new):
            cmd = c["services"]["redis"]["command"]
            cmd[cmd.index(old) + 1] = new

        svcs = "services"
        cases = {
            "appendfsync everysec": lambda c: redis_cmd(c, "--appendfsync", "everysec"),
            "appendonly no": lambda c: redis_cmd(c, "--appendonly", "no"),
            "evicting": lambda c: redis_cmd(c, "--maxmemory-policy", "allkeys-lru"),
            "a replica by name": lambda c: c[svcs]["batchd2"]["environment"].update(
                BATCHD_REDIS="redis://redis:6379/0"),
            "a replica elsewhere": lambda c: c[svcs]["batchd3"]["environment"].update(
                BATCHD_REDIS="redis://10.213.0.11:6379"),
            "a wrong port": lambda c: c[svcs]["batchd1"]["environment"].update(
                BATCHD_REDIS="redis://10.213.0.10:6380"),
            "no redis": lambda c: c[svcs]["batchd1"]["environment"].pop("BATCHD_REDIS"),
            "a shared name": lambda c: c[svcs]["batchd3"]["environment"].update(
                BATCHD_REPLICA_NAME="batchd1"),
            "no name": lambda c: c[svcs]["batchd2"]["environment"].pop("BATCHD_REPLICA_NAME"),
            "a bad name": lambda c: c[svcs]["batchd2"]["environment"].update(
                BATCHD_REPLICA_NAME="batchd 2"),
            "no volume": lambda c: c[svcs]["redis"].pop("volumes"),
            "a dynamic address": lambda c: c["networks"]["default"]["ipam"]["config"][0].pop(
                "ip_range"),
            "store over maxmemory": lambda c: c[svcs]["batchd1"]["environment"].update(
                BATCHD_MAX_STORED_BYTES="10GiB"),
            "no depends_on": lambda c: c[svcs]["batchd1"].pop("depends_on"),
            "a private data dir": lambda c: c[svcs]["batchd1"].update(
                volumes=["other:/var/lib/batchd"]),
        }
        for what, fn in cases.items():
            self.assertNotEqual(mutated(fn), [], f"not caught: {what}")
        sticky = conf.replace("least_conn;", "ip_hash;")
        self.assertNotEqual(compose_problems(self.c, sticky), [], "not caught: ip_hash")


@unittest.skipIf(yaml is None, "python3-yaml not installed")
class KubernetesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        docs = [d for d in yaml.safe_load_all(read("k8s.yaml")) if d]
        cls.docs = docs
        # batchd's objects are named batchd (the Redis ones redis, redis-pods; the headless
        # batchd-pods is the StatefulSet's, for per-pod DNS).
        cls.by_kind = {d["kind"]: d for d in docs if d["metadata"]["name"] == "batchd"}

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

    def test_state_dir_apart_from_data_dir(self):
        sts = self.by_kind["StatefulSet"]["spec"]
        c = self.container()
        env = {e["name"]: e.get("value") for e in c["env"]}
        state, data = env["BATCHD_STATE_DIR"], env["BATCHD_DATA_DIR"]
        self.assertNotEqual(os.path.commonpath([state, data]), data,
                            "the state dir is inside the data dir: batchd refuses it")
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        self.assertIn(state, mounts, "the state dir is not mounted (read-only root)")
        claims = {t["metadata"]["name"] for t in sts.get("volumeClaimTemplates", [])}
        if "BATCHD_REDIS" not in env:
            # Without Redis each pod's SQLite store must outlive it: a claim per pod.
            self.assertIn(mounts[state], claims, "the state dir is not a per-pod claim")
        # Writable by the image's user (uid 10001), root file system read-only.
        self.assertEqual(self.pod()["spec"]["securityContext"]["fsGroup"], 10001)
        # The headless Service the StatefulSet names exists and selects its pods.
        (headless,) = [d for d in self.docs if d["kind"] == "Service" and
                       d["metadata"]["name"] == sts["serviceName"]]
        self.assertEqual(headless["spec"]["clusterIP"], "None")
        self.assertLessEqual(headless["spec"]["selector"].items(),
                             self.pod()["metadata"]["labels"].items())

    def test_cluster_mode(self):
        self.assertEqual(k8s_problems(self.docs), [])

    def test_cluster_checks_catch_mistakes(self):
        def mutated(fn):
            docs = copy.deepcopy(self.docs)
            fn(docs)
            return k8s_problems(docs)

        def find(docs, kind, name):
            (d,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
            return d

        def env(docs, name):
            c = find(docs, "StatefulSet", "batchd")["spec"]["template"]["spec"]["containers"][0]
            (e,) = [e for e in c["env"] if e["name"] == name]
            return e

        def rargs(docs, old, new):
            a = find(docs, "StatefulSet", "redis")["spec"]["template"]["spec"]["containers"][0]
            a["args"][a["args"].index(old) + 1] = new

        def move_service_last(docs):
            svc = find(docs, "Service", "redis")
            docs.remove(svc)
            docs.append(svc)

        cases = {
            "appendfsync everysec": lambda d: rargs(d, "--appendfsync", "everysec"),
            "appendonly no": lambda d: rargs(d, "--appendonly", "no"),
            "evicting": lambda d: rargs(d, "--maxmemory-policy", "volatile-lru"),
            "a DNS name": lambda d: env(d, "BATCHD_REDIS").update(
                value="redis://redis-0.redis-pods:6379/0"),
            "the headless Service": lambda d: env(d, "BATCHD_REDIS").update(
                value="redis://$(REDIS_PODS_SERVICE_HOST):$(REDIS_PODS_SERVICE_PORT)/0"),
            "a fixed replica name": lambda d: env(d, "BATCHD_REPLICA_NAME").update(
                valueFrom=None, value="batchd"),
            "service links off": lambda d: find(d, "StatefulSet", "batchd")["spec"][
                "template"]["spec"].update(enableServiceLinks=False),
            "the Service after the pods": move_service_last,
            "no claim": lambda d: find(d, "StatefulSet", "redis")["spec"].pop(
                "volumeClaimTemplates"),
            "two Redis pods": lambda d: find(d, "StatefulSet", "redis")["spec"].update(
                replicas=3),
            "store over maxmemory": lambda d: env(d, "BATCHD_MAX_STORED_BYTES").update(
                value="10GiB"),
            "a Service selecting batchd": lambda d: find(d, "Service", "redis")["spec"].update(
                selector={"app.kubernetes.io/name": "batchd"}),
        }
        for what, fn in cases.items():
            self.assertNotEqual(mutated(fn), [], f"not caught: {what}")

if __name__ == "__main__":
    unittest.main(verbosity=2)
