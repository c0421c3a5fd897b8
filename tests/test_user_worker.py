"""The simulated-user worker (``userrl worker user``) as its own process.

Every gym end to end with users served by a separate user process (scripted backend, and the
``openai`` backend against a local fake OpenAI server whose replies are what the scripted user
would say, so rewards must equal an in-process scripted run); 256 concurrent episodes with 1
and 4 user replicas; a user worker killed mid-request; a persistent backend outage failing
episodes as infrastructure errors, and transient 429s retried.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.openai_server import FakeOpenAIServer
from userrl.bus.messages import Reset, Trajectory
from userrl.bus.transport import Bus
from userrl.envs.datasets import load_tasks
from userrl.envs.registry import get_env_class, user_spec
from userrl.learner.sft import expert_dialogue
from userrl.rollouts import make_resets, read_trajectories, send_resets, wait_trajectories
from userrl.sim_users.base import UserQuery
from userrl.sim_users.guards import (
    REDACTED,
    find_leaks,
    hidden_facts,
    redact,
    redact_reply,
    reply_leaks,
)
from userrl.sim_users.llm_user import LEAK_CORRECTION, ask_llm_user, default_spec_lookup

pytestmark = [pytest.mark.anyio]


def subprocesses(f: Any) -> Any:
    """Marks a test that runs workers as subprocesses."""
    return pytest.mark.integration(pytest.mark.slow(f))


CI = Path(__file__).resolve().parents[1] / "deploy" / "ci.yaml"
GYMS = ["userrl/Function-v0", "userrl/Telepathy-v0", "userrl/Turtle-v0", "userrl/Intention-v0"]
LLM_GYMS = GYMS[1:]


# -- a fake LLM user that answers each gym's prompt as the scripted user would -------------------


def _task_key(env_id: str, task: dict[str, Any]) -> str:
    """A string of the task that the gym's LLM prompt quotes verbatim."""
    if env_id == "userrl/Telepathy-v0":
        return f'"title": {json.dumps(task["title"], ensure_ascii=False)}'
    if env_id == "userrl/Turtle-v0":
        return str(task["bottom"])
    return f'"{task["task"]}"'


class ScriptedLLM:
    """``reply(body)`` for :class:`FakeOpenAIServer`: finds the task the prompt quotes,
    reconstructs the query, and answers with the scripted user's reply as JSON."""

    def __init__(self, gyms: list[str] = LLM_GYMS) -> None:
        self.index = [
            (env_id, _task_key(env_id, t), t)
            for env_id in gyms
            for split in ("test", "train")
            for t in load_tasks(env_id, split)
        ]

    def query(self, body: dict[str, Any]) -> UserQuery:
        system, user = body["messages"][0]["content"], body["messages"][-1]["content"]
        hits = [(env_id, t) for env_id, key, t in self.index if key in system]
        assert hits, f"no task quoted in the prompt: {system[:200]!r}"
        env_id, task = max(hits, key=lambda h: len(_task_key(*h)))
        if env_id == "userrl/Telepathy-v0":
            if user.startswith("Guess: "):
                return UserQuery(env_id, "judge", "judge_guess", {"guess": user[len("Guess: ") :]}, task)
            return UserQuery(env_id, "respond", "yes_no", {"question": user.rsplit("Question: ", 1)[1]}, task)
        if env_id == "userrl/Turtle-v0":
            if user.startswith("Explanation: "):
                return UserQuery(env_id, "judge", "grade", {"story": user[len("Explanation: ") :]}, task)
            return UserQuery(env_id, "respond", "yes_no", {"question": user.rsplit("Question: ", 1)[1]}, task)
        remaining = [int(i) for i in re.findall(r'"index": (\d+)', system)]
        return UserQuery(
            env_id, "respond", "clarify", {"question": user.rsplit("Question: ", 1)[1], "remaining": remaining}, task
        )

    def __call__(self, body: dict[str, Any]) -> str:
        q = self.query(body)
        reply = get_env_class(q.env_id).user_spec.scripted(q)
        if q.name == "grade":
            reply = {"judgments": reply["judgments"]}
        return json.dumps(reply)


