"""In-memory weight sync on CPU: the learner broadcasts its weights over a gloo group to a
receiver process that loads them into its model. Rounds into a real vLLM engine (gloo on CPU)
are in test_vllm_backend.py; the NCCL variant needs GPUs."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.learner_groups import make_groups

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.train


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.timeout(120)
def test_learner_weights_reach_a_receiver_process_in_memory(tmp_path: Path) -> None:
    import os

    from userrl.agents.tiny import build_tiny_model
    from userrl.learner.grpo_learner import GRPOLearner
    from userrl.learner.losses import LossConfig
    from userrl.learner.weight_sync import WeightGroup, send_weights

    model = build_tiny_model(tmp_path / "tiny")
    learner = GRPOLearner(model, tmp_path / "out", lr=1e-2, loss=LossConfig(max_staleness=10), device="cpu")
    learner.step(make_groups(2))
    port, out = free_port(), tmp_path / "received.pt"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    receiver = subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "weight_receiver.py"), str(model), str(port), str(out)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        group = WeightGroup("127.0.0.1", port, rank=0, world=2, timeout_s=60)
        state = learner.full_state_dict()
        sent = send_weights(group, state, learner.version)
        _, err = receiver.communicate(timeout=90)
    finally:
        receiver.kill()
    assert receiver.returncode == 0, err[-3000:]
    assert sent == sum(t.numel() * t.element_size() for t in state.values())
    got = torch.load(out)
    assert got["version"] == 1
    from transformers import AutoModelForCausalLM

    before = AutoModelForCausalLM.from_pretrained(model).state_dict()
    assert any(not torch.equal(before[n], t) for n, t in state.items())  # the receiver got the update
    for name, t in state.items():
        assert torch.equal(got["state"][name], t), name
