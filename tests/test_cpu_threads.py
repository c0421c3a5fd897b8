"""OpenMP threads wait passively in every userrl process (spinning ones starve a loaded CPU)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from userrl.runtime import OMP_DEFAULTS, cpu_thread_defaults

PROBE = """
import os, sys
from userrl.cli import main
try:
    main(["--help"])
except SystemExit:
    pass
print(os.environ.get("OMP_WAIT_POLICY"), "torch" in sys.modules)
"""


def test_defaults_fill_only_what_the_user_left_unset() -> None:
    env: dict[str, str] = {}
    assert cpu_thread_defaults(env) == OMP_DEFAULTS and env["OMP_WAIT_POLICY"] == "PASSIVE"
    mine = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert cpu_thread_defaults(mine) == {} and mine == {"OMP_WAIT_POLICY": "ACTIVE"}


@pytest.mark.parametrize(("given", "seen"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_the_cli_sets_it_before_torch_loads(given: str | None, seen: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given is not None:
        env["OMP_WAIT_POLICY"] = given
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    # torch not yet imported: OpenMP reads the variable once, when torch loads it
    assert out.stdout.split()[-2:] == [seen, "False"]