@pytest.fixture(scope="module")
def scripted_llm() -> ScriptedLLM:
    return ScriptedLLM()


# -- helpers ------------------------------------------------------------------------------------


async def reference_rewards(env_id: str, task: dict, seed: int) -> list[float]:
    """The same episode in process: gym + scripted expert + scripted user."""
    return (await expert_dialogue(env_id, task, seed=seed))["rewards"]


def start(
    role: str, name: str, run: str, env: dict[str, str], python: str, tmp: Path, *sets: str, concurrency: int = 0
) -> subprocess.Popen[bytes]:
    log = open(tmp / f"{name}.log", "ab")  # noqa: SIM115
    cmd = [
        python,
        "-m",
        "userrl",
        "worker",
        role,
        "--name",
        name,
        "--config",
        str(CI),
        "--set",
        f"run={run}",
        "--set",
        "log_level=warning",
    ]
    for s in sets:
        cmd += ["--set", s]
    if concurrency:
        cmd += ["--concurrency", str(concurrency)]
    p = subprocess.Popen(cmd, env=env, stdout=log, stderr=log)
    log.close()
    return p


def openai_sets(srv: FakeOpenAIServer) -> list[str]:
    return ["user.backend=openai", f"user.base_url={srv.base_url}", "user.model=fake-model", "user.api_key_env="]


def stop_all(procs: list[subprocess.Popen[bytes]]) -> list[int | None]:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    return [p.wait(timeout=30) for p in procs]


async def wait_heartbeats(bus: Bus, role: str, names: list[str], timeout: float = 30) -> None:
    with anyio.fail_after(timeout):
        while not all([await bus.redis.exists(bus.keys.heartbeat(role, n)) for n in names]):
            await anyio.sleep(0.05)


def exactly_once(got: dict[str, list[Trajectory]], resets: list[Reset]) -> dict[str, Trajectory]:
    dup = {k: len(v) for k, v in got.items() if len(v) > 1}
    assert not dup, f"episodes finished twice: {dup}"
    assert set(got) == {r.episode_id for r in resets}
    return {k: v[0] for k, v in got.items()}


async def assert_like_reference(trajs: dict[str, Trajectory], resets: list[Reset]) -> None:
    for r in resets:
        traj = trajs[r.episode_id]
        assert traj.status == "ok", (r.episode_id, traj.error)
        want = await reference_rewards(r.env_id, r.task, r.seed)
        assert [t["reward"] for t in traj.turns] == pytest.approx(want), r.episode_id


# -- 1. every gym end to end with a separate user process ------------------------------------------


@subprocesses
@pytest.mark.parametrize("backend", ["scripted", "openai"])
async def test_every_gym_with_user_process(
    backend: str,
    bus: Bus,
    run_name: str,
    subprocess_env: dict[str, str],
    python: str,
    tmp_path: Path,
    scripted_llm: ScriptedLLM,
) -> None:
    resets: list[Reset] = []
    for env_id in GYMS:
        resets += make_resets(env_id, load_tasks(env_id, "test")[:3], group_size=2, seed=5)
    with FakeOpenAIServer(scripted_llm) as srv:
        sets = openai_sets(srv) if backend == "openai" else []
        procs = [
            start(role, f"{role}-0", run_name, subprocess_env, python, tmp_path) for role in ("env", "policy", "reward")
        ]
        procs.append(start("user", "user-0", run_name, subprocess_env, python, tmp_path, *sets))
        try:
            await send_resets(bus, resets)
            got = await wait_trajectories(bus, [r.episode_id for r in resets], timeout=90)
            n_groups = len({r.group_id for r in resets})
            with anyio.fail_after(30):
                while await bus.redis.xlen(bus.keys.stream("learner")) < n_groups:
                    await anyio.sleep(0.05)
        finally:
            codes = stop_all(procs)
        n_chat = len(srv.chat_requests)
    assert codes == [0, 0, 0, 0], f"workers exited with {codes}; logs in {tmp_path}"
    await assert_like_reference(exactly_once(got, resets), resets)
    if backend == "openai":
        assert n_chat > 0, "the openai backend never called the server"
    else:
        assert n_chat == 0
    # the user answers show up in the readable episode log
    tel = next(r for r in resets if r.env_id == "userrl/Telepathy-v0")
    rows = await bus.redis.xrange(bus.keys.episode(tel.episode_id))
    texts = [f[b"text"].decode() for _, f in rows if f.get(b"role") == b"env"]
    assert any(t.startswith(("Yes.", "No.", "Maybe.")) for t in texts), texts


