"""The openai policy backend against ``transformers serve``: a real OpenAI-compatible server we
did not write, serving the tiny model offline (the ``serving`` extra of transformers: FastAPI,
Uvicorn). Skipped when that extra is not installed."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("transformers")

from userrl.agents.base import GenRequest, Sampling  # noqa: E402
from userrl.agents.openai_backend import OpenAIPolicyBackend, from_deploy_config  # noqa: E402
from userrl.agents.tiny import build_tiny_model  # noqa: E402
from userrl.config import load_config  # noqa: E402
from userrl.errors import PolicyError  # noqa: E402
from userrl.openai_compat import OpenAIConfig  # noqa: E402

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

CORPUS = ["Is it an animal? Yes. No. Maybe. The answer is a cat. [action] [answer]"] * 20


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(
        tmp_path_factory.mktemp("served"),
        corpus=CORPUS,
        vocab_size=300,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        intermediate_size=64,
        head_dim=16,
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``transformers serve`` on a free port; yields its root URL (without ``/v1``)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = Path(sys.executable).parent / "transformers"
    # its own HF cache: /v1/models scans the cache, which other tests may leave half-written;
    # an empty one, not a missing one: transformers 5.19 answers /v1/models with a 500 when the
    # hub folder does not exist, and the wrong-model check then cannot ask what is served
    hf_home = tmp_path_factory.mktemp("hf-home")
    (hf_home / "hub").mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(hf_home)}
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(exe), "serve", "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    root = f"http://127.0.0.1:{port}"
    t0 = time.monotonic()
    try:
        deadline = time.monotonic() + 90  # a few seconds alone; more on a loaded CI machine
        while True:
            try:
                if httpx.get(f"{root}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"transformers serve did not start: {log.read_text()[-2000:]}")
            time.sleep(0.3)
        print(f"transformers serve answered /health after {time.monotonic() - t0:.1f}s")
        yield root
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def request(text: str) -> GenRequest:
    return GenRequest(
        episode_id="e1",
        env_id="userrl/Telepathy-v0",
        messages=[{"role": "system", "content": "Guess the animal."}, {"role": "user", "content": text}],
        sampling=Sampling(temperature=1.0, max_new_tokens=8, seed=0),
    )


def config(base_url: str, model: str, **kw: Any) -> OpenAIConfig:
    return OpenAIConfig(
        base_url=base_url,
        model=model,
        api_key_env="",
        timeout_s=60,
        max_retries=3,
        backoff_base_s=0.5,
        backoff_max_s=2.0,
        **kw,
    )


async def test_policy_turns_from_transformers_serve(server: str, tiny_dir: Path) -> None:
    cfg = load_config(
        None,
        [
            "policy.backend=openai",
            f"policy.base_url={server}/v1",
            f"policy.model={tiny_dir}",
            "policy.api_key_env=",
            "policy.tools=false",
        ],
    )
    async with from_deploy_config(cfg) as pb:
        results = await pb.generate([request("Is it an animal?"), request("Is it a cat?")])
    assert len(results) == 2
    for res in results:  # an untrained model never ends its turn: cut at max_new_tokens
        assert isinstance(res.text, str) and res.finish_reason == "length"


async def test_wrong_model_name_fails_at_once(server: str) -> None:
    """transformers serve answers a bare HTTP 500 for a model it cannot load; this used to be
    retried as temporary for half a minute."""
    async with OpenAIPolicyBackend(config(f"{server}/v1", "Qwen/No-Such-Model")) as pb:
        t0 = time.monotonic()
        with pytest.raises(PolicyError) as info:
            await pb.generate([request("hi")])
    assert time.monotonic() - t0 < 30  # the bound; it was retried for 25-34 s, then failed as temporary
    assert info.value.transient is False
    assert "'Qwen/No-Such-Model', which the server does not list" in str(info.value)


async def test_base_url_without_v1_says_to_add_it(server: str, tiny_dir: Path) -> None:
    async with OpenAIPolicyBackend(config(server, str(tiny_dir))) as pb:
        with pytest.raises(PolicyError) as info:
            await pb.generate([request("hi")])
    assert info.value.transient is False
    assert "HTTP 404" in str(info.value) and f"try {server}/v1" in str(info.value)
