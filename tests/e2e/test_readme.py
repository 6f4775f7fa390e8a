"""The README stays true where a program can tell: its configuration table is what
`batchd --config-table` prints, and its two set-up commands name scripts that exist."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import BIN, Suite, check  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
README = open(os.path.join(ROOT, "README.md")).read()


def test_config_table_matches_binary():
    table = subprocess.run([BIN, "--config-table"], capture_output=True, text=True, check=True)
    rows = [l for l in table.stdout.splitlines() if l.startswith("| `--")]
    check(len(rows) >= 15, rows)
    for row in rows:
        check(row in README, "README lacks config row: " + row)


def test_setup_commands_exist():
    for script in ("docker/build.sh", "tests/run-all.sh", ".ci/run"):
        path = os.path.join(ROOT, script)
        check(os.access(path, os.X_OK), script + " is not executable")
    check("docker/build.sh \"$PWD/dist\" && ./dist/usr/local/bin/batchd" in README)
    check("\n    tests/run-all.sh\n" in README)
    ci = open(os.path.join(ROOT, ".ci", "run")).read()
    check("tests/run-all.sh" in ci, ".ci/run must run the README's test command")


if __name__ == "__main__":
    sys.exit(Suite("readme").run(globals()))
