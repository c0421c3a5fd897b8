"""Issue 22: who answered each user turn, the user model's bad output as typed errors, and the
simulator-health numbers, in process against a real Redis.

The workers run in this process (env, scripted policy, user, reward); the user backends are
model-like (``tests/sim_backends.py``: the real prompt/parse/re-ask path of the LLM users, with
scripted text instead of a model server).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from starlette.testclient import TestClient

from tests.openai_server import FakeOpenAIServer
from tests.sim_backends import ScriptedAsLLM
from tests.test_user_worker import ScriptedLLM
from userrl.agents.scripted import ScriptedExpertBackend
from userrl.agents.worker import PolicyWorker
from userrl.bus.client import make_client
from userrl.bus.keys import Keys
from userrl.bus.messages import ScoredGroup, Trajectory, decode
from userrl.bus.transport import Bus
from userrl.bus.worker import Worker, WorkerSettings
from userrl.config import load_config
from userrl.deploy.episodes import format_dialogue, read_episode
from userrl.envs.datasets import load_tasks
from userrl.envs.users import ScriptedBackend
from userrl.envs.worker import EnvWorker
from userrl.errors import ConfigError, UserEmptyError, UserMalformedError
from userrl.learner.evaluation.over_bus import format_report, summarize
from userrl.learner.reward.worker import RewardWorker
from userrl.learner.sim_health import end_reason, simulator_metrics
from userrl.rollouts import make_resets, send_resets, wait_trajectories
from userrl.sim_users.base import UserQuery
from userrl.sim_users.llm_user import ask_llm_user, default_spec_lookup
from userrl.sim_users.simulators import (
    Simulators,
    clear_target,
    parse_simulator,
    targets_of,
    wait_applied,
    with_user,
    write_target,
)
from userrl.sim_users.stamp import human_stamp, model_fingerprint, recording, simulator_stamp
from userrl.sim_users.worker import UserWorker
from userrl.ui import UISettings, create_app

CI = Path(__file__).resolve().parents[1] / "deploy" / "ci.yaml"
FAST = dict(reclaim_interval_s=0.2, heartbeat_interval_s=0.1, heartbeat_ttl_s=1.0)
STAMP = "openai:fake-user@v1"

# ---- pure parts -----------------------------------------------------------------------------------


def test_stamps_say_who_answered() -> None:
    assert simulator_stamp("scripted", "x", "y") == "scripted"
    assert simulator_stamp("openai", "Qwen/Qwen3-32B") == "openai:Qwen/Qwen3-32B"
    assert simulator_stamp("hf", "user", "step3") == "hf:user@step3"
    assert human_stamp("alice.b-1") == "human:alice.b-1"
    for bad in ("", "two words", "<b>", "x" * 41):
        with pytest.raises(ValueError, match="1-40 characters"):
            human_stamp(bad)


def test_fingerprint_changes_when_the_weights_do(tmp_path: Path) -> None:
    assert model_fingerprint(tmp_path / "missing") == ""
    (tmp_path / "config.json").write_text('{"a": 1}')
    w = tmp_path / "model.safetensors"
    w.write_bytes(b"1" * 10)
    first = model_fingerprint(tmp_path)
    assert len(first) == 10 and model_fingerprint(tmp_path) == first
    w.write_bytes(b"2" * 11)  # retrained weights saved into the same folder
    assert model_fingerprint(tmp_path) != first


def test_simulator_specs() -> None:
    assert parse_simulator("scripted") == ("scripted", {"backend": "scripted"})
    assert parse_simulator("llm=hf:/m/user,model_version=step3") == (
        "llm",
        {"backend": "hf", "model": "/m/user", "model_version": "step3"},
    )
    assert parse_simulator("openai:Qwen/Qwen3-32B@http://h:8000/v1")[1] == {
        "backend": "openai",
        "model": "Qwen/Qwen3-32B",
        "base_url": "http://h:8000/v1",
    }
    assert parse_simulator("backend=openai,model=m,base_url=http://x/v1,temperature=0.5")[1]["temperature"] == 0.5
    for bad, why in (
        ("", "empty"),
        ("openai:m", "openai:MODEL@http"),
        ("hf", "not key=value"),
        ("model=m", "which backend"),
        ("backend=hf,colour=red", "not key=value"),
    ):
        with pytest.raises(ConfigError, match=why):
            parse_simulator(bad)
    with pytest.raises(ConfigError, match="distinct labels"):
        targets_of(["scripted", "scripted"])
    cfg = load_config(CI)
    with pytest.raises(ConfigError, match="user.model"):
        with_user(cfg, {"backend": "hf"})
    with pytest.raises(ConfigError, match="user.temperature"):
        with_user(cfg, {"backend": "scripted", "temperature": -1})
    assert with_user(cfg, {"backend": "hf", "model": "/m"}).user.model == "/m"


def tele_query() -> UserQuery:
    task = load_tasks("userrl/Telepathy-v0", "test")[0]
    return UserQuery("userrl/Telepathy-v0", "judge", "judge_guess", {"guess": "a cat"}, task)


@pytest.mark.anyio
async def test_bad_model_output_is_retried_then_typed() -> None:
    q = tele_query()
    texts: list[str] = []

    async def gen(messages: list[dict[str, str]]) -> str:
        return texts.pop(0)

    texts[:] = ["", "  ", "\n"]
    with recording() as rec, pytest.raises(UserEmptyError, match="empty reply after 3 attempts") as e:
        await ask_llm_user(q, default_spec_lookup, gen)
    assert e.value.kind == "user_empty" and not e.value.transient
    assert (rec.attempts, rec.empty, rec.malformed) == (3, 3, 0)

    texts[:] = ["yes", '{"correct": "maybe"}', "{}"]  # never the verdict's JSON
    with recording() as rec, pytest.raises(UserMalformedError, match="malformed reply after 3 attempts") as e:
        await ask_llm_user(q, default_spec_lookup, gen)
    assert e.value.kind == "user_malformed" and (rec.attempts, rec.malformed) == (3, 3)

    texts[:] = ["", '{"correct": false}']  # an empty reply, then a good one: retried, not failed
    with recording() as rec:
        assert await ask_llm_user(q, default_spec_lookup, gen) == {"correct": False}
    assert (rec.attempts, rec.empty, rec.malformed, rec.leaks) == (2, 1, 0, 0)


def test_simulator_metrics_by_hand() -> None:
    call = {"by": STAMP, "ms": 10.0, "attempts": 2, "malformed": 1, "empty": 0, "leaks": 1}
    groups = [
        {
            "items": [
                {"meta": {"end": "terminated"}, "turns": [{"users": [call, {**call, "ms": 30.0, "leaks": 0}]}]},
                {"meta": {"end": "truncated"}, "turns": [{"users": []}, {"users": [{**call, "by": "scripted"}]}]},
                {"meta": {"end": "terminated", "hangup": "early"}, "turns": [{"users": [call]}]},
            ]
        }
    ]
    dropped = [
        {"status": "failed", "error": {"kind": "user_malformed"}, "meta": {"end": "failed"}, "users": []},
        {"status": "ok", "meta": {"end": "terminated", "hangup": "done"}, "users": [call]},
    ]
    m = simulator_metrics(groups, dropped)
    assert m["sim/episodes"] == 5
    assert {k: v for k, v in m.items() if k.startswith("sim/ended/")} == {
        "sim/ended/failed_user_malformed": 1,
        "sim/ended/hangup": 1,
        "sim/ended/hangup_early": 1,
        "sim/ended/terminated": 1,
        "sim/ended/truncated": 1,
    }
    assert m["sim/early_hangups"] == 1 and m["sim/early_hangup_rate"] == pytest.approx(0.2)
    assert m["sim/user_calls"] == 5 and m["sim/format_error_rate"] == pytest.approx(5 / 10)
    assert m["sim/leak_hits"] == 4 and m["sim/leak_rate"] == pytest.approx(0.4)
    assert m["sim/user_latency_ms"] == pytest.approx(14.0) and m["sim/user_latency_ms_p95"] == 30.0
    assert m["sim/by/" + STAMP] == 4 and m["sim/by/scripted"] == 1
    assert m["sim/user"] == f"{STAMP} (4), scripted (1)"
    assert simulator_metrics([]) == {
        "sim/episodes": 0,
        "sim/early_hangups": 0,
        "sim/early_hangup_rate": 0.0,
        "sim/user_calls": 0,
    }
    assert end_reason("failed", {}, None) == "failed_unknown"


# ---- end to end over the bus ------------------------------------------------------------------------


def workers(bus: Bus, user: UserWorker) -> list[Worker]:
    s = lambda n: WorkerSettings(name=n, **FAST)  # noqa: E731
    return [
        EnvWorker(bus, s("env-0"), send_task_to_policy=True),
        PolicyWorker(bus, s("policy-0"), backend=ScriptedExpertBackend()),
        user,
        RewardWorker(bus, s("reward-0"), group_timeout_s=60),
    ]


def llm_user(bus: Bus, backend: Any, stamp: str = STAMP, **kw: Any) -> UserWorker:
    sims = Simulators(backend, stamps={id(backend): stamp})
    return UserWorker(bus, WorkerSettings(name="user-0", **FAST), simulators=sims, **kw)


async def play(bus: Bus, ws: list[Worker], resets: list, timeout: float = 60) -> dict[str, Trajectory]:
    """Play ``resets`` to their end; returns once the reward worker scored (or dropped) every group."""
    async with anyio.create_task_group() as tg:
        for w in ws:
            tg.start_soon(w.async_run)
        await send_resets(bus, resets)
        got = await wait_trajectories(bus, [r.episode_id for r in resets], timeout=timeout)
        await scored_groups(bus, len({r.group_id for r in resets}))
        for w in ws:
            w.stop()
    return {k: v[0] for k, v in got.items()}


async def scored_groups(bus: Bus, n: int) -> list[ScoredGroup]:
    """The ``n`` groups the reward worker sent the learner (it scores a group after the waiter
    saw its last trajectory, so they may take a moment)."""
    with anyio.fail_after(30):
        while await bus.redis.xlen(bus.keys.stream("learner")) < n:
            await anyio.sleep(0.05)
    out = []
    for _, f in await bus.redis.xrange(bus.keys.stream("learner")):
        msg = decode(f[b"p"])
        assert isinstance(msg, ScoredGroup)
        out.append(msg)
    assert len(out) == n
    return out


@pytest.mark.integration
@pytest.mark.anyio
async def test_every_user_turn_carries_its_stamp(bus: Bus) -> None:
    backend = ScriptedAsLLM(bad_first=1)  # each call: one malformed reply, then a good one
    resets = make_resets("userrl/Telepathy-v0", load_tasks("userrl/Telepathy-v0", "test")[:2], group_size=2, seed=1)
    resets += make_resets("userrl/Function-v0", load_tasks("userrl/Function-v0", "test")[:1], group_size=2, seed=1)
    trajs = await play(bus, workers(bus, llm_user(bus, backend)), resets)

    for r in resets:
        t = trajs[r.episode_id]
        assert t.status == "ok", t.error
        calls = [u for turn in t.turns for u in turn["users"]]
        if r.env_id == "userrl/Function-v0":  # no simulated user in that gym
            assert calls == []
            continue
        assert calls, "every Telepathy turn asks the user or the judge"
        for u in calls:
            assert u["by"] == STAMP and u["kind"] in ("respond", "judge") and u["hop"] >= 1
            assert (u["attempts"], u["malformed"], u["empty"], u["leaks"]) == (2, 1, 0, 0)
            assert u["ms"] >= 0 and u["redacted"] is False
        # the readable log names who answered each turn, and `episodes show` says so
        entries = await read_episode(bus, r.episode_id)
        env = [e for e in entries if e["role"] == "env"]
        assert env and all(e["by"] == STAMP for e in env)
        assert f"user: {STAMP}" in format_dialogue(r.episode_id, entries)

    # what the learner sees: the stamps on the scored groups' turns, and the health numbers
    groups = await scored_groups(bus, 3)
    assert {g.env_id for g in groups} == {"userrl/Telepathy-v0", "userrl/Function-v0"}
    m = simulator_metrics([{"items": g.items} for g in groups])
    n_calls = sum(len(turn["users"]) for t in trajs.values() for turn in t.turns)
    assert m["sim/user_calls"] == n_calls == m["sim/by/" + STAMP] == backend.calls
    assert m["sim/format_error_rate"] == pytest.approx(0.5) and m["sim/leak_hits"] == 0
    assert m["sim/episodes"] == 6 and m["sim/ended/terminated"] == 6
    assert m["sim/user"] == f"{STAMP} ({n_calls})"


@pytest.mark.integration
@pytest.mark.anyio
@pytest.mark.parametrize(("always", "kind"), [("I am not sure what you mean.", "user_malformed"), ("", "user_empty")])
async def test_bad_user_output_fails_the_episode_with_its_kind(
    bus: Bus, redis_url: str, run_name: str, always: str, kind: str
) -> None:
    """Never a silent zero reward, never a stuck episode: the episode fails with the typed
    error, which the trajectory, the log's end entry, `episodes show`, the web view, the eval
    report and the health metrics all carry."""
    resets = make_resets("userrl/Telepathy-v0", load_tasks("userrl/Telepathy-v0", "test")[:1], group_size=2, seed=4)
    trajs = await play(bus, workers(bus, llm_user(bus, ScriptedAsLLM(always=always))), resets)
    for r in resets:
        t = trajs[r.episode_id]
        assert t.status == "failed" and t.error is not None and t.error.kind == kind
        assert STAMP in t.error.message and "after 3 attempts" in t.error.message
        assert t.turns == []  # the failed turn is not training data
        entries = await read_episode(bus, r.episode_id)
        end = entries[-1]
        assert end["role"] == "end" and end["error"] == kind and end["text"].startswith(f"failed: {kind}: ")
        assert f"error: {kind}" in format_dialogue(r.episode_id, entries)

    (group,) = await scored_groups(bus, 1)  # the group is dropped, its members' reasons kept
    assert group.status == "dropped"
    m = simulator_metrics([], group.items)
    assert m[f"sim/ended/failed_{kind}"] == 2 and m["sim/episodes"] == 2

    report = summarize(
        {e: [t] for e, t in trajs.items()}, {"userrl/Telepathy-v0": load_tasks("userrl/Telepathy-v0", "test")[:1]}, 1
    )
    g = report["gyms"]["userrl/Telepathy-v0"]
    assert g["failed"] == 2 and g["pass@1"] == 0.0 and all(kind in reason for reason in g["failures"])
    assert f"failed Telepathy-v0 x2: {kind}: " in format_report(report, 1)

    app = create_app(UISettings(), lambda: Bus(make_client(redis_url), Keys(run_name)))  # the web view's JSON
    with TestClient(app, base_url="http://127.0.0.1") as c:
        got = c.get("/api/episode", params={"id": resets[0].episode_id}).json()
    assert got["entries"][-1]["error"] == kind


@pytest.mark.integration
@pytest.mark.anyio
async def test_a_user_who_hangs_up_early_is_counted(bus: Bus) -> None:
    tasks = load_tasks("userrl/Tau-v0", "test")[:1]
    resets = make_resets("userrl/Tau-v0", tasks, group_size=2, seed=2)
    trajs = await play(bus, workers(bus, llm_user(bus, ScriptedAsLLM(hang_up=True))), resets)
    for t in trajs.values():
        assert t.status == "ok" and t.meta["end"] == "terminated" and t.meta["hangup"] == "early"
        assert t.turns[-1]["users"][-1]["hangup"] is True
    (group,) = await scored_groups(bus, 1)
    m = simulator_metrics([{"items": group.items}])
    assert m["sim/ended/hangup_early"] == 2 and m["sim/early_hangups"] == 2 and m["sim/early_hangup_rate"] == 1.0


@pytest.mark.integration
@pytest.mark.anyio
async def test_swap_the_user_role_mid_run(bus: Bus, run_name: str, tmp_path: Path) -> None:
    """The running user worker follows the run's target: new requests go to the new simulator
    without a restart, and the turns say which one answered; `--reset` goes back."""
    cfg = load_config(CI, [f"run={run_name}", f"run_dir={tmp_path}"])
    user = UserWorker.from_config(bus, WorkerSettings(name="user-0", **FAST), cfg)
    assert isinstance(user.backend, ScriptedBackend)
    tasks = load_tasks("userrl/Telepathy-v0", "test")[:2]
    ws = workers(bus, user)

    async def batch(prefix: str) -> list[Trajectory]:
        resets = make_resets("userrl/Telepathy-v0", tasks, seed=5, prefix=prefix)
        await send_resets(bus, resets)
        got = await wait_trajectories(bus, [r.episode_id for r in resets], timeout=60)
        return [v[0] for v in got.values()]

    def stamps(trajs: list[Trajectory]) -> set[str]:
        assert all(t.status == "ok" for t in trajs), [t.error for t in trajs]
        return {u["by"] for t in trajs for turn in t.turns for u in turn["users"]}

    with FakeOpenAIServer(ScriptedLLM(["userrl/Telepathy-v0"]), model="user-b") as srv:
        async with anyio.create_task_group() as tg:
            for w in ws:
                tg.start_soon(w.async_run)
            assert stamps(await batch("a:")) == {"scripted"}
            fields = {"backend": "openai", "base_url": srv.base_url, "model": "user-b", "api_key_env": ""}
            fields["model_version"] = "2"
            target = await write_target(bus, cfg, fields)
            (hb,) = await wait_applied(bus, target.id, 30)
            assert hb["by"] == "openai:user-b@2" and hb["target"] == target.id
            assert stamps(await batch("b:")) == {"openai:user-b@2"}
            await clear_target(bus)
            await wait_applied(bus, "", 30)
            assert stamps(await batch("c:")) == {"scripted"}
            # a target the worker cannot apply is reported, and the worker keeps answering
            bad = await write_target(bus, cfg, {"backend": "hf", "model": str(tmp_path / "nope")})
            with pytest.raises(ConfigError, match="could not switch: ConfigError: .*no config.json"):
                await wait_applied(bus, bad.id, 30)
            assert stamps(await batch("d:")) == {"scripted"}
            for w in ws:
                w.stop()
        assert srv.chat_requests, "the swapped-in simulator answered over HTTP"
    assert user.stats["swaps"] == 2
