"""The policy worker (``userrl worker policy``): batches of conversations in, actions out.

Every batch goes to the backend in one call (hf: one padded ``generate``). A backend that batches
continuously (vllm: ``continuous``) is fed in streaming mode instead: each request goes to the
engine as soon as it is read and is answered as soon as it is done, so a long generation never
holds up the others. Each reply carries the exact prompt ids, generated ids, their logprobs and
the policy version. New weights announced on the ``weights`` stream are loaded between batches
(streaming: before each request, and at once by a watcher of the stream); later turns carry the
new version, and the swap time is logged and put in the heartbeat. With an in-memory round in the
announcement (:mod:`userrl.learner.weight_sync`) a backend that offers ``receive_weights`` takes
the tensors from the learner instead of the file.

**A backend that dies** (``backend.dead``: a vLLM engine process gone) stops the worker: the
requests it holds are not answered but stay pending for a peer (or the restarted worker) to
reclaim, and ``userrl worker policy`` exits with one ``userrl: error:`` line.

**Per-request errors.** One bad request (its token prefix does not match its messages, its
context overflows) fails only its own episode: the backend's ``generate_each`` returns a failed
result for it and generates the rest (backends without ``generate_each`` are split in halves
until the bad request is alone, :func:`generate_isolated`). Transient failures (a model server
timeout) are retried here with backoff, for the failed requests only; a failure that persists
is returned as an error reply, and the env worker fails the episode as a policy
infrastructure error (never as training text).

**Sticky episodes.** Every policy worker (replica) reads two streams with the ``policy`` group:
the shared ``policy`` stream and its own ``policy:{name}`` stream (``Keys.replica_stream``). The
env worker sends turn 2.. of an episode to the stream ``Bus.routes.stream_for`` names for the
replica that answered the previous turn (``PolicyReply.worker``): that replica's own stream
while its heartbeat lives, else the shared stream. So all turns of an episode prefer one
replica (its prefix cache holds the episode), and any replica serves them when it is gone.

Entries already in a dead replica's own stream are not lost: every replica registers its name
in a set (``Keys.policy_replicas``), and on each reclaim round a worker also scans the replicas
whose heartbeat expired, reading their never-delivered entries and ``XAUTOCLAIM``-ing their
pending ones idle past ``min_idle``. A dead replica's drained stream is deleted (and its name
unregistered) after ``orphan_prune_s``; a replica that comes back registers again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import structlog

from userrl.agents.base import GenRequest, GenResult, IsolatingBackend, PolicyBackend, Sampling
from userrl.agents.hf_backend import HFBackend
from userrl.agents.openai_backend import from_deploy_config
from userrl.agents.scripted import ScriptedExpertBackend
from userrl.agents.tiny import build_tiny_model
from userrl.agents.vllm_backend import VLLMBackend
from userrl.bus.messages import ErrorRecord, PolicyReply, PolicyRequest, WeightsAnnouncement, decode
from userrl.bus.transport import PAYLOAD, Bus, Delivery, Effects
from userrl.bus.worker import Worker, WorkerSettings
from userrl.envs.actions import TOOL_SCHEMA
from userrl.errors import MessageError, PolicyError
from userrl.hardware import resolve_device

if TYPE_CHECKING:
    from userrl.config import DeployConfig

log = structlog.get_logger(__name__)

__all__ = ["PolicyWorker", "generate_isolated", "make_policy_backend", "resolve_model_path"]


# ---- backends ----------------------------------------------------------------------------------


def make_policy_backend(cfg: DeployConfig) -> PolicyBackend:
    """The backend a deploy config names (``policy.backend``)."""
    p = cfg.policy
    if p.backend == "scripted":
        return ScriptedExpertBackend()
    if p.backend == "openai":
        return from_deploy_config(cfg)
    model = resolve_model_path(cfg)
    if p.backend == "vllm":
        return VLLMBackend(
            model,
            seed=cfg.seed,  # type: ignore[return-value]
            tools=(TOOL_SCHEMA,) if p.tools else None,
            **p.vllm.engine_args(),
        )
    return HFBackend(
        model,
        device=resolve_device(p.device),
        seed=cfg.seed,  # type: ignore[return-value]
        tools=(TOOL_SCHEMA,) if p.tools else None,
    )


def resolve_model_path(cfg: DeployConfig) -> str:
    """``tiny`` means the locally built tiny model of this run (built on first use)."""
    if cfg.policy.model != "tiny":
        return str(cfg.policy.model)
    path = Path(cfg.run_dir) / "tiny-model"
    if not (path / "config.json").is_file():
        build_tiny_model(path, seed=cfg.seed, **cfg.policy.tiny_size)
    return str(path)


async def generate_isolated(backend: PolicyBackend, requests: list[GenRequest]) -> list[GenResult]:
    """One result per request; a request that fails gets a failed :class:`GenResult`.

    Uses the backend's ``generate_each`` when it has one. Otherwise ``generate`` runs on the
    whole batch; when that fails permanently, the batch is split in halves until the failing
    requests are alone (a transient failure fails the whole batch as transient: retry it).
    """
    if not requests:
        return []
    version = int(getattr(backend, "version", 0))
    if isinstance(backend, IsolatingBackend):
        try:
            results = await backend.generate_each(requests)
        except Exception as exc:  # a backend bug fails these episodes, not the worker
            return [GenResult.failed(exc, version) for _ in requests]
        if len(results) != len(requests):
            err = PolicyError(f"backend returned {len(results)} results for {len(requests)} requests")
            return [GenResult.failed(err, version) for _ in requests]
        return results
    try:
        results = await backend.generate(requests)
        if len(results) != len(requests):
            raise PolicyError(f"backend returned {len(results)} results for {len(requests)} requests")
        return results
    except Exception as exc:
        if getattr(exc, "transient", False) or len(requests) == 1:
            return [GenResult.failed(exc, version) for _ in requests]
    half = len(requests) // 2
    return await generate_isolated(backend, requests[:half]) + await generate_isolated(backend, requests[half:])


def _sync_round(fields: dict[bytes, Any]) -> dict[str, Any]:
    """The in-memory round of a weights announcement (``sync`` field), or {}."""
    try:
        rnd = json.loads(fields[b"sync"]) if b"sync" in fields else {}
    except ValueError:
        return {}
    return rnd if isinstance(rnd, dict) and isinstance(rnd.get("ranks"), dict) else {}


# ---- the worker --------------------------------------------------------------------------------


class PolicyWorker(Worker):
    role = "policy"
    accepts = (PolicyRequest,)

    def __init__(
        self,
        bus: Bus,
        settings: WorkerSettings | None = None,
        *,
        backend: PolicyBackend,
        retries: int = 3,
        retry_backoff_s: float = 0.5,
        weights_retry_s: float = 5.0,
        orphan_prune_s: float = 300.0,
        owns_backend: bool = False,
    ) -> None:
        super().__init__(bus, settings)
        self.backend = backend
        self.owns_backend = owns_backend  #: close the backend (its engine) when the worker stops
        self.fatal: BaseException | None = None  #: why the worker stopped on its own (its engine died)
        self.retries = retries
        self.retry_backoff_s = retry_backoff_s
        self.weights_retry_s = weights_retry_s
        self.orphan_prune_s = orphan_prune_s
        self.own_stream = bus.keys.replica_stream(self.name)
        self.swaps: list[dict[str, Any]] = []
        self._weights_cursor = "0-0"
        self._weights_retry_at = 0.0
        self._dead_since: dict[str, float] = {}
        self._reload_lock = anyio.Lock()
        self.stats["sticky"] = 0  #: requests read from the own stream
        self.stats["failed_requests"] = 0

    @classmethod
    def from_config(cls, bus: Bus, settings: WorkerSettings, cfg: DeployConfig) -> PolicyWorker:
        return cls(bus, settings, backend=make_policy_backend(cfg), owns_backend=True)

    def run(self) -> int:
        """As :meth:`Worker.run`; a worker whose backend died raises why, after it stopped."""
        rc = super().run()
        if self.fatal is not None:
            raise self.fatal
        return rc

    @property
    def version(self) -> int:
        return int(getattr(self.backend, "version", 0))

    @property
    def streaming(self) -> bool:  # type: ignore[override]
        """Stream requests into backends that batch continuously (vLLM): each request starts as
        soon as it is read and is answered when it is done, instead of waiting for a batch."""
        return bool(getattr(getattr(self, "backend", None), "continuous", False))

    async def handle(self, d: Delivery) -> Effects | None:
        """One request (streaming mode): the batch path for a batch of one."""
        (result,) = await self.handle_batch([d])
        if isinstance(result, BaseException):
            raise result
        return result

    def heartbeat_extra(self) -> dict[str, Any]:
        last = self.swaps[-1] if self.swaps else {}
        return {
            "policy_version": self.version,
            "stream": self.own_stream,
            "swaps": len(self.swaps),
            "swap_s": last.get("seconds"),
            "swap_error": last.get("error"),
            # ranks this worker's engine joins an in-memory weight round with (0: files only)
            "memory_sync_ranks": int(getattr(self.backend, "memory_sync_ranks", 0)),
        }

    async def async_run(self) -> None:
        """As :meth:`Worker.run`; a streaming worker also watches the ``weights`` stream, so a
        new version loads as soon as it is announced (an in-memory round needs every receiver
        at once), not when the next request comes."""
        if not self.streaming:
            await super().async_run()
            return
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._watch_weights)
            await super().async_run()
            tg.cancel_scope.cancel()

    async def _watch_weights(self) -> None:
        cursor = "$"
        while True:
            try:
                got = await self.bus.weights.wait(cursor, block_ms=1000)
                if got is not None:
                    cursor = got
                    await self.maybe_reload()
            except Exception as exc:  # the next request checks again; the watcher must not kill the worker
                self.log.warning("policy.weights_watch_failed", error=repr(exc))
                await anyio.sleep(1.0)

    async def on_start(self) -> None:
        await self.bus.ensure_group(self.own_stream, self.group)
        await self.bus.routes.register(self.name)

    async def on_stop(self) -> None:
        close = getattr(self.backend, "close", None)
        if self.owns_backend and close is not None:
            await anyio.to_thread.run_sync(close)

    def _backend_died(self, n: int) -> list[Effects | None | BaseException] | None:
        """When the backend can serve no more (``backend.dead``, e.g. its vLLM engine died):
        stop the worker and leave the batch's ``n`` entries pending (a peer, or this worker
        restarted, reclaims them), instead of answering them with errors."""
        dead = getattr(self.backend, "dead", None)
        if dead is None:
            return None
        if self.fatal is None:
            self.fatal = dead
            self.log.error("policy.backend_died", error=str(dead), left_pending=n)
            self.stop()
        return [dead] * n

    # -- handling -------------------------------------------------------------------------------
    async def handle_batch(self, ds: Sequence[Delivery]) -> list[Effects | None | BaseException]:
        if (died := self._backend_died(len(ds))) is not None:
            return died
        await self.maybe_reload()
        t0 = time.perf_counter()
        results: list[GenResult | None] = [None] * len(ds)
        reqs: dict[int, GenRequest] = {}
        for i, d in enumerate(ds):
            m = d.msg
            assert isinstance(m, PolicyRequest)
            try:
                sampling = Sampling.from_wire(m.sampling)
            except (TypeError, ValueError) as exc:
                results[i] = GenResult.failed(PolicyError(f"bad sampling {m.sampling!r}: {exc}"), self.version)
                continue
            reqs[i] = GenRequest(
                episode_id=m.episode_id,
                env_id=m.env_id,
                messages=list(m.messages),
                prompt_ids=m.prompt_ids,
                n_seen=m.n_seen,
                sampling=sampling,
                task=m.task,
            )
        todo = list(reqs)
        for attempt in range(self.retries + 1):
            out = await generate_isolated(self.backend, [reqs[i] for i in todo])
            if (died := self._backend_died(len(ds))) is not None:
                return died
            retry = []
            for i, r in zip(todo, out, strict=True):
                results[i] = r
                if r.error and r.error_transient and attempt < self.retries:
                    retry.append(i)
            if not retry:
                break
            first = results[retry[0]]
            self.log.warning("policy.retry", n=len(retry), attempt=attempt + 1, error=first.error if first else None)
            await anyio.sleep(self.retry_backoff_s * 2**attempt)
            todo = retry
        dt = time.perf_counter() - t0
        effects: list[Effects | None | BaseException] = []
        failed = 0
        sticky = 0
        for d, r in zip(ds, results, strict=True):
            m = d.msg
            assert isinstance(m, PolicyRequest) and r is not None
            sticky += d.stream == self.own_stream
            if r.error is None:
                reply = PolicyReply(
                    episode_id=m.episode_id,
                    seq=m.seq,
                    text=r.text,
                    prompt_ids=list(r.prompt_ids),
                    token_ids=list(r.token_ids),
                    logprobs=[float(x) for x in r.logprobs],
                    version=r.version,
                    finish_reason=r.finish_reason,
                    worker=self.name,
                )
            else:
                failed += 1
                self.log.warning(
                    "policy.request_failed",
                    episode_id=m.episode_id,
                    seq=m.seq,
                    error=r.error,
                    transient=r.error_transient,
                )
                reply = PolicyReply(
                    episode_id=m.episode_id,
                    seq=m.seq,
                    text="",
                    worker=self.name,
                    version=r.version,
                    error=ErrorRecord.of(PolicyError(r.error, transient=r.error_transient)),
                )
            effects.append(Effects().send(self.bus.keys.stream("env"), reply))
        self.stats["sticky"] += sticky
        self.stats["failed_requests"] += failed
        n_tokens = sum(len(r.token_ids) for r in results if r is not None)
        (self.log.debug if self.streaming else self.log.info)(
            "policy.batch",
            n=len(ds),
            sticky=sticky,
            tokens=n_tokens,
            seconds=round(dt, 3),
            version=self.version,
            failed=failed,
        )
        return effects

    # -- weights --------------------------------------------------------------------------------
    async def maybe_reload(self) -> None:
        """Load the newest announced weights, if newer than ours (between batches).

        A load that fails keeps the current weights and is retried after ``weights_retry_s``
        (or when a newer version is announced). In streaming mode every request checks first
        (the learner announces a version before it dispatches the episodes meant for it): the
        checks run side by side, and one at a time loads what is new."""
        row = await self.bus.weights.latest()
        if row and self._is_new(row[0]):
            async with self._reload_lock:
                row = await self.bus.weights.latest()
                if row and self._is_new(row[0]):
                    await self._reload(row)

    def _is_new(self, eid: Any) -> bool:
        eid_s = eid.decode() if isinstance(eid, bytes) else str(eid)
        return eid_s != self._weights_cursor and not (
            0 < self._weights_retry_at and time.monotonic() < self._weights_retry_at
        )

    async def _reload(self, row: tuple[Any, dict[bytes, Any]]) -> None:
        eid, fields = row
        eid_s = eid.decode() if isinstance(eid, bytes) else str(eid)
        try:
            msg = decode(fields[PAYLOAD])
        except (MessageError, KeyError) as exc:
            self._weights_cursor = eid_s
            self.log.error("policy.bad_weights_announcement", entry=eid_s, error=repr(exc))
            return
        if not isinstance(msg, WeightsAnnouncement) or msg.version <= self.version:
            self._weights_cursor = eid_s
            return
        if not getattr(self.backend, "trainable", True):
            self._weights_cursor = eid_s
            self.log.info("policy.weights_ignored", version=msg.version, reason="backend is not trainable")
            return
        self._weights_retry_at = 0.0
        receive = getattr(self.backend, "receive_weights", None)
        rnd = _sync_round(fields) if receive is not None else {}  # an in-memory round (learner.weight_sync)
        try:
            if self.name in rnd.get("ranks", {}):
                seconds = await receive(rnd, rnd["ranks"][self.name], msg.path, msg.version)
            else:
                seconds = await self.backend.load_weights(msg.path, msg.version)
        except Exception as exc:
            self._weights_retry_at = time.monotonic() + self.weights_retry_s
            self.swaps.append({"version": msg.version, "seconds": None, "error": str(exc)})
            self.log.error(
                "policy.weights_failed",
                version=msg.version,
                path=msg.path,
                error=str(exc),
                retry_in_s=self.weights_retry_s,
                serving=self.version,
            )
            return
        self._weights_cursor = eid_s
        self.swaps.append({"version": msg.version, "seconds": seconds, "error": None})
        self.log.info("policy.weights_loaded", version=msg.version, path=msg.path, swap_s=round(seconds, 3))

    # -- reading two streams, adopting dead replicas' streams -----------------------------------
    def input_streams(self) -> list[str]:
        return [self.own_stream, self.stream]  # the own stream first: sticky episodes

    async def extra_reclaim(self) -> list[Delivery]:
        return await self.adopt_orphans()

    async def adopt_orphans(self) -> list[Delivery]:
        """Entries in the own streams of replicas whose heartbeat expired: the never-delivered
        ones, and pending ones idle past ``min_idle``. Prunes long-dead, drained streams."""
        routes = self.bus.routes
        await routes.register(self.name)  # again: a peer may have pruned us while we were stopped
        others = [n for n in await routes.replicas() if n != self.name]
        if not others:
            return []
        alive = await routes.alive(others, self.role)
        out: list[Delivery] = []
        now = time.monotonic()
        for name, is_alive in zip(others, alive, strict=True):
            if is_alive:
                self._dead_since.pop(name, None)
                continue
            dead_since = self._dead_since.setdefault(name, now)
            stream = self.bus.keys.replica_stream(name)
            if not await routes.own_stream_exists(name):
                await routes.unregister(name)
                continue
            got = await self.bus.reclaim(stream, self.group, self.name)
            got += await self.bus.read_many([stream], self.group, self.name, block=False)
            if got:
                self.log.info("policy.adopted", replica=name, n=len(got))
                out += got
            elif now - dead_since > self.orphan_prune_s:
                await self._prune(name, stream)
        return out

    async def _prune(self, name: str, stream: str) -> None:
        await self.bus.trim(stream, approximate=False)
        pending = sum(int(g.get("pending") or 0) for g in await self.bus.group_info(stream))
        if pending == 0 and await self.bus.routes.own_stream_length(name) == 0:
            await self.bus.routes.drop(name)
            self._dead_since.pop(name, None)
            self.log.info("policy.pruned_replica", replica=name)