# -- 2. 256 concurrent episodes, 1 and 4 user replicas -------------------------------------------


def many_resets(n: int = 256) -> list[Reset]:
    resets: list[Reset] = []
    rnd = 0
    while len(resets) < n:
        for env_id in GYMS:
            resets += make_resets(env_id, load_tasks(env_id, "test"), group_size=2, seed=rnd, prefix=f"r{rnd}:")
        rnd += 1
    return resets[:n]


@subprocesses
@pytest.mark.parametrize("backend", ["scripted", "openai"])
@pytest.mark.parametrize("replicas", [1, 4])
async def test_256_episodes(
    replicas: int,
    backend: str,
    bus: Bus,
    run_name: str,
    subprocess_env: dict[str, str],
    python: str,
    tmp_path: Path,
    scripted_llm: ScriptedLLM,
    record_property: Any,
) -> None:
    resets = many_resets(256)
    assert len({r.episode_id for r in resets}) == 256
    # openai: a model server taking 50 ms per request, 4 requests at a time per user worker
    # (a GPU's worth), so the user role is the bottleneck and replicas matter
    with FakeOpenAIServer(scripted_llm, delay_s=0.05 if backend == "openai" else 0.0) as srv:
        sets = openai_sets(srv) if backend == "openai" else []
        conc = 4 if backend == "openai" else 64
        users = [f"user-{i}" for i in range(replicas)]
        slow = "bus.min_idle_ms=10000"  # 2-core CI: 9 busy processes must not look dead to each other
        procs = [
            start("env", f"env-{i}", run_name, subprocess_env, python, tmp_path, slow, concurrency=256)
            for i in range(2)
        ]
        procs.append(start("policy", "policy-0", run_name, subprocess_env, python, tmp_path, slow, concurrency=256))
        procs += [
            start("user", n, run_name, subprocess_env, python, tmp_path, slow, *sets, concurrency=conc) for n in users
        ]
        try:
            await wait_heartbeats(bus, "user", users)
            await wait_heartbeats(bus, "env", ["env-0", "env-1"])
            t0 = time.perf_counter()
            await send_resets(bus, resets)
            with anyio.fail_after(120):  # poll a counter, not the stream: the test's CPU is shared
                while sum(
                    int(v or 0) for v in await bus.redis.hmget(bus.keys.counters, ["episodes_ok", "episodes_failed"])
                ) < len(resets):
                    await anyio.sleep(0.05)
            wall = time.perf_counter() - t0
            await anyio.sleep(0.5)  # a late duplicate would show up here
            got = await read_trajectories(bus)
            served = [json.loads((await bus.redis.get(bus.keys.heartbeat("user", n))) or b"{}") for n in users]
        finally:
            codes = stop_all(procs)
        n_chat = len(srv.chat_requests)
    assert all(c == 0 for c in codes), f"workers exited with {codes}; logs in {tmp_path}"
    trajs = exactly_once(got, resets)
    failed = {k: t.error for k, t in trajs.items() if t.status != "ok"}
    assert not failed, failed
    record_property("wall_s", round(wall, 2))
    record_property("user_requests", n_chat)
    record_property("duplicate_work", sum(s.get("duplicates", 0) for s in served))
    if replicas > 1:  # every replica took a share
        assert all(s.get("replies", 0) > 0 for s in served), served
    assert await bus.redis.zcard(bus.keys.live) == 0


