"""The learner process loop (``userrl learn``, or inside ``userrl train``).

dispatch groups -> collect B scored groups from the ``learner`` stream -> GRPO step ->
save weights -> announce the version on the ``weights`` stream (with ``weight_sync: memory``, also
broadcast it into the vLLM engines: :mod:`userrl.learner.weight_sync`) -> ack the groups -> log.
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
from userrl.learner.metrics import MetricsLog, with_deprecated
from userrl.learner.rescore import append_groups
from userrl.learner.sim_health import simulator_metrics
from userrl.learner.weight_sync import announce_version

log = structlog.get_logger(__name__)


def zero_variance(msg: ScoredGroup) -> bool:
    """All trajectories of the group have the same GRPO trajectory score: every advantage is 0,
    GRPO learns nothing."""
    scores = [it.score for it in msg.trajectories]
    return len(scores) > 0 and max(scores) - min(scores) <= 1e-12


async def collect_groups(
    bus: Bus,
    dispatcher: Dispatcher,
    n: int,
    consumer: str,
    timeout_s: float,
    version: int = 0,
    backlog: list[Delivery] | None = None,
    dropped_items: list[dict[str, Any]] | None = None,
    max_refills: int = 0,
) -> tuple[list[Delivery], dict[str, int]]:
    """Take ``n`` usable scored groups: first from ``backlog`` (groups read before a restart and
    not yet covered by a checkpoint), then new ones. Dropped groups are acked and counted (their
    members' summaries appended to ``dropped_items``, for the simulator-health metrics).

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
                if msg.status != "ok" and dropped_items is not None:
                    dropped_items += msg.items
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
    weight_sync: str = "disk",
    weight_sync_host: str = "127.0.0.1",
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
        dropped_items: list[dict[str, Any]] = []
        ds, counts = await collect_groups(
            bus,
            dispatcher,
            groups_per_step,
            consumer,
            group_timeout_s,
            learner.version,
            backlog,
            dropped_items=dropped_items,
            max_refills=max_refills,
        )
        msgs: list[ScoredGroup] = [d.msg for d in ds]  # type: ignore[misc]  # collect_groups keeps only these
        groups = [{"items": g.items, "env_id": g.env_id} for g in msgs]
        t_roll = time.monotonic() - t0
        m = await anyio.to_thread.run_sync(learner.step, groups)
        append_groups(
            learner.out / "groups.msgpack",
            [{"group_id": g.group_id, "env_id": g.env_id, "items": [it.to_wire() for it in g.items]} for g in msgs],
        )
        t_publish = time.monotonic()
        path = learner.save_weights()
        memory = weight_sync == "memory" and not learner.replicas.lockstep  # sharded: rank 0 lacks them
        sync = await announce_version(
            bus, learner.version, str(path), publishable_state(learner) if memory else None, weight_sync_host
        )
        unacked += ds
        m.update(rollout_metrics(groups))
        m.update(simulator_metrics(groups, dropped_items))
        m.update(
            {
                "rollout/groups_dropped": counts["dropped"],
                "rollout/zero_variance_dropped": counts["zero_variance_dropped"],
                "rollout/zero_variance_kept": counts["zero_variance_kept"],
                "rollout/replayed_groups": replayed,
                # cumulative: what data losses on the server cost (learner.dispatch)
                **{f"dispatch/{k}": v for k, v in dispatcher.stats().items()},
                "perf/step_s": round(time.monotonic() - t0, 3),
                "perf/rollout_wait_s": round(t_roll, 3),
                "perf/publish_s": round(time.monotonic() - t_publish, 4),
                "weights/in_memory": int(sync["mode"] == "memory"),
            }
        )
        n_turns = sum(it.n_turns for g in msgs for it in g.trajectories)
        n_tokens = sum(len(t.token_ids) for g in msgs for it in g.trajectories for t in it.turns or ())
        dt = max(time.monotonic() - t0, 1e-9)
        m.update({"perf/turns_per_s": round(n_turns / dt, 2), "perf/tokens_per_s": round(n_tokens / dt, 1)})
        m = with_deprecated(m)  # the old names too, for one release (learner.metrics.RENAMED)
        metrics.log(step, m)
        rows.append({"step": step, **m})
        bar.update(1)
        bar.set_postfix(
            mean_return=f"{m['rollout/return_mean']:.3f}",
            loss=f"{m.get('loss/policy', 0):.3f}",
            mismatch_kl=f"{m.get('offpolicy/kl', 0.0):.1e}",
        )
        log.info(
            "learner.step",
            step=step,
            version=learner.version,
            mean_return=round(m["rollout/return_mean"], 4),
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


def publishable_state(learner: GRPOLearner) -> dict[str, Any]:
    """The learner's weights as the published file holds them (a tied head once)."""
    tied = bool(getattr(learner.model.config, "tie_word_embeddings", False))
    return {k: v for k, v in learner.full_state_dict().items() if not (tied and k == "lm_head.weight")}


def rollout_metrics(groups: list[dict[str, Any]]) -> dict[str, float]:
    """Mean return (sum of turn rewards) of the step's trajectories, overall and per gym."""
    per_gym: dict[str, list[float]] = defaultdict(list)
    for g in groups:
        for it in g["items"]:
            per_gym[g["env_id"]].append(float(it["return"]))  # a record or its wire map
    allr = [r for v in per_gym.values() for r in v]
    out = {"rollout/return_mean": sum(allr) / max(len(allr), 1)}
    for gym, v in per_gym.items():
        out[f"rollout/return/{gym.split('/')[-1]}"] = sum(v) / len(v)
    return out
