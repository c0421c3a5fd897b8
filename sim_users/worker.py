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

Users are never trained: nothing here produces tokens for the learner.

Backend knobs (``user.timeout_s``, ``max_retries``, ``backoff_s``, ``retries``, ``max_tokens``,
``temperature``) come from the deploy config's ``user`` section.
"""

from __future__ import annotations

import random
from typing import Any

import anyio
import msgpack
import structlog

from userrl.bus.messages import ErrorRecord, UserReply, UserRequest
from userrl.bus.transport import Bus, Delivery, Effects
from userrl.bus.worker import Worker, WorkerSettings
from userrl.envs.users import ScriptedBackend
from userrl.errors import ConfigError, MessageError, UserError
from userrl.openai_compat import OpenAIConfig
from userrl.sim_users.base import UserBackend, UserQuery
from userrl.sim_users.hf_backend import HFUserBackend
from userrl.sim_users.openai_backend import OpenAIUserBackend

__all__ = ["UserWorker", "backend_option", "make_user_backend"]

log = structlog.get_logger(__name__)

BACKENDS = ("scripted", "openai", "hf")


def backend_option(cfg: Any, name: str) -> float:
    """A user-backend knob from the deploy config's ``user`` section (validated at load)."""
    return float(getattr(cfg.user, name))


def make_user_backend(kind: str, cfg: Any) -> UserBackend:
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
        return OpenAIUserBackend(oc, structured_output=u.structured_output)
    if kind == "hf":
        if not u.model:
            raise ConfigError("user.model (a local model path) is required for user.backend: hf")
        return HFUserBackend(u.model)
    raise ConfigError(f"user.backend: {kind!r} is not one of {list(BACKENDS)}")


class UserWorker(Worker):
    """Answers ``user_request`` messages with the configured backend (see the module docstring).

    Args:
        backend: the default backend (scripted when omitted).
        per_gym: ``env_id -> backend`` overrides.
        retries: worker-level retries of a transient :class:`~userrl.errors.UserError`.
        retry_backoff_s: first delay between those retries (doubles, with jitter).
    """

    role = "user"
    accepts = (UserRequest,)
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
    ) -> None:
        super().__init__(bus, settings)
        if retries < 0 or retry_backoff_s < 0:
            raise ConfigError(f"retries and retry_backoff_s must be >= 0, got {retries}, {retry_backoff_s}")
        self.backend: UserBackend = backend or ScriptedBackend()
        self.per_gym = per_gym or {}
        self.retries = retries
        self.retry_backoff_s = retry_backoff_s
        self.stats.update({"replies": 0, "failed": 0, "retried": 0})

    @classmethod
    def from_config(cls, bus: Bus, settings: WorkerSettings, cfg: Any) -> UserWorker:
        backends: dict[str, UserBackend] = {cfg.user.backend: make_user_backend(cfg.user.backend, cfg)}
        per_gym: dict[str, UserBackend] = {}
        for gym, kind in cfg.user.per_gym.items():
            if kind not in backends:
                backends[kind] = make_user_backend(kind, cfg)
            per_gym[gym] = backends[kind]
        return cls(
            bus,
            settings,
            backend=backends[cfg.user.backend],
            per_gym=per_gym,
            retries=int(backend_option(cfg, "retries")),
            retry_backoff_s=backend_option(cfg, "backoff_s"),
        )

    def heartbeat_extra(self) -> dict[str, Any]:
        return {"backend": type(self.backend).__name__}

    async def on_stop(self) -> None:
        seen: set[int] = set()
        for b in [self.backend, *self.per_gym.values()]:
            close = getattr(b, "aclose", None)
            if close is not None and id(b) not in seen:
                seen.add(id(b))
                try:
                    await close()
                except Exception as exc:  # closing must not mask the shutdown
                    self.log.warning("user.close_failed", backend=type(b).__name__, error=repr(exc))

    # -- one request ----------------------------------------------------------------------------
    async def answer(self, query: UserQuery) -> tuple[dict[str, Any] | None, ErrorRecord | None]:
        """``(reply, None)`` or ``(None, error)``: retries transient failures, classifies the rest
        as a :class:`~userrl.errors.UserError`."""
        backend = self.per_gym.get(query.env_id, self.backend)
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
        if not isinstance(m, UserRequest):
            raise MessageError(f"the user worker cannot handle {type(m).__name__}")
        try:
            query = UserQuery.from_dict(m.query)
        except (KeyError, ValueError, TypeError) as exc:
            raise MessageError(f"user_request {m.episode_id}:{m.seq}:{m.hop}: bad query: {exc}") from exc
        reply, error = await self.answer(query)
        eff = Effects()
        if reply is not None:
            self.stats["replies"] += 1
            eff.hset(self.bus.keys.replies(m.episode_id), {f"{m.seq}:{m.hop}": msgpack.packb(reply, use_bin_type=True)})
        else:
            self.stats["failed"] += 1
            self.log.warning(
                "user.failed", episode_id=m.episode_id, seq=m.seq, hop=m.hop, error=error.to_wire() if error else None
            )
        out = UserReply(episode_id=m.episode_id, seq=m.seq, hop=m.hop, reply=reply or {}, error=error, worker=self.name)
        return eff.send(self.bus.keys.stream("env"), out)
