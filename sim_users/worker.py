"""The simulated-user worker (``userrl worker user``).

Reads the ``user`` stream in the base worker's streaming mode and keeps up to ``concurrency``
requests in flight at once: a request starts as soon as a slot is free and commits as soon as
it is answered (commits of requests that finish together share one pipeline), so one slow LLM
call never holds up the others. Each commit is atomic: the reply is stored under ``(episode, seq, hop)`` in the
episode's replies hash (a re-executed env step replays it) and announced on the ``env`` stream,
and the request is acked, in one step. A worker killed mid-request leaves its requests pending;
a peer (or its own restart) reclaims and answers them, and the idempotent commit keeps a reply
from being announced twice.

Failures are classified, never passed on as user text:

- a transient backend failure (HTTP 429/5xx, timeout, connection error) is retried with
  exponential backoff, ``retries`` times (the ``openai`` client first retries on its own);
- a failure that persists, or a permanent one (HTTP 4xx, a reply still malformed after the
  re-asks, a backend bug), becomes an error reply (``kind: "user"``): the env worker fails the
  episode as an infrastructure error, its trajectory has ``status: "failed"``;
- a malformed request is dead-lettered.

Every reply carries its stamp (``UserReply.by``: which simulator, or which person, wrote it) and
how the call went (``UserReply.stats``: latency, generations, malformed/empty replies, leak-guard
trips; :mod:`userrl.sim_users.stamp`); a failure carries the stamp in its message.

The worker follows the run's user target (``userrl users swap``, :mod:`userrl.sim_users.simulators`):
it checks it once per heartbeat and answers new requests with the simulator it names. With
``user.seat`` on, an episode whose user's seat a person claimed in the web view gets its user
questions answered by that person (:mod:`userrl.sim_users.seat`).

Users are never trained: nothing here produces tokens for the learner.

Backend knobs (``user.timeout_s``, ``max_retries``, ``backoff_s``, ``retries``, ``max_tokens``,
``temperature``) come from the deploy config's ``user`` section.
"""

from __future__ import annotations

import random
import time
from typing import Any

import anyio
import msgpack
import structlog

from userrl.bus.messages import ErrorRecord, HumanReply, UserReply, UserRequest
from userrl.bus.transport import Bus, Delivery, Effects
from userrl.bus.worker import Worker, WorkerSettings
from userrl.config import DeployConfig
from userrl.envs.users import ScriptedBackend
from userrl.errors import ConfigError, MessageError, UserError
from userrl.openai_compat import OpenAIConfig
from userrl.sim_users import seat
from userrl.sim_users.base import UserBackend, UserQuery
from userrl.sim_users.hf_backend import HFUserBackend
from userrl.sim_users.openai_backend import OpenAIUserBackend
from userrl.sim_users.simulators import Simulators, build_simulators, read_target, with_user
from userrl.sim_users.stamp import HUMAN, recording

__all__ = ["UserWorker", "backend_option", "make_user_backend"]

log = structlog.get_logger(__name__)

BACKENDS = ("scripted", "openai", "hf")


def backend_option(cfg: DeployConfig, name: str) -> float:
    """A user-backend knob from the deploy config's ``user`` section (validated at load)."""
    return float(getattr(cfg.user, name))


def make_user_backend(kind: str, cfg: DeployConfig) -> UserBackend:
    """Build the user/judge backend ``kind`` (``scripted``, ``openai``, ``hf``) from a deploy config."""
    u = cfg.user
    if kind == "scripted":
        return ScriptedBackend()
    if kind == "openai":
        if not u.base_url or not u.model:
            raise ConfigError("user.base_url and user.model are required for user.backend: openai")
        backoff = backend_option(cfg, "backoff_s")
        conc = cfg.workers["user"].concurrency if "user" in getattr(cfg, "workers", {}) else 64
        oc = OpenAIConfig(
            base_url=u.base_url,
            model=u.model,
            api_key_env=u.api_key_env,
            temperature=backend_option(cfg, "temperature"),
            max_tokens=max(1, int(backend_option(cfg, "max_tokens"))),
            timeout_s=backend_option(cfg, "timeout_s"),
            concurrency=max(1, int(conc)),
            max_retries=int(backend_option(cfg, "max_retries")),
            backoff_base_s=backoff,
            backoff_max_s=max(30.0, backoff),
        )
        return OpenAIUserBackend(oc, structured_output=u.structured_output, share_ttl_s=u.share_ttl_s)
    if kind == "hf":
        if not u.model:
            raise ConfigError("user.model (a local model path) is required for user.backend: hf")
        max_new = max(1, int(backend_option(cfg, "max_tokens")))
        return HFUserBackend(u.model, max_new_tokens=max_new, share_ttl_s=u.share_ttl_s)
    raise ConfigError(f"user.backend: {kind!r} is not one of {list(BACKENDS)}")


