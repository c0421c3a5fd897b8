"""The env worker (``userrl worker env``): runs gym steps and moves dialogues forward.

It consumes the ``env`` stream: ``reset`` (start an episode), ``policy_reply`` (the agent's
action for turn ``seq``) and ``user_reply`` (a stored user/judge reply is ready). Each message
is handled from the episode snapshot alone, so any env worker can continue any episode, and
every outcome is one atomic commit: the new snapshot, the next request (to ``policy`` or
``user``) or the finished trajectory (to ``reward``), the readable episode log, the live set.

A reset's ``options`` (the deploy's ``gym_options``, or ``eval_gym_options`` in evaluation)
configure the gym: one instance per (env id, turn cap, options), and the options stay in the
episode snapshot, so every step of the episode, re-executed ones included, uses the same gym.

A malformed action gets the gym's format-error observation and zero reward; a gym exception,
a policy or user backend failure ends the episode as a failed trajectory (an infrastructure
error, never training text), its kind (``user_malformed``, ``user_empty``, ``policy``, ...) on
the trajectory and on the log's ``end`` entry.

A turn is a :class:`~userrl.bus.records.TurnRecord`, built once from the policy's reply and the
gym's step. Each user/judge call of a turn is recorded on it (``users``: query kind and name,
the stamp of who answered, latency and the call's counters, whether the user hung up), and the
log's ``env`` entry names who answered (``by``). An episode the user ended (a reply with
``done``) below the task's best score carries ``meta["hangup"] = "early"``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgpack
import structlog

from userrl.bus.messages import (
    ErrorRecord,
    PolicyReply,
    PolicyRequest,
    Reset,
    Trajectory,
    UserReply,
    UserRequest,
)
from userrl.bus.reconcile import release_episode
from userrl.bus.records import Generation, TurnRecord
from userrl.bus.transport import Bus, Delivery, Effects
from userrl.bus.worker import Worker, WorkerSettings
from userrl.envs.base import Env
from userrl.envs.episode import Episode, NeedReply, ReplayUser, Turn, play_turn, reset_episode
from userrl.envs.registry import get_env_class, make
from userrl.errors import EnvError, RolloutError
from userrl.sim_users.stamp import turn_user

if TYPE_CHECKING:
    from userrl.config import DeployConfig

log = structlog.get_logger(__name__)


class EnvWorker(Worker):
    role = "env"
    accepts = (Reset, PolicyReply, UserReply)

    def __init__(
        self,
        bus: Bus,
        settings: WorkerSettings | None = None,
        *,
        send_task_to_policy: bool = False,
        show_reward: bool = True,
    ) -> None:
        super().__init__(bus, settings)
        self.send_task_to_policy = send_task_to_policy
        self.show_reward = show_reward
        self._envs: dict[tuple[str, int, str], Env] = {}
        self._prefetched: dict[str, tuple[bytes | None, dict[bytes, bytes]]] = {}
        self._routes: dict[str, tuple[str, float]] = {}

    @classmethod
    def from_config(cls, bus: Bus, settings: WorkerSettings, cfg: DeployConfig) -> EnvWorker:
        return cls(bus, settings, send_task_to_policy=cfg.policy.backend == "scripted")

    def env(self, env_id: str, max_turns: int, options: dict[str, Any] | None = None) -> Env:
        """The gym instance for these settings, built once per (env id, turn cap, options)."""
        key = (env_id, max_turns, json.dumps(options or {}, sort_keys=True))
        if key not in self._envs:
            self._envs[key] = make(env_id, max_turns=max_turns or None, **(options or {}))
        return self._envs[key]

    # -- dispatch -------------------------------------------------------------------------------
    async def handle_batch(self, ds: Sequence[Delivery]) -> list[Effects | None | BaseException]:
        # One pipelined read of every episode's snapshot and stored replies for the whole batch,
        # instead of two round trips (and two pooled connections) per message.
        eps = sorted({d.msg.episode_id for d in ds if d.msg is not None})
        self._prefetched = await self.bus.store.snapshots_and_replies(eps)
        try:
            return await super().handle_batch(ds)
        finally:
            self._prefetched = {}

    async def handle(self, d: Delivery) -> Effects | None:
        msg = d.msg
        if isinstance(msg, Reset):
            return await self.on_reset(msg)
        ep = await self.load(msg.episode_id)  # type: ignore[union-attr]
        if ep is None:
            self.log.warning("env.unknown_episode", episode_id=msg.episode_id, kind=msg.KIND)  # type: ignore[union-attr]
            return None
        if isinstance(msg, PolicyReply):
            return await self.on_policy_reply(ep, msg)
        if isinstance(msg, UserReply):
            return await self.on_user_reply(ep, msg)
        raise EnvError(f"env worker cannot handle {type(msg).__name__}")

    async def load(self, episode_id: str) -> Episode | None:
        if episode_id in self._prefetched:
            raw = self._prefetched[episode_id][0]
        else:
            raw = await self.bus.store.snapshot(episode_id)
        return Episode.unpack(raw) if raw else None

    async def stored_replies(self, episode_id: str) -> dict[bytes, bytes]:
        if episode_id in self._prefetched:
            return self._prefetched[episode_id][1]
        return await self.bus.store.replies(episode_id)

    async def policy_stream(self, replica: str) -> str:
        """``Bus.routes.stream_for``, with the replica's liveness cached for a second."""
        now = time.monotonic()
        hit = self._routes.get(replica)
        if hit is None or now - hit[1] > 1.0:
            hit = (await self.bus.routes.stream_for(replica), now)
            self._routes[replica] = hit
        return hit[0]

    # -- reset ----------------------------------------------------------------------------------
    async def on_reset(self, msg: Reset) -> Effects | None:
        if await self.load(msg.episode_id) is not None:
            return None  # a duplicate reset: the episode already runs
        task_id = str(msg.task.get("id", ""))
        ep = Episode(
            episode_id=msg.episode_id,
            group_id=msg.group_id,
            env_id=msg.env_id,
            task_id=task_id,
            env_state={},
            messages=[],
            sampling=dict(msg.sampling),
            meta=dict(msg.meta),
            started_at=time.time(),
            gym_options=dict(msg.options),
        )
        try:
            env = self.env(msg.env_id, msg.max_turns, ep.gym_options)
            ep.env_state, ep.messages = await reset_episode(env, msg.task, msg.seed)
        except Exception as exc:  # a bad task or unknown env id fails its episode only, never the worker
            return self.fail(Effects(), ep, EnvError(f"reset failed: {type(exc).__name__}: {exc}"))
        eff = Effects().zadd(self.bus.keys.live, ep.started_at, ep.episode_id)
        self.log_turn(eff, ep, role="system", text=ep.messages[0]["content"])
        self.log_turn(eff, ep, role="user", text=ep.messages[1]["content"])
        return self.ask_policy(eff, ep)

    # -- a policy reply: one gym step -----------------------------------------------------------
    async def on_policy_reply(self, ep: Episode, msg: PolicyReply) -> Effects | None:
        if msg.seq != ep.seq or ep.pending is not None:
            return None  # a stale duplicate of a reply already applied
        eff = Effects()
        if msg.error:
            return self.fail(eff, ep, msg.error.exception("policy failed"))
        ep.pending = Generation(
            text=msg.text,
            prompt_ids=msg.prompt_ids,
            token_ids=msg.token_ids,
            logprobs=msg.logprobs,
            version=msg.version,
            worker=msg.worker,
            finish_reason=msg.finish_reason,
        )
        ep.calls = {}
        self.log_turn(eff, ep, role="assistant", text=msg.text, version=msg.version, worker=msg.worker)
        return await self.run_step(eff, ep, {})

    async def on_user_reply(self, ep: Episode, msg: UserReply) -> Effects | None:
        if ep.pending is None or msg.seq != ep.seq:
            return None  # stale: that step already completed
        eff = Effects()
        if msg.error:
            return self.fail(eff, ep, msg.error.exception("user failed"))
        call = ep.calls.setdefault(str(msg.hop), {})
        call.update({**msg.stats, "by": msg.by})
        if call.get("kind") == "respond" and msg.reply.get("done") is True:
            call["hangup"] = True
        stored = await self.stored_replies(ep.episode_id)
        replies: dict[int, dict[str, Any]] = {}
        prefix = f"{ep.seq}:"
        for k, v in stored.items():
            key = k.decode()
            if key.startswith(prefix):
                replies[int(key[len(prefix) :])] = msgpack.unpackb(v, raw=False)
        replies.setdefault(msg.hop, dict(msg.reply))
        return await self.run_step(eff, ep, replies)

    async def run_step(self, eff: Effects, ep: Episode, replies: dict[int, dict[str, Any]]) -> Effects:
        assert ep.pending is not None
        state = ep.env_state
        env = self.env(ep.env_id, int(state.get("max_turns", 0)), ep.gym_options)
        user = ReplayUser(replies, history=[m for m in ep.messages if m["role"] != "system"])
        show_reward = bool(ep.meta.get("show_reward", self.show_reward))
        try:
            turn = await play_turn(env, state, ep.pending.text, user, show_reward=show_reward)
        except NeedReply as need:
            req = UserRequest(episode_id=ep.episode_id, seq=ep.seq, hop=need.hop, query=need.query.to_dict())
            eff.send(self.bus.keys.stream("user"), req)
            ep.calls[str(need.hop)] = {"kind": need.query.kind, "name": need.query.name}
            return self.save(eff, ep)
        except Exception as exc:
            return self.fail(eff, ep, EnvError(f"step failed: {type(exc).__name__}: {exc}"))
        return self.finish_turn(eff, ep, turn, await self.policy_stream(ep.pending.worker))

    def finish_turn(self, eff: Effects, ep: Episode, turn: Turn, policy_stream: str | None = None) -> Effects:
        p = ep.pending
        assert p is not None
        action, res = turn.action, turn.result
        reward = float(res.reward)
        users = [
            turn_user(int(h), c.get("kind", ""), c.get("name", ""), c.get("by", ""), _call_stats(c))
            for h, c in sorted(ep.calls.items(), key=lambda hc: int(hc[0]))
        ]
        ep.turns.append(
            TurnRecord.played(
                p,
                seq=ep.seq,
                reward=reward,
                action=action.text,
                observation=res.observation,
                format_error=action.choice == "invalid",
                terminated=res.terminated,
                truncated=res.truncated,
                info_score=float(res.info["score"]) if "score" in res.info else None,
                users=users,
            )
        )
        ep.messages += turn.messages
        n_seen = len(ep.messages) - 1
        ep.env_state = res.state
        ep.prompt_ids = (p.prompt_ids + p.token_ids) if p.token_ids else None
        ep.n_seen = n_seen if p.token_ids else 0
        ep.pending, ep.calls = None, {}
        by = ",".join(dict.fromkeys(u["by"] for u in users if u["by"]))
        self.log_turn(eff, ep, role="env", text=turn.feedback["content"], reward=reward, by=by)
        if res.terminated or res.truncated:
            return self.complete(eff, ep, "terminated" if res.terminated else "truncated")
        ep.seq += 1
        return self.ask_policy(eff, ep, policy_stream)

    # -- outputs --------------------------------------------------------------------------------
    def ask_policy(self, eff: Effects, ep: Episode, stream: str | None = None) -> Effects:
        """Ask for the next action; ``stream`` routes it to the replica that holds the episode's
        prefix cache (sticky episodes), else the shared policy stream."""
        req = PolicyRequest(
            episode_id=ep.episode_id,
            seq=ep.seq,
            env_id=ep.env_id,
            messages=ep.messages,
            prompt_ids=ep.prompt_ids,
            n_seen=ep.n_seen,
            sampling=ep.sampling,
            task=ep.env_state.get("task") if self.send_task_to_policy else None,
        )
        eff.send(stream or self.bus.keys.stream("policy"), req)
        return self.save(eff, ep)

    def save(self, eff: Effects, ep: Episode) -> Effects:
        # ``at`` is the episode's last progress: the reconciler reports an episode stalled past
        # its deadline (e.g. a message of it was dead-lettered) instead of waiting forever.
        return eff.hset(
            self.bus.keys.state(ep.episode_id), {"episode": ep.pack(), "seq": ep.seq, "at": f"{time.time():.3f}"}
        )

    def complete(self, eff: Effects, ep: Episode, end: str, error: RolloutError | None = None) -> Effects:
        status = "failed" if error else "ok"
        err = ErrorRecord.of(error) if error else None
        score = self.score(ep)
        hung_up = bool(ep.turns) and end == "terminated" and any(u.get("hangup") for u in ep.turns[-1].users)
        if hung_up:  # the user ended it: early when the task was not done for them
            best = get_env_class(ep.env_id).max_score(ep.env_state.get("task") or {})
            ep.meta["hangup"] = "early" if score < best - 1e-9 else "done"
        traj = Trajectory(
            episode_id=ep.episode_id,
            group_id=ep.group_id,
            env_id=ep.env_id,
            task_id=ep.task_id,
            turns=ep.turns,
            status=status,
            error=err,
            meta={**ep.meta, "end": end, "score": score},
        )
        eff.send(self.bus.keys.stream("reward"), traj, {"episode": ep.episode_id, "status": status})
        self.log_turn(
            eff,
            ep,
            role="end",
            text=end if not err else f"{end}: {err.kind}: {err.message}",
            reward=sum(t.reward for t in ep.turns),
            error=err.kind if err else "",
        )
        return release_episode(eff, self.bus, ep.episode_id, status)

    @staticmethod
    def score(ep: Episode) -> float:
        """The gym's evaluation score of the episode so far (0 when no turn was played: the
        reset failed, maybe for an unknown env id)."""
        if not ep.turns:
            return 0.0
        return get_env_class(ep.env_id).episode_score([t.reward for t in ep.turns], ep.env_state)

    def fail(self, eff: Effects, ep: Episode, error: RolloutError) -> Effects:
        self.log.warning("env.episode_failed", episode_id=ep.episode_id, error=str(error), kind=error.kind)
        return self.complete(eff, ep, "failed", error)

    def log_turn(
        self,
        eff: Effects,
        ep: Episode,
        *,
        role: str,
        text: str,
        reward: float | None = None,
        version: int | None = None,
        worker: str = "",
        by: str = "",
        error: str = "",
    ) -> None:
        fields: dict[str, Any] = {"role": role, "turn": ep.seq, "text": text}
        if reward is not None:
            fields["reward"] = reward
        if version is not None:
            fields["version"] = version
        if by:
            fields["by"] = by  # who answered the user questions of this turn
        if error:
            fields["error"] = error
        fields["worker"] = worker or self.name
        eff.append(self.bus.keys.episode(ep.episode_id), fields, maxlen=self.bus.settings.episode_log_cap)


def _call_stats(call: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in call.items() if k not in ("kind", "name", "by")}
