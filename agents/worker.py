"""The policy worker (``userrl worker policy``): batches of conversations in, actions out.

Every batch read from the ``policy`` stream goes to the backend in one call (hf: one padded
``generate``; vllm: all requests in flight at once). Each reply carries the exact prompt ids,
generated ids, their logprobs and the policy version. New weights announced on the ``weights``
stream are loaded between batches; later turns carry the new version.

Backend failures: transient ones (a model server timeout) are retried here with backoff; a
failure that persists is returned as an error reply, and the env worker fails the episode as an
infrastructure error (never as training text).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import structlog

from userrl.agents.base import GenRequest, GenResult, PolicyBackend, Sampling
from userrl.bus.messages import PolicyReply, PolicyRequest, WeightsAnnouncement, decode
from userrl.bus.transport import Bus, Delivery, Effects
from userrl.bus.worker import Worker, WorkerSettings
from userrl.errors import ConfigError, PolicyError

log = structlog.get_logger(__name__)


def make_policy_backend(cfg: Any) -> PolicyBackend:
    """The backend a deploy config names (``policy.backend``)."""
    p = cfg.policy
    if p.backend == "scripted":
        from userrl.agents.scripted import ScriptedExpertBackend

        return ScriptedExpertBackend()
    if p.backend == "openai":
        from userrl.agents.openai_backend import OpenAIPolicyBackend
        from userrl.openai_compat import OpenAIConfig

        if not p.base_url:
            raise ConfigError("policy.base_url is required for policy.backend: openai")
        return OpenAIPolicyBackend(OpenAIConfig(base_url=p.base_url, model=p.model))
    model = resolve_model_path(cfg)
    if p.backend == "vllm":
        from userrl.agents.vllm_backend import VLLMBackend

        return VLLMBackend(model, seed=cfg.seed)  # type: ignore[return-value]
    from userrl.agents.hf_backend import HFBackend

    return HFBackend(model, device=p.device, seed=cfg.seed)  # type: ignore[return-value]


def resolve_model_path(cfg: Any) -> str:
    """``tiny`` means the locally built tiny model of this run (built on first use)."""
    if cfg.policy.model != "tiny":
        return str(cfg.policy.model)
    path = Path(cfg.run_dir) / "tiny-model"
    if not (path / "config.json").is_file():
        from userrl.agents.tiny import build_tiny_model

        build_tiny_model(path, seed=cfg.seed)
    return str(path)


class PolicyWorker(Worker):
    role = "policy"

    def __init__(self, bus: Bus, settings: WorkerSettings | None = None, *, backend: PolicyBackend,
                 retries: int = 3, retry_backoff_s: float = 0.5) -> None:
        super().__init__(bus, settings)
        self.backend = backend
        self.retries = retries
        self.retry_backoff_s = retry_backoff_s
        self._weights_cursor = "0-0"
        self.swaps: list[dict[str, Any]] = []

    @classmethod
    def from_config(cls, bus: Bus, settings: WorkerSettings, cfg: Any) -> PolicyWorker:
        return cls(bus, settings, backend=make_policy_backend(cfg))

    def heartbeat_extra(self) -> dict[str, Any]:
        return {"policy_version": getattr(self.backend, "version", 0)}

    async def handle_batch(self, ds: Sequence[Delivery]) -> list[Effects | None | BaseException]:
        await self.maybe_reload()
        reqs: list[GenRequest] = []
        for d in ds:
            m = d.msg
            assert isinstance(m, PolicyRequest)
            reqs.append(GenRequest(episode_id=m.episode_id, env_id=m.env_id, messages=list(m.messages),
                                   prompt_ids=m.prompt_ids, n_seen=m.n_seen,
                                   sampling=Sampling(**m.sampling) if m.sampling else Sampling(), task=m.task))
        t0 = time.perf_counter()
        results: list[GenResult] | None = None
        error: PolicyError | None = None
        for attempt in range(self.retries + 1):
            try:
                results = await self.backend.generate(reqs)
                break
            except PolicyError as exc:
                error = exc
                if not exc.transient or attempt == self.retries:
                    break
                await anyio.sleep(self.retry_backoff_s * 2**attempt)
            except Exception as exc:  # a backend bug must not lose the batch: fail its episodes
                error = PolicyError(f"{type(exc).__name__}: {exc}")
                break
        dt = time.perf_counter() - t0
        out: list[Effects | None | BaseException] = []
        for i, d in enumerate(ds):
            m = d.msg
            assert isinstance(m, PolicyRequest)
            if results is not None:
                r = results[i]
                reply = PolicyReply(episode_id=m.episode_id, seq=m.seq, text=r.text, prompt_ids=list(r.prompt_ids),
                                    token_ids=list(r.token_ids), logprobs=[float(x) for x in r.logprobs],
                                    version=r.version, finish_reason=r.finish_reason, worker=self.name)
            else:
                assert error is not None
                reply = PolicyReply(episode_id=m.episode_id, seq=m.seq, text="", worker=self.name,
                                    error={"kind": "policy", "message": str(error), "transient": error.transient})
            out.append(Effects().send(self.bus.keys.stream("env"), reply))
        n_tokens = sum(len(r.token_ids) for r in results or [])
        self.log.info("policy.batch", n=len(ds), tokens=n_tokens, seconds=round(dt, 3),
                      version=getattr(self.backend, "version", 0), failed=results is None)
        return out

    async def maybe_reload(self) -> None:
        """Load the newest announced weights, if newer than ours (between batches)."""
        rows = await self.bus.redis.xrevrange(self.bus.keys.weights, count=1)
        if not rows:
            return
        eid, fields = rows[0]
        eid_s = eid.decode()
        if eid_s == self._weights_cursor:
            return
        self._weights_cursor = eid_s
        msg = decode(fields[b"p"])
        assert isinstance(msg, WeightsAnnouncement)
        if msg.version <= getattr(self.backend, "version", 0):
            return
        seconds = await self.backend.load_weights(msg.path, msg.version)
        self.swaps.append({"version": msg.version, "seconds": seconds})
        self.log.info("policy.weights_loaded", version=msg.version, path=msg.path, swap_s=round(seconds, 3))
