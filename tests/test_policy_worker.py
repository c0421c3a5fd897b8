"""The policy worker over a real bus: per-request error isolation, transient retries, sticky
episodes (own streams, fallback, adopting a dead replica's stream), weight reloads, and
token-in/token-out dialogues with env + policy (hf, tiny model) + user workers."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

pytest.importorskip("torch")

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from userrl.agents.base import GenRequest, GenResult, Sampling  # noqa: E402
from userrl.agents.hf_backend import HFBackend  # noqa: E402
from userrl.agents.tiny import build_tiny_model  # noqa: E402
from userrl.agents.worker import (  # noqa: E402
    PolicyWorker,
    generate_isolated,
)
from userrl.bus.messages import (  # noqa: E402
    ErrorRecord,
    PolicyReply,
    PolicyRequest,
    WeightsAnnouncement,
    decode,
)
from userrl.bus.transport import Bus  # noqa: E402
from userrl.bus.worker import Worker, WorkerSettings  # noqa: E402
from userrl.envs.datasets import load_tasks  # noqa: E402
from userrl.envs.worker import EnvWorker  # noqa: E402
from userrl.errors import PolicyError  # noqa: E402
from userrl.learner.sequences import assemble  # noqa: E402
from userrl.rollouts import make_resets, send_resets, wait_trajectories  # noqa: E402
from userrl.sim_users.worker import UserWorker  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

MESSAGES = [
    {"role": "system", "content": "Guess the entity."},
    {"role": "user", "content": "Ask me a yes/no question."},
]
GREEDY = {"temperature": 0.0, "max_new_tokens": 8}


def settings(name: str, **kw: Any) -> WorkerSettings:
    base: dict[str, Any] = dict(name=name, heartbeat_interval_s=0.1, heartbeat_ttl_s=0.6, reclaim_interval_s=0.3)
    return WorkerSettings(**{**base, **kw})


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny"), seed=2)


def request(ep: str, seq: int = 0, **kw: Any) -> PolicyRequest:
    fields: dict[str, Any] = dict(env_id="userrl/Telepathy-v0", messages=MESSAGES, sampling=GREEDY)
    fields.update(kw)
    return PolicyRequest(episode_id=ep, seq=seq, **fields)


async def replies(bus: Bus) -> list[PolicyReply]:
    rows = await bus.redis.xrange(bus.keys.stream("env"))
    return [m for _, f in rows if isinstance(m := decode(f[b"p"]), PolicyReply)]


async def wait_replies(bus: Bus, n: int, timeout: float = 30) -> list[PolicyReply]:
    with anyio.fail_after(timeout):
        while len(got := await replies(bus)) < n:
            await anyio.sleep(0.02)
    return got


@asynccontextmanager
async def running(*workers: Worker) -> AsyncIterator[None]:
    async with anyio.create_task_group() as tg:
        for w in workers:
            tg.start_soon(w.async_run)
        try:
            yield
        finally:
            for w in workers:
                w.stop()


async def wait_heartbeat(bus: Bus, name: str) -> dict[str, Any]:
    with anyio.fail_after(10):
        while (raw := await bus.redis.get(bus.keys.heartbeat("policy", name))) is None:
            await anyio.sleep(0.02)
    return json.loads(raw)


def teacher_forced(model: Any, prompt: list[int], generated: list[int], temperature: float = 1.0) -> torch.Tensor:
    ids = torch.tensor([prompt + generated])
    with torch.no_grad():
        logits = model(ids).logits[0].float()
    p = len(prompt)
    lp = torch.log_softmax(logits[p - 1 : p - 1 + len(generated)] / temperature, dim=-1)
    return lp.gather(-1, torch.tensor(generated)[:, None]).squeeze(-1)


class EchoBackend:
    """Instant fake backend: replies 'ok <episode>'; ``fail`` maps episode -> errors to raise."""

    trainable = False

    def __init__(self, fail: dict[str, list[PolicyError]] | None = None) -> None:
        self.version = 0
        self.fail = fail or {}
        self.calls: list[list[str]] = []

    async def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        self.calls.append([r.episode_id for r in requests])
        for r in requests:
            if self.fail.get(r.episode_id):
                raise self.fail[r.episode_id].pop(0)
        return [GenResult(text=f"ok {r.episode_id}") for r in requests]

    async def load_weights(self, path: str, version: int) -> float:
        return 0.0


# ---- error isolation ---------------------------------------------------------------------------


async def test_generate_isolated_splits_a_batch_without_generate_each() -> None:
    backend = EchoBackend({"e3": [PolicyError("bad prefix in e3")] * 10})
    reqs = [GenRequest(episode_id=f"e{i}", env_id="x", messages=MESSAGES) for i in range(6)]
    out = await generate_isolated(backend, reqs)  # type: ignore[arg-type]
    assert [r.text for i, r in enumerate(out) if i != 3] == [f"ok e{i}" for i in range(6) if i != 3]
    assert out[3].error == "bad prefix in e3" and not out[3].error_transient and out[3].token_ids == []
    transient = EchoBackend({"e1": [PolicyError("timeout", transient=True)]})
    out = await generate_isolated(transient, reqs)  # type: ignore[arg-type]
    assert all(r.error == "timeout" and r.error_transient for r in out)  # the whole call is retried


async def test_bad_requests_fail_alone(bus: Bus, model_dir: Path) -> None:
    backend = HFBackend(model_dir, seed=0)
    good = [request(f"good{i}", messages=[MESSAGES[0], {"role": "user", "content": "Hi " * (i + 1)}]) for i in range(3)]
    first = (await backend.generate([GenRequest(episode_id="m", env_id="x", messages=MESSAGES)]))[0]
    turn2 = MESSAGES + [{"role": "assistant", "content": first.text}, {"role": "tool", "content": "No."}]
    mismatch = request(
        "mismatch", seq=1, messages=turn2, prompt_ids=(first.prompt_ids + first.token_ids)[:-2], n_seen=3
    )
    overflow = request("overflow", sampling={"temperature": 0.0, "max_new_tokens": 9000})
    bad_sampling = request("sampling", sampling={"temperature": -1.0})
    for r in [good[0], mismatch, good[1], overflow, bad_sampling, good[2]]:
        await bus.send(bus.keys.stream("policy"), r)
    w = PolicyWorker(bus, settings("pol-0", burst=True), backend=backend)  # type: ignore[arg-type]
    with anyio.fail_after(60):
        await w.async_run()
    got = {r.episode_id: r for r in await replies(bus)}
    assert len(got) == 6
    for r in good:
        reply = got[r.episode_id]
        assert reply.error is None and reply.token_ids and reply.worker == "pol-0"
        solo = (
            await backend.generate(
                [GenRequest(episode_id="s", env_id="x", messages=r.messages, sampling=Sampling(**GREEDY))]
            )
        )[0]
        assert reply.token_ids == solo.token_ids  # generated in the same batch as the bad ones
    errors = {e: got[e].error for e in ("mismatch", "overflow", "sampling")}
    assert all(err is not None for err in errors.values())
    assert "mismatch" in errors["mismatch"].message and "do not match" in errors["mismatch"].message  # type: ignore[union-attr]
    assert "exceed the model's context" in errors["overflow"].message  # type: ignore[union-attr]
    assert "bad sampling" in errors["sampling"].message  # type: ignore[union-attr]
    assert all(
        err.kind == "policy" and not err.retryable and not got[e].token_ids  # type: ignore[union-attr]
        for e, err in errors.items()
    )
    assert w.stats["committed"] == 6 and w.stats["errors"] == 0


class EachEchoBackend(EchoBackend):
    """EchoBackend that fails single requests (``generate_each``)."""

    async def generate_each(self, requests: list[GenRequest]) -> list[GenResult]:
        self.calls.append([r.episode_id for r in requests])
        out = []
        for r in requests:
            errors = self.fail.get(r.episode_id)
            out.append(GenResult.failed(errors.pop(0)) if errors else GenResult(text=f"ok {r.episode_id}"))
        return out


async def test_transient_failures_are_retried_per_request(bus: Bus) -> None:
    backend = EachEchoBackend(
        {
            "flaky": [PolicyError("server timeout", transient=True)],
            "down": [PolicyError("server down", transient=True)] * 10,
        }
    )
    for ep in ("a", "flaky", "down", "b"):
        await bus.send(bus.keys.stream("policy"), request(ep))
    w = PolicyWorker(
        bus,
        settings("pol-0", burst=True),
        backend=backend,
        retries=2,  # type: ignore[arg-type]
        retry_backoff_s=0.01,
    )
    with anyio.fail_after(30):
        await w.async_run()
    got = {r.episode_id: r for r in await replies(bus)}
    assert got["flaky"].text == "ok flaky" and got["a"].text == "ok a" and got["b"].text == "ok b"
    assert got["down"].error == ErrorRecord(kind="policy", message="server down", retryable=True)
    assert backend.calls == [["a", "flaky", "down", "b"], ["flaky", "down"], ["down"]]


# ---- sticky episodes ---------------------------------------------------------------------------


async def test_policy_stream_for_routes_to_live_replicas_only(bus: Bus) -> None:
    shared = bus.keys.stream("policy")
    assert await bus.routes.stream_for("") == shared
    assert await bus.routes.stream_for("pol-x") == shared  # no heartbeat: any replica
    await bus.redis.set(bus.keys.heartbeat("policy", "pol-x"), "{}", px=5000)
    assert await bus.routes.stream_for("pol-x") == bus.keys.replica_stream("pol-x") == shared + ":pol-x"


async def test_sticky_requests_go_to_their_replica(bus: Bus) -> None:
    a = PolicyWorker(bus, settings("pol-a"), backend=EchoBackend())  # type: ignore[arg-type]
    b = PolicyWorker(bus, settings("pol-b"), backend=EchoBackend())  # type: ignore[arg-type]
    async with running(a, b):
        await wait_heartbeat(bus, "pol-a")
        hb = await wait_heartbeat(bus, "pol-b")
        assert hb["stream"] == bus.keys.replica_stream("pol-b")
        for i in range(20):
            await bus.send(await bus.routes.stream_for("pol-a" if i % 2 else "pol-b"), request(f"e{i}"))
        for i in range(20, 30):
            await bus.send(await bus.routes.stream_for(""), request(f"e{i}"))
        got = {r.episode_id: r.worker for r in await wait_replies(bus, 30)}
    for i in range(20):
        assert got[f"e{i}"] == ("pol-a" if i % 2 else "pol-b")
    assert {got[f"e{i}"] for i in range(20, 30)} <= {"pol-a", "pol-b"}
    assert await bus.redis.smembers(bus.keys.policy_replicas) == {b"pol-a", b"pol-b"}
    assert await bus.routes.stream_for("pol-a") == bus.keys.stream("policy")  # stopped: any replica


async def test_dead_replicas_stream_is_adopted_and_pruned(bus: Bus) -> None:
    ghost = bus.keys.replica_stream("ghost")
    await bus.ensure_group(ghost, "policy")
    await bus.redis.sadd(bus.keys.policy_replicas, "ghost")
    for i in range(3):
        await bus.send(ghost, request(f"g{i}"))
    taken = await bus.read(ghost, "policy", "ghost", count=1)  # ghost died holding g0
    assert [d.msg.episode_id for d in taken if d.msg] == ["g0"]
    a = PolicyWorker(bus, settings("pol-a"), backend=EchoBackend(), orphan_prune_s=0.5)  # type: ignore[arg-type]
    async with running(a):
        got = await wait_replies(bus, 3)
        assert sorted(r.episode_id for r in got) == ["g0", "g1", "g2"]
        assert {r.worker for r in got} == {"pol-a"}
        with anyio.fail_after(10):
            while await bus.redis.sismember(bus.keys.policy_replicas, "ghost"):
                await anyio.sleep(0.05)
    assert not await bus.redis.exists(ghost)
    assert len(await replies(bus)) == 3  # nothing doubled


# ---- weights -----------------------------------------------------------------------------------


async def test_weight_reload_between_batches(bus: Bus, model_dir: Path, tmp_path: Path) -> None:
    backend = HFBackend(model_dir, seed=0)
    w = PolicyWorker(bus, settings("pol-0"), backend=backend)  # type: ignore[arg-type]
    sampling = {"temperature": 1.0, "max_new_tokens": 6, "seed": 7}
    async with running(w):
        await bus.send(bus.keys.stream("policy"), request("e0", sampling=sampling))
        (before,) = await wait_replies(bus, 1)
        gen = torch.Generator().manual_seed(0)
        state = {
            k: v + 0.05 * torch.randn(v.shape, generator=gen)
            for k, v in backend.model.state_dict().items()
            if k != "lm_head.weight"
        }
        save_file(state, str(tmp_path / "v1.safetensors"))
        await bus.send(
            bus.keys.weights,
            WeightsAnnouncement(episode_id="weights", seq=1, version=1, path=str(tmp_path / "v1.safetensors")),
        )
        await bus.send(bus.keys.stream("policy"), request("e0", seq=1, sampling=sampling))
        after = (await wait_replies(bus, 2))[1]
        with anyio.fail_after(5):
            while (hb := await wait_heartbeat(bus, "pol-0"))["policy_version"] != 1:
                await anyio.sleep(0.05)
    assert (before.version, after.version) == (0, 1)
    assert after.prompt_ids == before.prompt_ids
    assert after.logprobs != pytest.approx(before.logprobs, abs=1e-3)
    model = backend.model
    assert torch.allclose(
        torch.tensor(after.logprobs), teacher_forced(model, after.prompt_ids, after.token_ids), atol=1e-4
    )
    assert hb["swaps"] == 1 and hb["swap_s"] is not None and hb["swap_s"] >= 0 and hb["swap_error"] is None
    assert w.swaps == [{"version": 1, "seconds": hb["swap_s"], "error": None}]


async def test_failed_weight_load_keeps_serving(bus: Bus) -> None:
    class Broken(EchoBackend):
        trainable = True

        async def load_weights(self, path: str, version: int) -> float:
            raise PolicyError(f"no safetensors weights at {path}")

    w = PolicyWorker(bus, settings("pol-0", burst=True), backend=Broken(), weights_retry_s=60)  # type: ignore[arg-type]
    await bus.send(bus.keys.weights, WeightsAnnouncement(episode_id="weights", seq=3, version=3, path="/nope"))
    await bus.send(bus.keys.stream("policy"), request("e0"))
    with anyio.fail_after(10):
        await w.async_run()
    (r,) = await replies(bus)
    assert r.text == "ok e0" and r.version == 0
    assert w.swaps[-1]["error"] and "no safetensors" in w.swaps[-1]["error"]


# ---- token-in/token-out end to end -------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("env_id", ["userrl/Telepathy-v0", "userrl/Intention-v0"])
async def test_dialogues_are_token_in_token_out(bus: Bus, model_dir: Path, env_id: str) -> None:
    resets = make_resets(
        env_id,
        load_tasks(env_id, "test")[:3],
        group_size=2,
        seed=1,
        max_turns=3,
        sampling={"temperature": 1.0, "max_new_tokens": 8},
    )
    policies = [
        PolicyWorker(bus, settings(f"pol-{i}"), backend=HFBackend(model_dir, seed=i))  # type: ignore[arg-type]
        for i in range(2)
    ]
    workers: list[Worker] = [EnvWorker(bus, settings("env-0")), UserWorker(bus, settings("usr-0")), *policies]
    async with running(*workers):
        await send_resets(bus, resets)
        got = await wait_trajectories(bus, [r.episode_id for r in resets], timeout=90)
    model = policies[0].backend.model  # type: ignore[attr-defined]
    assert sum(p.stats["handled"] for p in policies) == 3 * len(resets)
    assert sum(p.stats["sticky"] for p in policies) == 2 * len(resets)  # turns 2 and 3: own streams
    for r in resets:
        (traj,) = got[r.episode_id]
        assert traj.status == "ok", traj.error
        turns = traj.turns
        assert len(turns) == 3 and [t["seq"] for t in turns] == [0, 1, 2]
        assert len({t["worker"] for t in turns}) == 1, "an episode's turns moved between live replicas"
        for prev, cur in zip(turns, turns[1:], strict=False):
            ctx = prev["prompt_ids"] + prev["token_ids"]
            assert cur["prompt_ids"][: len(ctx)] == ctx
        seq = assemble(turns)
        assert sum(seq.loss_mask) == sum(len(t["token_ids"]) for t in turns)
        for t in turns:
            expected = teacher_forced(model, t["prompt_ids"], t["token_ids"])
            assert torch.allclose(torch.tensor(t["logprobs"]), expected, atol=1e-4)
            assert t["policy_version"] == 0


# ---- vllm without vllm -------------------------------------------------------------------------


def test_vllm_backend_says_what_is_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    from userrl.agents.vllm_backend import VLLMBackend

    with pytest.raises(PolicyError, match=r"vllm is not installed.*pip install 'userrl\[gpu\]'"):
        VLLMBackend(tmp_path)


def test_make_policy_backend_vllm_without_vllm(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from userrl.agents.worker import make_policy_backend
    from userrl.config import load_config

    monkeypatch.setitem(sys.modules, "vllm", None)
    cfg = load_config(None, [f"run_dir={tmp_path}", "policy.backend=vllm", f"policy.model={tmp_path}"])
    with pytest.raises(PolicyError, match="vllm is not installed"):
        make_policy_backend(cfg)
