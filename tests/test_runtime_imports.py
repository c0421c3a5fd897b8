"""The build-time data tools (``userrl.envs.data_tools``: authored tables, the generator, the
UserRL importer) stay out of every run-time process.

A fresh interpreter imports every first-party module but those tools (the workers, the learner,
the CLI and its subcommand modules, deploy), builds the CLI parser, and lists which
``userrl.envs.data_tools`` modules got loaded: there must be none. The same interpreter then
imports the importer, so the check is shown to see such a module when one is loaded.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOOLS = "userrl.envs.data_tools"

PROBE = textwrap.dedent("""
    import importlib, json, sys, tomllib
    from pathlib import Path

    repo, tools = Path(sys.argv[1]), sys.argv[2]
    dirs = tomllib.loads((repo / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    names = []
    for pkg, folder in dirs.items():  # top-level folders map to userrl.<folder>
        for f in sorted((repo / folder).rglob("*.py")):
            parts = [p for p in f.relative_to(repo / folder).with_suffix("").parts if p != "__init__"]
            names.append(".".join([pkg, *parts]))
    imported, missing = [], {}
    for name in dict.fromkeys(names):
        if name == tools or name.startswith(tools + ".") or name.endswith(".__main__"):
            continue
        try:
            importlib.import_module(name)
            imported.append(name)
        except ModuleNotFoundError as exc:  # an optional extra that is not installed
            if (exc.name or "").split(".")[0] == "userrl":
                raise
            missing[name] = exc.name
    from userrl.cli import build_parser

    build_parser()  # registers every subcommand, as `userrl <anything>` does
    loaded = sorted(m for m in sys.modules if m == tools or m.startswith(tools + "."))
    importlib.import_module(tools + ".importer.pipeline")
    control = sorted(m for m in sys.modules if m == tools or m.startswith(tools + "."))
    print(json.dumps({"imported": imported, "missing": missing, "loaded": loaded,
                      "control": control}))
""")


def test_no_runtime_module_imports_the_data_tools() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(REPO), TOOLS], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    # the run-time entry points were among what was imported
    assert {"userrl.cli", "userrl.envs.worker", "userrl.agents.worker", "userrl.sim_users.worker"} <= set(
        got["imported"]
    ), got["missing"]
    assert got["loaded"] == [], f"run-time modules import the build-time tools: {got['loaded']}"
    assert f"{TOOLS}.importer.pipeline" in got["control"]
