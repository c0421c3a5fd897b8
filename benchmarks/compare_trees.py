"""``benchmarks/bus.py`` in two trees of the repository, the same run: is a change neutral?

Makes a temporary ``git worktree`` of ``--base`` (a git rev), then runs ``benchmarks/bus.py``
from the base tree and from this one alternately, ``--rounds`` times (the order flips every
round, so a drift in the machine's load does not always favour the same tree), and prints each
scenario's userrl/raw ratio per tree side by side (every round's ratio and their median) with
the ratio of the medians. The ratio is what bus.py measures against raw redis-py in the same
process, so it is comparable across trees where turns/s, on a loaded machine, are not.

Each run imports its own tree's code: the package maps folders onto ``userrl.*`` through
pyproject's ``package-dir`` (``bus/`` is ``userrl.bus``, ...), so each tree gets a folder of
symlinks laid out as the installed package (``userrl/``, ``userrl/bus`` -> ``bus/``, ...) put
first on ``PYTHONPATH``, ahead of the editable install; a probe checks which files a tree
imports before any measurement. The worktree and the symlinks are removed at the end.

    python benchmarks/compare_trees.py --base main [--rounds 3] [bus.py args: --seconds 4 ...]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
PROBE = "import userrl.bus.worker as m, userrl.envs.registry as r; print(m.__file__); print(r.__file__)"


@dataclass
class Tree:
    label: str
    root: Path
    shim: Path
    #: (scenario, in flight, row tags) -> the userrl/raw ratio of each round
    ratios: dict[tuple[str, int, str], list[float]] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        old = os.environ.get("PYTHONPATH")
        return {**os.environ, "PYTHONPATH": str(self.shim) + (os.pathsep + old if old else "")}


def git(*args: str, cwd: Path = HERE) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def build_shim(root: Path, shim: Path) -> None:
    """``shim/userrl`` laid out as the installed package, by symlinks into ``root``."""
    dirs: dict[str, str] = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    if dirs.get("userrl") is None:
        raise SystemExit(f"{root}/pyproject.toml: package-dir maps no 'userrl' folder")
    top = shim / "userrl"
    top.mkdir(parents=True)
    for entry in (root / dirs["userrl"]).iterdir():
        if entry.name != "__pycache__":
            (top / entry.name).symlink_to(entry)
    for pkg, folder in sorted(dirs.items(), key=lambda kv: kv[0].count(".")):
        if pkg == "userrl":
            continue
        link = shim.joinpath(*pkg.split("."))
        if link.is_symlink():
            link.unlink()  # a mapped package wins over a folder of the same name under userrl/
        link.symlink_to(root / folder, target_is_directory=True)


def probe(tree: Tree) -> None:
    """Fail unless ``tree``'s interpreter imports the tree's own files. It runs from the tree's
    ``benchmarks/``, which is first on ``sys.path`` for bus.py too (a ``userrl/`` in the current
    folder would shadow the shim, and the editable install would fill in the rest)."""
    cwd = tree.root / "benchmarks" if (tree.root / "benchmarks").is_dir() else tree.root
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=cwd, env=tree.env(), capture_output=True, text=True, timeout=120
    )
    files = out.stdout.split()
    if out.returncode != 0 or len(files) != 2:
        raise SystemExit(f"{tree.label}: the import probe failed:\n{out.stderr}")
    for f in files:
        if not Path(f).resolve().is_relative_to(tree.root.resolve()):
            raise SystemExit(f"{tree.label}: imports {f}, not a file of {tree.root}")


_NUM = re.compile(r"^-?\d+(\.\d+)?$")


def parse(out: str) -> dict[tuple[str, int, str], float]:
    """Rows of bus.py's tables: (the section line above, in flight, the row's words) -> the last
    number of the row, its ratio."""
    rows: dict[tuple[str, int, str], float] = {}
    section = ""
    for line in out.splitlines():
        tokens = line.split()
        if line.rstrip().endswith(":"):
            section = line.strip().rstrip(":")
        elif len(tokens) >= 2 and tokens[0].isdigit() and _NUM.match(tokens[-1]):
            tags = " ".join(t for t in tokens[1:-1] if re.search(r"[A-Za-z]", t))
            rows[(section, int(tokens[0]), tags)] = float(tokens[-1])
    return rows


def run_round(tree: Tree, bus_args: list[str], timeout: float) -> None:
    script = tree.root / "benchmarks" / "bus.py"
    out = subprocess.run(
        [sys.executable, str(script), *bus_args],
        cwd=tree.root,
        env=tree.env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if out.returncode != 0:
        raise SystemExit(f"{tree.label}: bus.py failed (exit {out.returncode}):\n{out.stdout}\n{out.stderr}")
    rows = parse(out.stdout)
    if not rows:
        raise SystemExit(f"{tree.label}: no table rows in bus.py's output:\n{out.stdout}")
    for key, ratio in rows.items():
        tree.ratios.setdefault(key, []).append(ratio)


def report(base: Tree, this: Tree) -> str:
    keys = list(dict.fromkeys([*base.ratios, *this.ratios]))
    width = max(len(k[2]) for k in keys) if keys else 0
    lines = []
    section = None
    for key in keys:
        if key[0] != section:
            section = key[0]
            lines.append(f"{section}:")
            lines.append(
                f"{'in flight':>10} {'':{width}} {base.label + ' (rounds; median)':>34} "
                f"{this.label + ' (rounds; median)':>34} {'this/base':>10}"
            )
        cells, medians = [], []
        for tree in (base, this):
            xs = tree.ratios.get(key, [])
            med = statistics.median(xs) if xs else float("nan")
            medians.append(med)
            cells.append(f"{' '.join(f'{x:.2f}' for x in xs)}; {med:.2f}")
        lines.append(f"{key[1]:>10} {key[2]:{width}} {cells[0]:>34} {cells[1]:>34} {medians[1] / medians[0]:>10.2f}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    ap.add_argument("--base", required=True, help="the git rev to compare this tree with (e.g. main)")
    ap.add_argument("--rounds", type=int, default=3, help="runs of bus.py per tree, alternating (default 3)")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds one bus.py run may take")
    args, bus_args = ap.parse_known_args()
    if args.rounds < 1:
        ap.error("--rounds must be >= 1")
    sha = git("rev-parse", "--verify", f"{args.base}^{{commit}}")
    tmp = Path(tempfile.mkdtemp(prefix="userrl-compare-"))
    worktree = tmp / "base"
    try:
        git("worktree", "add", "--detach", str(worktree), sha)
        base = Tree(f"base {args.base} ({sha[:8]})", worktree, tmp / "shim-base")
        this = Tree("this tree", HERE, tmp / "shim-this")
        for tree in (base, this):
            build_shim(tree.root, tree.shim)
            probe(tree)
        print(f"bus.py {' '.join(bus_args)}: {args.rounds} rounds, the trees alternating", flush=True)
        for r in range(args.rounds):
            for tree in (base, this) if r % 2 == 0 else (this, base):
                print(f"round {r + 1}: {tree.label}", flush=True)
                run_round(tree, bus_args, args.timeout)
        print(report(base, this))
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=HERE, capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
        subprocess.run(["git", "worktree", "prune"], cwd=HERE, capture_output=True)


if __name__ == "__main__":
    main()
