"""The learner process loop (``userrl learn``, or inside ``userrl train``).

dispatch groups -> collect B scored groups from the ``learner`` stream -> GRPO step ->
save weights -> announce the version on the ``weights`` stream -> ack the groups -> log.
The groups are acked only after the new weights are announced: a learner that dies mid-step
gets the same groups again when it restarts under its name.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import anyio
import structlog

from userrl.bus.messages import ScoredGroup, WeightsAnnouncement
from userrl.bus.transport import Bus, Delivery, Effects
from userrl.console import progress
from userrl.learner.dispatch import Dispatcher
from userrl.learner.grpo_learner import GRPOLearner
from userrl.learner.metrics import MetricsLog
from userrl.learner.rescore import append_groups

log = structlog.get_logger(__name__)


def zero_variance(msg: ScoredGroup) -> bool:
    """All episodes of the group scored the same: every advantage is 0, GRPO learns nothing."""
    scores = [float(it.get("score", 0.0)) for it in msg.items]
    return len(scores) > 0 and max(scores) - min(scores) <= 1e-12


async def collect_groups(
    bus: Bus,
    dispatcher: Dispatcher,
    n: int,
    consumer: str,
    timeout_s: float,
    version: int = 0,
    backlog: list[Delivery] | None = None,
    max_refills: int = 0,
) -> tuple[list[Delivery], dict[str, int]]:
    """Take ``n`` usable scored groups: first from ``backlog`` (groups read before a restart and
    not yet covered by a checkpoint), then new ones. Dropped groups are acked and counted.

    With ``max_refills`` > 0 (DAPO's dynamic sampling) a group whose scores all tie is dropped
    too and its admission slot goes back to the dispatcher, which dispatches a replacement; after
    ``max_refills`` such drops in one call the rest are kept. Counts: ``dropped`` (failed
    groups), ``zero_variance_dropped``, ``zero_variance_kept`` (among the groups returned)."""
    stream, group = bus.keys.stream("learner"), bus.keys.group("learner")
    got: list[Delivery] = []
    counts = {"dropped": 0, "zero_variance_dropped": 0, "zero_variance_kept": 0}
    deadline = time.monotonic() + timeout_s
    while len(got) < n:
        if backlog:
            ds = [backlog.pop(0)]
        else:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(got)} of {n} scored groups after {timeout_s}s: are the workers up?")
            ds = await bus.read(stream, group, consumer, count=n - len(got))
        for d in ds:
            msg = d.msg
            if not isinstance(msg, ScoredGroup):
                await bus.dead_letter(d, f"learner expected scored_group, got {d.error or type(msg).__name__}")
                continue
            flat = msg.status == "ok" and zero_variance(msg)
            refill = flat and counts["zero_variance_dropped"] < max_refills
            dispatcher.done(msg.group_id, dropped=msg.status != "ok" or refill)
            if msg.status != "ok" or refill:
                counts["dropped" if msg.status != "ok" else "zero_variance_dropped"] += 1
                await bus.commit([(d, Effects())])
                continue
            counts["zero_variance_kept"] += flat
            got.append(d)
        if len(got) < n and not backlog:
            await dispatcher.fill(version)
    return got, counts


async def learn(
    bus: Bus,
    learner: GRPOLearner,
    dispatcher: Dispatcher,
    *,
    steps: int,
    groups_per_step: int,
    metrics: MetricsLog,
    time_budget_s: float,
    checkpoint_every: int = 10,
    consumer: str = "learner-0",
    group_timeout_s: float = 600.0,
    first_step: int = 1,
    max_refills: int = 0,
) -> list[dict[str, Any]]:
    """Scored groups are acked only once a checkpoint covers them: a learner killed mid-run and
    resumed from its checkpoint finds the groups it trained on since then still pending under
    its consumer name, and trains on them again first; no scored group is lost. ``max_refills``:
    dynamic sampling (:func:`collect_groups`)."""
    stream, group = bus.keys.stream("learner"), bus.keys.group("learner")
    await bus.ensure_group(stream, group)
    if learner.version > 0:  # resumed: the policy workers start from the checkpoint's weights
        path = learner.save_weights()
        await bus.send(
            bus.keys.weights,
            WeightsAnnouncement(episode_id="weights", seq=learner.version, version=learner.version, path=str(path)),
        )
    backlog = await bus.read(stream, group, consumer, pending=True, count=1_000_000)
    if backlog:
        log.info("learner.replaying_groups", n=len(backlog), version=learner.version)
    unacked: list[Delivery] = []

    async def checkpoint(step: int) -> None:
        learner.checkpoint({"step": step})
        await bus.commit([(d, Effects()) for d in unacked])  # now covered by a checkpoint
        unacked.clear()
        await bus.trim(stream)

    t_start = time.monotonic()
    rows = []
    step = first_step - 1
    bar = progress(steps, "GRPO", unit="step", initial=first_step - 1)  # drawn on a terminal only
    for step in range(first_step, steps + 1):
        t0 = time.monotonic()
        await dispatcher.fill(learner.version)
        replayed = min(len(backlog), groups_per_step)
        ds, counts = await collect_groups(
            bus, dispatcher, groups_per_step, consumer, group_timeout_s, learner.version, backlog, max_refills
        )
        groups = [{"items": d.msg.items, "env_id": d.msg.env_id} for d in ds]  # type: ignore[union-attr]
        t_roll = time.monotonic() - t0
        m = await anyio.to_thread.run_sync(learner.step, groups)
        append_groups(
            learner.out / "groups.msgpack",
            [
                {"group_id": d.msg.group_id, "env_id": d.msg.env_id, "items": d.msg.items}  # type: ignore[union-attr]
                for d in ds
            ],
        )
        path = learner.save_weights()
        await bus.send(
            bus.keys.weights,
            WeightsAnnouncement(episode_id="weights", seq=learner.version, version=learner.version, path=str(path)),
            {"version": learner.version, "path": str(path)},
        )
        unacked += ds
        m.update(rollout_metrics(groups))
        m.update(
            {
                "rollout/groups_dropped": counts["dropped"],
                "rollout/zero_variance_dropped": counts["zero_variance_dropped"],
                "rollout/zero_variance_kept": counts["zero_variance_kept"],
                "rollout/replayed_groups": replayed,
                "perf/step_s": round(time.monotonic() - t0, 3),
                "perf/rollout_wait_s": round(t_roll, 3),
            }
        )
        n_turns = sum(it["n_turns"] for g in groups for it in g["items"])
        n_tokens = sum(len(t["token_ids"]) for g in groups for it in g["items"] for t in it["turns"])
        dt = max(time.monotonic() - t0, 1e-9)
        m.update({"perf/turns_per_s": round(n_turns / dt, 2), "perf/tokens_per_s": round(n_tokens / dt, 1)})
        metrics.log(step, m)
        rows.append({"step": step, **m})
        bar.update(1)
        bar.set_postfix(
            score=f"{m['rollout/score_mean']:.3f}",
            loss=f"{m.get('loss/policy', 0):.3f}",
            mismatch_kl=f"{m.get('offpolicy/kl', 0.0):.1e}",
        )
        log.info(
            "learner.step",
            step=step,
            version=learner.version,
            score=round(m["rollout/score_mean"], 4),
            loss=round(m.get("loss/policy", 0.0), 4),
            clip=round(m.get("policy/clip_frac", 0.0), 3),
            stale=m.get("rollout/stale_tokens", 0),
            entropy=round(m.get("policy/entropy", 0.0), 4),
            mismatch_kl=m.get("offpolicy/kl", 0.0),
            ratio_min=round(m.get("offpolicy/ratio_min", 1.0), 4),
            ratio_max=round(m.get("offpolicy/ratio_max", 1.0), 4),
            capped=round(m.get("offpolicy/capped_frac", 0.0), 4),
            seconds=m["perf/step_s"],
        )
        if step % checkpoint_every == 0:
            await checkpoint(step)
        if time.monotonic() - t_start > time_budget_s:
            log.warning("learner.time_budget_reached", step=step, budget_s=time_budget_s)
            break
    if unacked:
        await checkpoint(step)
    bar.close()
    return rows


def rollout_metrics(groups: list[dict[str, Any]]) -> dict[str, float]:
    """Mean episode return (sum of turn rewards) overall and per gym."""
    per_gym: dict[str, list[float]] = defaultdict(list)
    for g in groups:
        for it in g["items"]:
            per_gym[g["env_id"]].append(float(it["return"]))
    allr = [r for v in per_gym.values() for r in v]
    out = {"rollout/score_mean": sum(allr) / max(len(allr), 1)}
    for gym, v in per_gym.items():
        out[f"rollout/score/{gym.split('/')[-1]}"] = sum(v) / len(v)
    return out
