"""benchmarks/compare_trees.py: it reads bus.py's tables (both layouts, with and without
``--parser both``) and makes each tree import its own code."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("compare_trees", ROOT / "benchmarks" / "compare_trees.py")
assert _spec is not None and _spec.loader is not None
compare_trees = importlib.util.module_from_spec(_spec)
sys.modules["compare_trees"] = compare_trees  # dataclasses look the module up while building
_spec.loader.exec_module(compare_trees)

PIPELINE = """\
4-hop turn pipeline (policy -> env -> user -> reward), instant handlers:
 in flight   parser  raw turns/s    p50/p99 ms  userrl turns/s    p50/p99 ms   ratio
         1   python          221    3.6/14.8               191    2.9/20.4      0.86
         1  hiredis          383    1.7/7.9                 93    9.8/40.4      0.24
         1           hiredis/python raw turns/s (median of 1)    1.73
"""
GYM = """\
end to end on TelepathyGym (env + policy + user workers, scripted):
 in flight  raw turns/s  userrl turns/s   ratio
        64         1500             900    0.60
"""


def test_parse_reads_each_rows_ratio_under_its_section() -> None:
    pipe = "4-hop turn pipeline (policy -> env -> user -> reward), instant handlers"
    assert compare_trees.parse(PIPELINE) == {
        (pipe, 1, "python"): 0.86,
        (pipe, 1, "hiredis"): 0.24,
        (pipe, 1, "hiredis/python raw turns/s (median of"): 1.73,
    }
    gym = "end to end on TelepathyGym (env + policy + user workers, scripted)"
    assert compare_trees.parse(GYM) == {(gym, 64, ""): 0.60}


def test_a_tree_imports_its_own_files_through_its_shim(tmp_path: Path) -> None:
    tree = compare_trees.Tree("this tree", ROOT, tmp_path / "shim")
    compare_trees.build_shim(ROOT, tree.shim)
    assert (tree.shim / "userrl" / "bus").resolve() == (ROOT / "bus").resolve()
    assert (tree.shim / "userrl" / "cli.py").resolve() == (ROOT / "userrl" / "cli.py").resolve()
    compare_trees.probe(tree)  # raises unless userrl.bus.worker comes from ROOT
    other = compare_trees.Tree("elsewhere", tmp_path / "elsewhere", tree.shim)
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(SystemExit, match="not a file of"):
        compare_trees.probe(other)


def test_report_sets_the_trees_side_by_side() -> None:
    key = ("pipe", 64, "")
    base = compare_trees.Tree("base", ROOT, ROOT, {key: [0.5, 0.7, 0.6]})
    this = compare_trees.Tree("this", ROOT, ROOT, {key: [0.66, 0.6]})
    out = compare_trees.report(base, this)
    assert out.splitlines()[0] == "pipe:"
    row = out.splitlines()[2].split()
    assert row[0] == "64" and row[-1] == "1.05"  # median 0.63 against 0.60
    assert "0.50 0.70 0.60; 0.60" in out and "0.66 0.60; 0.63" in out