# -- 3. a user worker killed while it holds requests ---------------------------------------------


@subprocesses
async def test_user_worker_killed_mid_request(
    bus: Bus, run_name: str, subprocess_env: dict[str, str], python: str, tmp_path: Path, scripted_llm: ScriptedLLM
) -> None:
    resets: list[Reset] = []
    for env_id in LLM_GYMS:
        resets += make_resets(env_id, load_tasks(env_id, "test")[:4], group_size=2, seed=7)
    with FakeOpenAIServer(scripted_llm, delay_s=0.5) as srv:
        sets = openai_sets(srv)
        procs = [
            start("env", "env-0", run_name, subprocess_env, python, tmp_path),
            start("policy", "policy-0", run_name, subprocess_env, python, tmp_path),
        ]
        victim = start("user", "user-0", run_name, subprocess_env, python, tmp_path, *sets)
        procs.append(victim)
        try:
            await send_resets(bus, resets)
            with anyio.fail_after(60):  # some replies done, more requests held by the victim
                while len(srv.chat_requests) < 30 or srv.in_flight < 5:
                    await anyio.sleep(0.01)
            held = srv.in_flight
            victim.send_signal(signal.SIGKILL)
            victim.wait(timeout=10)
            pending = await bus.redis.xpending(bus.keys.stream("user"), bus.keys.group("user"))
            procs.append(start("user", "user-1", run_name, subprocess_env, python, tmp_path, *sets))
            got = await wait_trajectories(bus, [r.episode_id for r in resets], timeout=120)
            await anyio.sleep(0.5)
            got = await read_trajectories(bus)
        finally:
            codes = stop_all(procs)
    assert codes[:2] == [0, 0] and codes[3] == 0, codes
    assert held >= 5 and pending["pending"] > 0, "the kill should land while requests are held"
    await assert_like_reference(exactly_once(got, resets), resets)
    assert await bus.redis.zcard(bus.keys.live) == 0


# -- 4. outages: persistent 500s fail episodes as infra errors; transient 429s are retried --------

FAST_RETRIES = ["user.max_retries=1", "user.retries=1", "user.backoff_s=0.05", "user.timeout_s=5"]


@subprocesses
async def test_persistent_outage_fails_episodes_as_infra_errors(
    bus: Bus, run_name: str, subprocess_env: dict[str, str], python: str, tmp_path: Path, scripted_llm: ScriptedLLM
) -> None:
    resets = (
        make_resets("userrl/Telepathy-v0", load_tasks("userrl/Telepathy-v0", "test")[:2], seed=1)
        + make_resets("userrl/Intention-v0", load_tasks("userrl/Intention-v0", "test")[:2], seed=1)
        + make_resets("userrl/Function-v0", load_tasks("userrl/Function-v0", "test")[:2], seed=1)
    )
    env = subprocess_env
    with FakeOpenAIServer(scripted_llm) as srv:
        srv.fail_next(100_000, status=500)  # down for good
        procs = [
            start("env", "env-0", run_name, env, python, tmp_path),
            start("policy", "policy-0", run_name, env, python, tmp_path),
            start("user", "user-0", run_name, env, python, tmp_path, *openai_sets(srv), *FAST_RETRIES),
        ]
        try:
            await send_resets(bus, resets)
            got = await wait_trajectories(bus, [r.episode_id for r in resets], timeout=60)
        finally:
            codes = stop_all(procs)
        n_chat = len(srv.chat_requests)
    assert codes == [0, 0, 0]
    trajs = exactly_once(got, resets)
    # one user request per LLM episode, each tried (1 + client retries) x (1 + worker retries) times
    assert n_chat == 4 * 4
    for r in resets:
        traj = trajs[r.episode_id]
        if r.env_id == "userrl/Function-v0":  # no user: unaffected
            assert traj.status == "ok", traj.error
            continue
        assert traj.status == "failed" and traj.error is not None
        assert traj.error.kind == "user", traj.error
        assert "500" in traj.error.message
        assert traj.turns == []  # the failed turn is not recorded as training data
        # the snapshot is released with the trajectory's commit; the readable log stays
        assert not await bus.redis.exists(bus.keys.state(r.episode_id))
        rows = await bus.redis.xrange(bus.keys.episode(r.episode_id))
        said = [f[b"text"].decode() for _, f in rows if f.get(b"role") in (b"user", b"env", b"tool")]
        assert not any("injected" in t or "HTTP 500" in t for t in said), said


