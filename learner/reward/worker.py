"""The reward worker (``userrl worker reward``): trajectories in, scored GRPO groups out.

Each trajectory is stored in its group's hash in the same atomic commit that acks it; the
commit of the group's last member also asks for scoring (``score_group``), decided inside the
commit so concurrent reward workers can never both miss the last member. Scoring applies the
turn credits, trajectory score and group normalization of ``docs/gyms.md`` (:mod:`.rewards`) and
emits one ``scored_group`` to the learner (and a summary to the results stream).

A group with a failed member (an infrastructure error) is dropped as a whole and counted; a
group still incomplete after ``group_timeout_s`` is force-scored by the deadline sweep, i.e.
dropped. Late members of a finished group are discarded and counted. The same sweep keeps the
finished-episode and done-group indexes at ``bus.finished_cap`` members and reports failed the
live episodes stalled past ``bus.stall_timeout_ms`` (:func:`~userrl.bus.reconcile.sweep_stalled`);
the learner and results streams are capped at ``bus.results_cap`` entries.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING

import anyio
import structlog

from userrl.bus.messages import ScoredGroup, ScoreGroup, Trajectory, decode, encode
from userrl.bus.reconcile import sweep_stalled
from userrl.bus.records import ScoredTrajectory
from userrl.bus.transport import Bus, Delivery, Effects
from userrl.bus.worker import Worker, WorkerSettings
from userrl.errors import RewardError
from userrl.learner.rewards import RewardConfig, group_advantages

if TYPE_CHECKING:
    from userrl.config import DeployConfig

log = structlog.get_logger(__name__)


def episode_return(traj: Trajectory) -> float:
    """The episode's return: the sum of its turn rewards (what GRPO optimizes). Its episode
    score is its gym's ``Env.episode_score``, which the env worker puts in ``meta["score"]``."""
    return float(sum(t.reward for t in traj.turns))


def score_group(trajs: list[Trajectory], cfg: RewardConfig) -> list[ScoredTrajectory]:
    """Per trajectory: its GRPO trajectory score S, its return, and its turns with their token
    advantages (docs/gyms.md §Rewards). The turns are the trajectory's own records."""
    rewards = [[t.reward for t in tr.turns] for tr in trajs]
    lengths = [[len(t.token_ids) for t in tr.turns] for tr in trajs]
    kw = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(RewardConfig)}
    scores, advantages = group_advantages(rewards, lengths, **kw)
    return [
        ScoredTrajectory(
            episode_id=tr.episode_id,
            task_id=tr.task_id,
            score=s,
            return_=episode_return(tr),
            n_turns=len(tr.turns),
            turns=[dataclasses.replace(t, advantages=a) for t, a in zip(tr.turns, adv, strict=True)],
            meta=tr.meta,
        )
        for tr, s, adv in zip(trajs, scores, advantages, strict=True)
    ]


