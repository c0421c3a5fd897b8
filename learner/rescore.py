"""Re-score stored episodes with another credit/score formulation, without regenerating.

The learner archives every scored group it trains on (``{run_dir}/learner/groups.msgpack``, one
msgpack map per group, appended). ``userrl rescore`` reads that archive and recomputes each
group's scores and per-token advantages with the reward settings of a config (e.g.
``--set reward.credit=r2g --set reward.score=r2g``), from the stored turn rewards and token
counts, and writes a new archive that can be inspected or trained on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack

from userrl.bus.records import scored_trajectories
from userrl.errors import DataError, MessageError
from userrl.learner.rewards import RewardConfig, group_advantages


def append_groups(path: str | Path, groups: list[dict[str, Any]]) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("ab") as f:
        for g in groups:
            f.write(msgpack.packb(g, use_bin_type=True))


def read_groups(path: str | Path) -> Iterator[dict[str, Any]]:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no archive of scored groups (the learner writes learner/groups.msgpack)")
    with p.open("rb") as f:
        try:
            for g in msgpack.Unpacker(f, raw=False):
                if not isinstance(g, dict) or "items" not in g:
                    raise DataError(f"{p}: an entry is not a scored group")
                yield g
        except (msgpack.ExtraData, msgpack.FormatError, ValueError) as exc:
            raise DataError(f"{p}: corrupt archive: {exc}") from exc


def rescore_group(group: dict[str, Any], cfg: RewardConfig) -> dict[str, Any]:
    """The same group with GRPO trajectory scores and advantages recomputed under ``cfg``."""
    try:
        items = scored_trajectories(group["items"], "group.items")
    except MessageError as exc:
        raise DataError(f"a scored group of the archive is malformed: {exc}") from exc
    rewards = [[t.reward for t in it.turns or ()] for it in items]
    lengths = [[len(t.token_ids) for t in it.turns or ()] for it in items]
    kw = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(RewardConfig)}
    scores, advantages = group_advantages(rewards, lengths, **kw)
    new_items = [
        dataclasses.replace(
            it, score=s, turns=[dataclasses.replace(t, advantages=a) for t, a in zip(it.turns or (), adv, strict=True)]
        ).to_wire()
        for it, s, adv in zip(items, scores, advantages, strict=True)
    ]
    return {**group, "items": new_items, "reward_config": kw}


def rescore_archive(src: str | Path, dst: str | Path, cfg: RewardConfig) -> dict[str, float]:
    """Rescore every group of ``src`` into ``dst``; returns summary statistics."""
    Path(dst).unlink(missing_ok=True)
    n_groups = n_items = 0
    abs_adv = 0.0
    n_tok = 0
    for g in read_groups(src):
        new = rescore_group(g, cfg)
        append_groups(dst, [new])
        n_groups += 1
        n_items += len(new["items"])
        for it in new["items"]:
            for t in it["turns"]:
                abs_adv += sum(abs(a) for a in t["advantages"])
                n_tok += len(t["advantages"])
    return {"groups": n_groups, "episodes": n_items, "mean_abs_advantage": abs_adv / max(n_tok, 1)}
