#!/usr/bin/env python3
"""Static checks of the top-level Dockerfile, since no Docker engine runs here to build it.

Parses the Dockerfile into stages of (instruction, arguments) and checks what the deploy
issue asks of the image: pinned Debian 12 slim bases, a multi-stage build whose build stage
runs docker/build.sh, a runtime stage without -dev packages, a non-root USER before the
entrypoint, HEALTHCHECK, EXPOSE 8080, STOPSIGNAL SIGTERM, and no secrets in ENV or ARG.
"""
import os
import re
import shlex
import unittest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DOCKERFILE = os.environ.get("BATCHD_DOCKERFILE", os.path.join(ROOT, "Dockerfile"))

SECRET_NAME = re.compile(r"(token|passw(or)?d|secret|api[_-]?key|private[_-]?key|credential|"
                         r"access[_-]?key|auth)", re.I)
SECRET_VALUE = re.compile(r"(-----BEGIN [A-Z ]*PRIVATE KEY-----|\bAKIA[0-9A-Z]{16}\b|"
                          r"\bgh[pousr]_[A-Za-z0-9]{20,}|\bxox[abpr]-|"
                          r"(token|passw(or)?d|secret|key)\s*[=:]\s*\S+)", re.I)


def parse(text):
    """Returns a list of stages; a stage is a dict with 'from' (the FROM arguments) and
    'instructions', a list of (INSTRUCTION, args, line number). Comments and blank lines are
    dropped and backslash continuations joined, as Docker's parser does."""
    stages = []
    preamble = []
    logical, start = "", 0
    for no, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not logical and (not line or line.startswith("#")):
            continue
        if logical and line.startswith("#"):
            continue  # a comment inside a continued instruction is skipped
        if not logical:
            start = no
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        instr, _, args = logical.partition(" ")
        instr, args = instr.upper(), args.strip()
        logical = ""
        if instr == "FROM":
            stages.append({"from": args, "line": start, "instructions": []})
        elif stages:
            stages[-1]["instructions"].append((instr, args, start))
        else:
            preamble.append((instr, args, start))
    if logical:
        raise ValueError("Dockerfile ends inside a continued line")
    return preamble, stages


def exec_form_or_shell(args):
    """The words of a RUN/CMD/HEALTHCHECK command, in exec (JSON) or shell form."""
    args = args.strip()
    if args.startswith("["):
        import json
        return json.loads(args)
    return shlex.split(args, posix=True)


class DockerfileTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with open(DOCKERFILE, encoding="utf-8") as f:
            cls.text = f.read()
        cls.preamble, cls.stages = parse(cls.text)

    def instructions(self, stage, name):
        return [(a, no) for (i, a, no) in stage["instructions"] if i == name]

    def test_parser_sees_stages(self):
        self.assertGreaterEqual(len(self.stages), 2, "multi-stage build expected")

    def test_bases_are_pinned_debian12_slim(self):
        # A base may come from an ARG declared before the first FROM (a build without a
        # registry overrides it, tests/deploy/test_image_build.py); its default is the pin.
        defaults = {}
        for instr, args, _ in self.preamble:
            if instr == "ARG":
                name, _, value = args.partition("=")
                defaults[name.strip()] = value.strip()
        for st in self.stages:
            image = st["from"].split()[0]
            if image.startswith("--platform"):
                image = st["from"].split()[1]
            for var in re.findall(r"\$\{?(\w+)\}?", image):
                self.assertTrue(defaults.get(var), f"line {st['line']}: ${var} has no default")
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: defaults.get(m.group(1), ""), image)
            name_tag, _, digest = image.partition("@")
            name, _, tag = name_tag.rpartition(":") if ":" in name_tag else (name_tag, "", "")
            self.assertNotIn("$", image, f"line {st['line']}: base image from a variable")
            self.assertTrue(tag, f"line {st['line']}: base image without a tag: {image}")
            self.assertNotEqual(tag, "latest", f"line {st['line']}: :latest is not a pin")
            self.assertIn(name.split("/")[-1], ("debian",), f"line {st['line']}: {image}")
            # A pin is a digest, or at least a dated/point-release tag, never a moving
            # `12-slim`/`bookworm-slim`.
            dated = re.fullmatch(r"(12\.\d+-slim|bookworm-\d{8}-slim)", tag)
            self.assertTrue(dated, f"line {st['line']}: tag {tag!r} is not a point release")
            if digest:
                self.assertRegex(digest, r"^sha256:[0-9a-f]{64}$")
            if st is self.stages[-1]:
                self.assertIn("@sha256:", image, "the runtime base must be pinned by digest")

    def test_build_stage_runs_build_script(self):
        build = self.stages[0]
        runs = " ".join(a for a, _ in self.instructions(build, "RUN"))
        self.assertRegex(runs, r"docker/build\.sh\s+\S+", "build stage must run docker/build.sh")
        self.assertRegex(build["from"], r"\bAS\s+\w+", re.I)

    def test_runtime_copies_from_build_stage(self):
        runtime = self.stages[-1]
        copies = [a for a, _ in self.instructions(runtime, "COPY")]
        self.assertTrue(any(a.startswith("--from=") for a in copies),
                        "runtime stage must copy the build stage's output")

    def test_runtime_has_no_dev_packages(self):
        runtime = self.stages[-1]
        for args, no in self.instructions(runtime, "RUN"):
            if "apt-get" not in args and "apt " not in args:
                continue
            words = re.split(r"[\s;&|]+", args)
            dev = [w for w in words if re.fullmatch(r"[a-z0-9.+-]+-dev(:\w+)?", w)]
            self.assertEqual(dev, [], f"line {no}: -dev packages in the runtime stage")
            for banned in ("build-essential", "gcc", "cmake", "ninja-build", "pkg-config"):
                self.assertNotIn(banned, words, f"line {no}: {banned} in the runtime stage")
            if "install" in words:
                self.assertIn("--no-install-recommends", words, f"line {no}")
                self.assertRegex(args, r"rm -rf /var/lib/apt/lists", f"line {no}")

    def test_non_root_user_before_entrypoint(self):
        runtime = self.stages[-1]
        users = self.instructions(runtime, "USER")
        self.assertTrue(users, "runtime stage must set USER")
        user, user_line = users[-1]
        name = user.split(":")[0]
        self.assertNotIn(name, ("root", "0"), "USER must not be root")
        starts = self.instructions(runtime, "ENTRYPOINT") + self.instructions(runtime, "CMD")
        self.assertTrue(starts, "runtime stage needs ENTRYPOINT or CMD")
        for _, no in starts:
            self.assertLess(user_line, no, "USER must come before ENTRYPOINT/CMD")

    def test_healthcheck_hits_healthz(self):
        runtime = self.stages[-1]
        hcs = self.instructions(runtime, "HEALTHCHECK")
        self.assertEqual(len(hcs), 1, "exactly one HEALTHCHECK")
        args = hcs[0][0]
        self.assertNotRegex(args, r"^NONE\b")
        self.assertIn("CMD", args.split())
        cmd = exec_form_or_shell(args.split("CMD", 1)[1])
        # Either the binary's own probe (which GETs /healthz) or a client naming /healthz.
        self.assertTrue("--healthcheck" in cmd or any("/healthz" in w for w in cmd), cmd)
        # The tool must be in the image: batchd itself, or something the runtime installs.
        self.assertIn(os.path.basename(cmd[0]), ("batchd", "busybox", "wget", "curl"))

    def test_expose_and_stopsignal(self):
        runtime = self.stages[-1]
        exposed = " ".join(a for a, _ in self.instructions(runtime, "EXPOSE")).split()
        self.assertIn("8080", [p.split("/")[0] for p in exposed])
        sig = self.instructions(runtime, "STOPSIGNAL")
        self.assertEqual([a for a, _ in sig], ["SIGTERM"])

    def test_entrypoint_is_exec_form(self):
        # Shell form would make /bin/sh PID 1, and SIGTERM would never reach batchd.
        runtime = self.stages[-1]
        for args, no in self.instructions(runtime, "ENTRYPOINT"):
            self.assertTrue(args.startswith("["), f"line {no}: ENTRYPOINT in shell form")

    def test_config_by_environment(self):
        runtime = self.stages[-1]
        env = " ".join(a for a, _ in self.instructions(runtime, "ENV"))
        self.assertIn("BATCHD_LISTEN=", env)
        for args, _ in self.instructions(runtime, "ENTRYPOINT") + self.instructions(runtime,
                                                                                      "CMD"):
            words = exec_form_or_shell(args)
            flags = [w for w in words[1:] if w.startswith("--")]
            self.assertEqual(flags, [], "configure by BATCHD_* environment, not by flags")

    def test_state_dir_is_a_volume_the_user_owns(self):
        """The store (SPEC §8) lives in BATCHD_STATE_DIR: set, apart from the data dir (batchd
        refuses a state dir inside it, and WORKDIR's ./batchd-state would be), a VOLUME, and
        made by the runtime stage owned by the user the image runs as."""
        runtime = self.stages[-1]
        env = {}
        for args, _ in self.instructions(runtime, "ENV"):
            for word in shlex.split(args):
                k, _, v = word.partition("=")
                env[k] = v
        state, data = env.get("BATCHD_STATE_DIR"), env.get("BATCHD_DATA_DIR")
        self.assertTrue(state and state.startswith("/"), "BATCHD_STATE_DIR must be absolute")
        if data:
            self.assertNotEqual(os.path.commonpath([state, data]), data,
                                "the state dir is inside the data dir: batchd refuses it")
        volumes = " ".join(a for a, _ in self.instructions(runtime, "VOLUME"))
        self.assertIn(state, volumes, "the state dir must be a VOLUME")
        runs = " ".join(a for a, _ in self.instructions(runtime, "RUN"))
        (user,) = [a for a, _ in self.instructions(runtime, "USER")][-1:]
        uid = user.split(":")[0]
        made = re.search(r"install -d -o (\S+) -g \S+ -m 0?7[0-7]{2} " + re.escape(state) + r"\b",
                         runs)
        self.assertTrue(made, "the state dir must be made owned by the image's user")
        self.assertIn(made.group(1), (uid, "batchd"))
        self.assertRegex(runs, r"useradd[^&]*--uid " + re.escape(uid) + r"\b[^&]* batchd\b")

    def test_no_secrets_in_env_or_arg(self):
        entries = list(self.preamble)
        for st in self.stages:
            entries += st["instructions"]
        for instr, args, no in entries:
            if instr not in ("ENV", "ARG", "LABEL"):
                continue
            for pair in shlex.split(args):
                key, _, value = pair.partition("=")
                self.assertIsNone(SECRET_NAME.search(key), f"line {no}: {key} looks secret")
                self.assertIsNone(SECRET_VALUE.search(pair), f"line {no}: {pair} looks secret")
        self.assertIsNone(SECRET_VALUE.search(re.sub(r"(?m)^\s*#.*$", "", self.text)))

    def test_dockerignore_keeps_context_small(self):
        path = os.path.join(ROOT, ".dockerignore")
        self.assertTrue(os.path.exists(path), ".dockerignore missing")
        with open(path, encoding="utf-8") as f:
            lines = {l.strip() for l in f if l.strip() and not l.startswith("#")}
        self.assertIn(".git", lines)
        self.assertTrue(any(l.startswith("build") for l in lines))


class ParserSelfTest(unittest.TestCase):
    """The checks above are only as good as the parser: feed it known-bad files."""

    def test_base_from_an_arg(self):
        pre, st = parse("ARG BASE=debian:12.12-slim\nFROM ${BASE} AS build\nFROM $BASE\n")
        self.assertEqual(pre, [("ARG", "BASE=debian:12.12-slim", 1)])
        self.assertEqual([s["from"] for s in st], ["${BASE} AS build", "$BASE"])

    def test_continuations_and_comments(self):
        pre, st = parse("ARG X=1\nFROM a:1 AS b\nRUN a \\\n  # c\n  b\nUSER 1\n")
        self.assertEqual(pre, [("ARG", "X=1", 1)])
        self.assertEqual(st[0]["instructions"][0][:2], ("RUN", "a  b"))

    def test_secret_patterns(self):
        self.assertTrue(SECRET_NAME.search("BATCHD_AUTH_TOKEN"))
        self.assertTrue(SECRET_VALUE.search("password=hunter2"))
        self.assertIsNone(SECRET_NAME.search("BATCHD_LISTEN"))
        self.assertIsNone(SECRET_VALUE.search("BATCHD_WORKERS=auto"))


if __name__ == "__main__":
    unittest.main(verbosity=2)