@subprocesses
async def test_transient_429s_are_retried(
    bus: Bus, run_name: str, subprocess_env: dict[str, str], python: str, tmp_path: Path, scripted_llm: ScriptedLLM
) -> None:
    resets = make_resets("userrl/Telepathy-v0", load_tasks("userrl/Telepathy-v0", "test")[:2], seed=2) + make_resets(
        "userrl/Turtle-v0", load_tasks("userrl/Turtle-v0", "test")[:2], seed=2
    )
    env = subprocess_env
    with FakeOpenAIServer(scripted_llm) as srv:
        srv.fail_next(3, status=429, retry_after=0.05)  # the first requests are throttled, then served
        procs = [
            start("env", "env-0", run_name, env, python, tmp_path),
            start("policy", "policy-0", run_name, env, python, tmp_path),
            start("user", "user-0", run_name, env, python, tmp_path, *openai_sets(srv), *FAST_RETRIES),
        ]
        try:
            await send_resets(bus, resets)
            got = await wait_trajectories(bus, [r.episode_id for r in resets], timeout=60)
        finally:
            codes = stop_all(procs)
        faults = [r.fault for r in srv.chat_requests if r.fault]
    assert codes == [0, 0, 0]
    assert faults == ["status"] * 3
    await assert_like_reference(exactly_once(got, resets), resets)


# -- 5. the leak guard -----------------------------------------------------------------------------


def test_find_leaks_is_verbatim_in_words() -> None:
    assert find_leaks("Is it the eiffel-TOWER?", ["Eiffel Tower"]) == ["Eiffel Tower"]
    assert find_leaks("Is it in Paris? A tower?", ["Eiffel Tower"]) == []
    assert find_leaks("towers are tall", ["tower"]) == []  # whole words only
    story = "She had overslept and was sure she had missed an important exam."
    assert find_leaks("well, she was sure she had missed an important exam", [story]) == [story]
    assert find_leaks("she slept in and thought the exam was gone", [story]) == []  # a paraphrase


def test_redact_blanks_only_the_leaked_words() -> None:
    assert redact("Yes, it's the Eiffel Tower, in Paris.", ["eiffel tower"]) == f"Yes, it's the {REDACTED}, in Paris."
    assert redact("nothing here", ["eiffel tower"]) == "nothing here"
    reply = {"uncovered": [0], "reply": "Five days; we stay at a small boutique hotel."}
    assert redact_reply(reply, ["a small boutique hotel"]) == {
        "uncovered": [0],
        "reply": f"Five days; we stay at {REDACTED}.",
    }


def intention_task() -> dict[str, Any]:
    return load_tasks("userrl/Intention-v0", "test")[0]


