"""The simulated-user worker (``userrl worker user``).

Reads the ``user`` stream in batches, answers every request concurrently (up to the worker's
concurrency), and commits each reply atomically: stored under ``(episode, seq, hop)`` in the
episode's replies hash (a re-executed env step replays it) and announced on the ``env`` stream.
Transient backend failures (429, 5xx, timeouts) are retried with backoff; a failure that
persists is sent as an error reply and the episode fails as an infrastructure error. Users are
never trained: nothing here produces tokens for the learner.
"""

from __future__ import annotations

from typing import Any

import anyio
import msgpack
import structlog

from userrl.bus.messages import UserReply, UserRequest
from userrl.bus.transport import Bus, Delivery, Effects
from userrl.bus.worker import Worker, WorkerSettings
from userrl.errors import ConfigError, MessageError, UserError
from userrl.sim_users.base import ScriptedBackend, UserBackend, UserQuery

log = structlog.get_logger(__name__)


def make_user_backend(kind: str, cfg: Any) -> UserBackend:
    u = cfg.user
    if kind == "scripted":
        return ScriptedBackend()
    if kind == "openai":
        from userrl.openai_compat import OpenAIConfig
        from userrl.sim_users.openai_backend import OpenAIUserBackend

        if not u.base_url or not u.model:
            raise ConfigError("user.base_url and user.model are required for user.backend: openai")
        return OpenAIUserBackend(OpenAIConfig(base_url=u.base_url, model=u.model, api_key_env=u.api_key_env))
    if kind == "hf":
        from userrl.sim_users.hf_backend import HFUserBackend

        if not u.model:
            raise ConfigError("user.model (a local model path) is required for user.backend: hf")
        return HFUserBackend(u.model)
    raise ConfigError(f"user.backend: {kind!r} is not one of ['scripted', 'openai', 'hf']")


class UserWorker(Worker):
    role = "user"

    def __init__(self, bus: Bus, settings: WorkerSettings | None = None, *, backend: UserBackend | None = None,
                 per_gym: dict[str, UserBackend] | None = None, retries: int = 3,
                 retry_backoff_s: float = 0.5) -> None:
        super().__init__(bus, settings)
        self.backend = backend or ScriptedBackend()
        self.per_gym = per_gym or {}
        self.retries = retries
        self.retry_backoff_s = retry_backoff_s

    @classmethod
    def from_config(cls, bus: Bus, settings: WorkerSettings, cfg: Any) -> UserWorker:
        per_gym = {gym: make_user_backend(kind, cfg) for gym, kind in cfg.user.per_gym.items()}
        return cls(bus, settings, backend=make_user_backend(cfg.user.backend, cfg), per_gym=per_gym)

    async def handle(self, d: Delivery) -> Effects:
        m = d.msg
        assert isinstance(m, UserRequest)
        try:
            query = UserQuery.from_dict(m.query)
        except (KeyError, ValueError, TypeError) as exc:
            raise MessageError(f"user_request {m.episode_id}:{m.seq}:{m.hop}: bad query: {exc}") from exc
        backend = self.per_gym.get(query.env_id, self.backend)
        reply: dict[str, Any] | None = None
        error: dict[str, Any] | None = None
        for attempt in range(self.retries + 1):
            try:
                reply = await backend.ask(query)
                break
            except UserError as exc:
                if not exc.transient or attempt == self.retries:
                    error = {"kind": "user", "message": str(exc), "transient": exc.transient}
                    break
                await anyio.sleep(self.retry_backoff_s * 2**attempt)
            except Exception as exc:  # a backend bug fails this episode, not the worker
                error = {"kind": "user", "message": f"{type(exc).__name__}: {exc}", "transient": False}
                break
        eff = Effects()
        if reply is not None:
            eff.hset(self.bus.keys.replies(m.episode_id), {f"{m.seq}:{m.hop}": msgpack.packb(reply, use_bin_type=True)})
        else:
            self.log.warning("user.failed", episode_id=m.episode_id, error=error)
        out = UserReply(episode_id=m.episode_id, seq=m.seq, hop=m.hop, reply=reply or {}, error=error, worker=self.name)
        return eff.send(self.bus.keys.stream("env"), out)