class RewardWorker(Worker):
    role = "reward"
    accepts = (Trajectory, ScoreGroup)

    def __init__(
        self,
        bus: Bus,
        settings: WorkerSettings | None = None,
        *,
        config: RewardConfig | None = None,
        group_timeout_s: float = 600.0,
        sweep_interval_s: float = 2.0,
        stall_s: float = 900.0,
    ) -> None:
        super().__init__(bus, settings)
        self.config = config or RewardConfig()
        self.stall_s = stall_s
        self.group_timeout_s = group_timeout_s
        self.sweep_interval_s = sweep_interval_s

    @classmethod
    def from_config(cls, bus: Bus, settings: WorkerSettings, cfg: DeployConfig) -> RewardWorker:
        return cls(
            bus,
            settings,
            config=cfg.reward,
            group_timeout_s=cfg.reward.group_timeout_s,
            stall_s=cfg.bus.stall_timeout_ms / 1000,
        )

    async def async_run(self) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._sweep_loop)
            await super().async_run()
            tg.cancel_scope.cancel()

    async def handle(self, d: Delivery) -> Effects | None:
        msg = d.msg
        if isinstance(msg, Trajectory):
            return await self.on_trajectory(msg)
        if isinstance(msg, ScoreGroup):
            return await self.on_score_group(msg)
        raise RewardError(f"reward worker cannot handle {type(msg).__name__}")

    async def on_trajectory(self, t: Trajectory) -> Effects:
        k = self.bus.keys
        eff = Effects()
        if await self.bus.groups.is_scored(t.group_id):
            self.log.warning("reward.late_member", group_id=t.group_id, episode_id=t.episode_id)
            return eff.incr(k.counters, "late_trajectories")
        size = int(t.meta.get("group_size", 1))
        members = k.group_members(t.group_id)
        eff.hset(members, {t.episode_id: encode(t)}).zadd(k.groups_open, time.time(), t.group_id, nx=True)
        return eff.send_if_hash_len(self.stream, ScoreGroup(episode_id=t.group_id, group_id=t.group_id), members, size)

    async def on_score_group(self, m: ScoreGroup) -> Effects | None:
        k = self.bus.keys
        raw = await self.bus.groups.members(m.group_id)
        if not raw:
            return None  # already scored
        trajs = sorted((decode(v) for v in raw), key=lambda t: t.episode_id)
        assert all(isinstance(t, Trajectory) for t in trajs)
        size = int(trajs[0].meta.get("group_size", 1))  # type: ignore[attr-defined]
        failed = [t.episode_id for t in trajs if t.status != "ok"]  # type: ignore[attr-defined]
        eff = Effects()
        cap = self.bus.settings.results_cap  # nothing may grow without bound when no one reads
        env_id = trajs[0].env_id  # type: ignore[attr-defined]
        if failed or len(trajs) < size:
            reason = f"failed members {failed}" if failed else f"{len(trajs)}/{size} members by the deadline"
            summary = [
                {
                    "episode_id": t.episode_id,
                    "status": t.status,  # type: ignore[attr-defined]
                    "error": t.error.to_wire() if t.error else None,  # type: ignore[attr-defined]
                    "return": episode_return(t),
                    "meta": t.meta,  # type: ignore[attr-defined]
                    "users": [u for turn in t.turns for u in turn.users],  # type: ignore[attr-defined]
                }
                for t in trajs
            ]  # type: ignore[arg-type]
            out = ScoredGroup(
                episode_id=m.group_id,
                group_id=m.group_id,
                env_id=env_id,
                items=summary,
                status="dropped",
                meta={"reason": reason},
            )
            self.log.warning("reward.group_dropped", group_id=m.group_id, reason=reason)
            eff.send(k.stream("learner"), out, maxlen=cap).send(k.results, out, maxlen=cap)
            status = f"dropped:{reason}"
            eff.incr(k.counters, "groups_dropped")
        else:
            items = score_group(trajs, self.config)  # type: ignore[arg-type]
            out = ScoredGroup(
                episode_id=m.group_id, group_id=m.group_id, env_id=env_id, items=items, meta=dict(trajs[0].meta)
            )  # type: ignore[attr-defined]
            summary_items = [it.summary() for it in items]
            eff.send(k.stream("learner"), out, {"group": m.group_id, "env": env_id}, maxlen=cap)
            eff.send(
                k.results,
                dataclasses.replace(out, items=summary_items),
                {"group": m.group_id, "env": env_id},
                maxlen=cap,
            )
            status = "scored"
            eff.incr(k.counters, "groups_scored")
        eff.zadd(k.groups_done_at, time.time(), m.group_id)
        return (
            eff.delete(k.group_members(m.group_id))
            .zrem(k.groups_open, m.group_id)
            .hset(k.groups_done, {m.group_id: status})
        )

    async def _sweep_loop(self) -> None:
        while True:
            await anyio.sleep(self.sweep_interval_s)
            try:
                await self.bus.cap_finished()
                await sweep_stalled(self.bus, self.stall_s)
                for g in await self.bus.groups.opened_before(time.time() - self.group_timeout_s):
                    await self.bus.send(
                        self.stream, ScoreGroup(episode_id=g, group_id=g, hop=1, force=True, reason="deadline")
                    )
            except Exception as exc:  # the sweep retries next round
                self.log.warning("reward.sweep_failed", error=repr(exc))