class UserWorker(Worker):
    """Answers ``user_request`` messages with the configured backend (see the module docstring).

    Args:
        backend: the default backend (scripted when omitted).
        per_gym: ``env_id -> backend`` overrides.
        retries: worker-level retries of a transient :class:`~userrl.errors.UserError`.
        retry_backoff_s: first delay between those retries (doubles, with jitter).
        simulators: the backends with their stamps (instead of ``backend``/``per_gym``).
        config: the deploy config: the worker follows the run's user target (swaps) over it.
        seat: answer claimed episodes' user questions with the person's replies.
        seat_poll_s: how often a parked question checks for the person's reply or the claim.
    """

    role = "user"
    accepts = (UserRequest, HumanReply)
    streaming = True  #: one slow LLM call never holds up the other requests

    def __init__(
        self,
        bus: Bus,
        settings: WorkerSettings | None = None,
        *,
        backend: UserBackend | None = None,
        per_gym: dict[str, UserBackend] | None = None,
        retries: int = 2,
        retry_backoff_s: float = 0.5,
        simulators: Simulators | None = None,
        config: DeployConfig | None = None,
        seat: bool = False,
        seat_poll_s: float = 0.25,
    ) -> None:
        super().__init__(bus, settings)
        if retries < 0 or retry_backoff_s < 0:
            raise ConfigError(f"retries and retry_backoff_s must be >= 0, got {retries}, {retry_backoff_s}")
        self.sims = simulators or Simulators(backend or ScriptedBackend(), per_gym or {})
        self.retries = retries
        self.retry_backoff_s = retry_backoff_s
        self.config = config
        self.seat = seat
        self.seat_poll_s = seat_poll_s
        self.target_id = ""  #: the user target applied ("" = the config's own)
        self.target_error = ""  #: why the last target could not be applied
        self.retired: list[Simulators] = []  #: swapped-out simulators, closed once idle
        self.active: dict[int, int] = {}  #: id(backend) -> requests it is answering
        self.stats.update({"replies": 0, "failed": 0, "retried": 0, "human": 0, "parked": 0, "swaps": 0})

    @property
    def backend(self) -> UserBackend:
        return self.sims.default

    @property
    def per_gym(self) -> dict[str, UserBackend]:
        return self.sims.per_gym

    @classmethod
    def from_config(cls, bus: Bus, settings: WorkerSettings, cfg: DeployConfig) -> UserWorker:
        return cls(
            bus,
            settings,
            simulators=build_simulators(cfg, make_user_backend),
            retries=int(backend_option(cfg, "retries")),
            retry_backoff_s=backend_option(cfg, "backoff_s"),
            config=cfg,
            seat=cfg.user.seat,
        )

    def heartbeat_extra(self) -> dict[str, Any]:
        return {
            "backend": type(self.backend).__name__,
            "by": self.sims.stamp(self.backend),
            "seat": self.seat,
            "target": self.target_id,
            "target_error": self.target_error,
        }

    async def async_run(self) -> None:
        if self.config is None:
            await super().async_run()
            return
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.follow_target)
            await super().async_run()
            tg.cancel_scope.cancel()

    async def on_stop(self) -> None:
        for sims in [self.sims, *self.retired]:
            await self.close(sims)
        self.retired = []

    async def close(self, sims: Simulators) -> None:
        for b in sims.backends():
            close = getattr(b, "aclose", None)
            if close is not None:
                try:
                    await close()
                except Exception as exc:  # closing must not mask the shutdown
                    self.log.warning("user.close_failed", backend=type(b).__name__, error=repr(exc))

    # -- swaps ------------------------------------------------------------------------------------
    async def follow_target(self) -> None:
        """Check the run's user target once per heartbeat and apply it when it changed."""
        while True:
            try:
                await self.apply_target()
            except Exception as exc:  # a bad target must never stop the worker answering
                self.target_error = f"{type(exc).__name__}: {exc}"
                self.log.error("user.swap_failed", error=self.target_error)
            await self.close_idle()
            await anyio.sleep(self.settings.heartbeat_interval_s)

    async def apply_target(self) -> None:
        assert self.config is not None
        try:
            target = await read_target(self.bus)
        except ConfigError as exc:
            self.target_error = str(exc)
            return
        want = target.id if target else ""
        if want == self.target_id:
            return
        try:
            cfg = with_user(self.config, target.fields) if target else self.config
            new = build_simulators(cfg, make_user_backend)
        except Exception as exc:  # keep answering with what we have, and say why in the heartbeat
            self.target_error = f"{type(exc).__name__}: {exc}"
            self.target_id = want
            self.log.error("user.swap_failed", target=want, error=self.target_error)
            return
        old, self.sims = self.sims, new
        self.retired.append(old)
        self.target_id, self.target_error = want, ""
        self.stats["swaps"] += 1
        self.log.info("user.swapped", target=want or "config", by=new.stamp(new.default), was=old.stamp(old.default))

    async def close_idle(self) -> None:
        """Close swapped-out backends that no request uses any more."""
        keep = []
        for sims in self.retired:
            if any(self.active.get(id(b)) for b in sims.backends()):
                keep.append(sims)
            else:
                await self.close(sims)
        self.retired = keep

    # -- one request ----------------------------------------------------------------------------
    async def answer(self, query: UserQuery) -> tuple[dict[str, Any] | None, ErrorRecord | None, str, dict[str, Any]]:
        """``(reply, None, stamp, stats)`` or ``(None, error, stamp, stats)``: retries transient
        failures, classifies the rest as a :class:`~userrl.errors.UserError`; ``stamp`` names the
        simulator that answered, ``stats`` how the call went."""
        backend, by = self.sims.pick(query.env_id)
        self.active[id(backend)] = self.active.get(id(backend), 0) + 1
        t0 = time.perf_counter()
        try:
            with recording() as rec:
                reply, error = await self.ask_with_retries(backend, query)
        finally:
            self.active[id(backend)] -= 1
        if error is not None:  # the failure names who failed
            error = ErrorRecord(kind=error.kind, message=f"[{by}] {error.message}", retryable=error.retryable)
        return reply, error, by, rec.stats((time.perf_counter() - t0) * 1000)

    async def ask_with_retries(
        self, backend: UserBackend, query: UserQuery
    ) -> tuple[dict[str, Any] | None, ErrorRecord | None]:
        for attempt in range(self.retries + 1):
            try:
                reply = await backend.ask(query)
            except UserError as exc:
                if not exc.transient or attempt == self.retries:
                    return None, ErrorRecord.of(exc)
                self.stats["retried"] += 1
                delay = self.retry_backoff_s * 2**attempt
                delay = delay / 2 + random.uniform(0, delay / 2)
                self.log.warning(
                    "user.retry",
                    env_id=query.env_id,
                    name=query.name,
                    attempt=attempt + 1,
                    error=str(exc),
                    delay_s=round(delay, 3),
                )
                await anyio.sleep(delay)
            except Exception as exc:  # a backend bug fails this episode, not the worker
                return None, ErrorRecord.of(UserError(f"{type(exc).__name__}: {exc}"))
            else:
                if not isinstance(reply, dict):
                    error = UserError(f"backend returned {type(reply).__name__}, not a dict")
                    return None, ErrorRecord.of(error)
                return reply, None
        raise AssertionError("unreachable")  # pragma: no cover

    async def handle(self, d: Delivery) -> Effects:
        m = d.msg
        if isinstance(m, HumanReply):
            return await self.on_human_reply(m)
        if not isinstance(m, UserRequest):
            raise MessageError(f"the user worker cannot handle {type(m).__name__}")
        try:
            query = UserQuery.from_dict(m.query)
        except (KeyError, ValueError, TypeError) as exc:
            raise MessageError(f"user_request {m.episode_id}:{m.seq}:{m.hop}: bad query: {exc}") from exc
        if self.seat and query.kind == "respond" and not await self.simulator_may_answer(m, query):
            return Effects()  # a person answered it: their reply's commit announced it
        reply, error, by, stats = await self.answer(query)
        return self.reply_effects(m, reply, error, by, stats)

    def reply_effects(
        self,
        m: UserRequest | HumanReply,
        reply: dict[str, Any] | None,
        error: ErrorRecord | None,
        by: str,
        stats: dict[str, Any],
    ) -> Effects:
        """Store the reply under ``(episode, seq, hop)`` and announce it, stamped, to the env."""
        eff = Effects()
        if reply is not None:
            self.stats["replies"] += 1
            eff.hset(self.bus.keys.replies(m.episode_id), {f"{m.seq}:{m.hop}": msgpack.packb(reply, use_bin_type=True)})
        else:
            self.stats["failed"] += 1
            self.log.warning(
                "user.failed", episode_id=m.episode_id, seq=m.seq, hop=m.hop, error=error.to_wire() if error else None
            )
        out = UserReply(
            episode_id=m.episode_id,
            seq=m.seq,
            hop=m.hop,
            reply=reply or {},
            error=error,
            worker=self.name,
            by=by,
            stats=stats,
        )
        return eff.send(self.bus.keys.stream("env"), out)

    # -- the user's seat (docs/users.md) ------------------------------------------------------------
    async def simulator_may_answer(self, m: UserRequest, query: UserQuery) -> bool:
        """False when a person answers this question (:func:`userrl.sim_users.seat.wait_for_seat`)."""
        by = await seat.wait_for_seat(
            self.bus.seat, m, query, self.sims.pick(query.env_id)[1], self.seat_poll_s, self.parked
        )
        return not by.startswith(HUMAN)

    def parked(self, m: UserRequest) -> None:
        self.stats["parked"] += 1
        self.log.info("user.parked", episode_id=m.episode_id, seq=m.seq, hop=m.hop)

    async def on_human_reply(self, h: HumanReply) -> Effects:
        """Commit a person's reply like a simulator's, if it is still theirs to give."""
        try:
            reply, by, stats = await seat.accept(self.bus.seat, h)
        except seat.SeatError as exc:
            self.log.warning("user.human_reply_refused", episode_id=h.episode_id, seq=h.seq, hop=h.hop, why=str(exc))
            return Effects()
        self.stats["human"] += 1
        return self.reply_effects(h, reply, None, by, stats)