def test_hidden_facts_follow_the_gym_rules() -> None:
    task = intention_task()
    answers = [d["answer"] for d in task["missing_details"]]
    q = UserQuery("userrl/Intention-v0", "respond", "clarify", {"question": "?", "remaining": [0, 1, 2]}, task)
    facts = hidden_facts(q, {"uncovered": [1], "reply": ""}, user_spec(q.env_id))
    assert answers[1] not in facts and answers[0] in facts and answers[2] in facts  # uncovered = allowed
    assert answers[3] not in facts  # not remaining: already told
    tel = load_tasks("userrl/Telepathy-v0", "test")[0]
    q_tel = UserQuery("userrl/Telepathy-v0", "respond", "yes_no", {}, tel)
    assert tel["title"] in hidden_facts(q_tel, {}, user_spec(q_tel.env_id))
    q_fn = UserQuery("userrl/Function-v0", "respond", "x", {}, {"rule": "a+b"})
    assert hidden_facts(q_fn, {}, user_spec(q_fn.env_id)) == []  # a spec without the hook

    class Spec:  # the facts are the spec's, whatever the query's env id
        def hidden_facts(self, query: UserQuery, reply: dict[str, Any]) -> list[str]:
            return ["the secret word", "ok"]  # too short to leak anything: dropped

    assert hidden_facts(q, {}, Spec()) == ["the secret word"]


def test_scripted_users_never_trip_the_guard() -> None:
    for task in load_tasks("userrl/Intention-v0", "test"):
        remaining = list(range(len(task["missing_details"])))
        for d in task["missing_details"]:
            q = UserQuery(
                "userrl/Intention-v0", "respond", "clarify", {"question": d["inquiry"], "remaining": remaining}, task
            )
            spec = get_env_class(q.env_id).user_spec
            reply = spec.scripted(q)
            assert reply_leaks(q, reply, spec) == [], (task["id"], reply)
    for task in load_tasks("userrl/Telepathy-v0", "test"):
        q = UserQuery("userrl/Telepathy-v0", "respond", "yes_no", {"question": f"Is it {task['title']}?"}, task)
        spec = get_env_class(q.env_id).user_spec
        assert reply_leaks(q, spec.scripted(q), spec) == []


class Scripted:
    """``generate`` returning canned texts in order, recording the prompts."""

    def __init__(self, *texts: str) -> None:
        self.texts = list(texts)
        self.prompts: list[list[dict[str, str]]] = []

    async def __call__(self, messages: list[dict[str, str]]) -> str:
        self.prompts.append(messages)
        return self.texts.pop(0)


def clarify_query() -> tuple[UserQuery, list[str]]:
    task = intention_task()
    q = UserQuery(
        "userrl/Intention-v0",
        "respond",
        "clarify",
        {"question": "How long is the trip?", "remaining": list(range(len(task["missing_details"])))},
        task,
    )
    return q, [d["answer"] for d in task["missing_details"]]


async def test_llm_user_is_reasked_after_a_leak() -> None:
    q, answers = clarify_query()
    leak = json.dumps({"uncovered": [0], "reply": f"{answers[0]}, and {answers[1]}."})
    clean = json.dumps({"uncovered": [0], "reply": f"{answers[0]}."})
    gen = Scripted(leak, clean)
    reply = await ask_llm_user(q, default_spec_lookup, gen)
    assert reply == {"uncovered": [0], "reply": f"{answers[0]}."}
    assert len(gen.prompts) == 2
    correction = gen.prompts[1][-1]["content"]
    assert correction.startswith(LEAK_CORRECTION.split("{")[0]) and answers[1] in correction
    assert answers[0] not in correction  # uncovered: allowed


async def test_llm_user_leak_is_redacted_when_reasks_run_out() -> None:
    q, answers = clarify_query()
    leak = json.dumps({"uncovered": [0], "reply": f"{answers[0]}, and {answers[1]}."})
    reply = await ask_llm_user(q, default_spec_lookup, Scripted(leak, leak), max_reasks=1)
    assert reply == {"uncovered": [0], "reply": f"{answers[0]}, and {REDACTED}."}
    raw = await ask_llm_user(q, default_spec_lookup, Scripted(leak), leak_guard=False)
    assert answers[1] in raw["reply"]
