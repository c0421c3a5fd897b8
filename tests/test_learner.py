"""The GRPO learner on a tiny local model: updates, stale turns, weights, checkpoints, rescoring."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from userrl.agents.tiny import build_tiny_model  # noqa: E402
from userrl.learner.grpo_learner import GRPOLearner  # noqa: E402
from userrl.learner.losses import LossConfig  # noqa: E402
from userrl.learner.metrics import MetricsLog  # noqa: E402
from userrl.learner.rescore import append_groups, read_groups, rescore_archive  # noqa: E402
from userrl.learner.rewards import RewardConfig  # noqa: E402

pytestmark = pytest.mark.train


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "m", seed=0)


def group(learner: GRPOLearner, versions: tuple[int, int] = (0, 0)) -> dict:
    """Two one-turn trajectories whose behaviour logprobs are the model's own; +/- advantages."""
    items = []
    for i, adv in enumerate((1.0, -1.0)):
        prompt = [5, 6, 7, 8 + i]
        gen = [20 + i, 21, 22]
        ids = torch.tensor([prompt + gen])
        with torch.no_grad():
            logits = learner.model(input_ids=ids).logits[0, len(prompt) - 1 : -1]
            lp = torch.log_softmax(logits, -1).gather(-1, torch.tensor(gen)[:, None])[:, 0].tolist()
        turn = {
            "prompt_ids": prompt,
            "token_ids": gen,
            "logprobs": lp,
            "policy_version": versions[i],
            "reward": 1.0 if adv > 0 else 0.0,
            "advantages": [adv] * 3,
        }
        items.append(
            {
                "episode_id": f"e{i}",
                "task_id": "t",
                "score": adv,
                "return": turn["reward"],
                "n_turns": 1,
                "turns": [turn],
            }
        )
    return {"items": items, "env_id": "userrl/Function-v0"}


def test_step_moves_towards_positive_advantages(model_dir: Path, tmp_path: Path) -> None:
    learner = GRPOLearner(model_dir, tmp_path, lr=1e-2, loss=LossConfig())
    before = [p.detach().clone() for p in learner.model.parameters()]
    g = group(learner)
    good = torch.tensor([[5, 6, 7, 8, 20, 21, 22]])

    def good_logp() -> float:
        with torch.no_grad():
            logits = learner.model(input_ids=good).logits[0, 3:-1]
            return float(torch.log_softmax(logits, -1).gather(-1, good[0, 4:, None]).sum())

    lp0 = good_logp()
    m = learner.step([g])
    assert learner.version == 1 and m["rollout/trained_tokens"] == 6 and m["rollout/stale_tokens"] == 0
    assert any(not torch.equal(a, b) for a, b in zip(before, learner.model.parameters(), strict=True))
    for _ in range(3):
        learner.step([group(learner, versions=(learner.version, learner.version))])
    assert good_logp() > lp0  # the positively advantaged continuation became more likely


def test_stale_turns_are_dropped_and_counted(model_dir: Path, tmp_path: Path) -> None:
    learner = GRPOLearner(model_dir, tmp_path, lr=1e-2, loss=LossConfig(max_staleness=1))
    learner.version = 5
    m = learner.step([group(learner, versions=(5, 2))])  # the second trajectory is 3 versions old
    assert m["rollout/stale_tokens"] == 3 and m["rollout/trained_tokens"] == 3


def test_weights_load_into_the_policy_backend_and_checkpoint_resumes(model_dir: Path, tmp_path: Path) -> None:
    import anyio

    from userrl.agents.hf_backend import HFBackend

    learner = GRPOLearner(model_dir, tmp_path, lr=1e-2, loss=LossConfig())
    learner.step([group(learner)])
    path = learner.save_weights()
    backend = HFBackend(model_dir, tools=None)
    anyio.run(backend.load_weights, str(path), learner.version)
    assert backend.version == 1
    for (name, p), q in zip(learner.model.state_dict().items(), backend.model.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    learner.checkpoint({"step": 1})
    again, state = GRPOLearner.resume(tmp_path, lr=1e-2, loss=LossConfig())
    assert again.version == 1 and state["step"] == 1
    assert again.optimizer.state_dict()["state"], "optimizer state restored"


def test_rescore_archive_with_another_formulation(tmp_path: Path) -> None:
    rewards = [[0, 0, 1], [0, 0.5], [0, 0, 0, 0.2], [1]]  # docs/gyms.md's worked example
    items = [
        {"episode_id": f"e{i}", "turns": [{"reward": r, "token_ids": [1, 2], "advantages": [0, 0]} for r in rs]}
        for i, rs in enumerate(rewards)
    ]
    src, dst = tmp_path / "groups.msgpack", tmp_path / "r2g.msgpack"
    append_groups(src, [{"group_id": "g", "env_id": "x", "items": items}])
    stats = rescore_archive(src, dst, RewardConfig(credit="r2g", score="r2g"))
    assert stats["groups"] == 1 and stats["episodes"] == 4
    (g,) = list(read_groups(dst))
    assert [round(t["advantages"][0], 4) for t in g["items"][0]["turns"]] == [0.2163, 0.2704, 0.338]
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "userrl",
            "rescore",
            str(src),
            "--out",
            str(tmp_path / "em.msgpack"),
            "--set",
            "reward.credit=em",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["credit"] == "em"
    bad = subprocess.run(
        [sys.executable, "-m", "userrl", "rescore", str(tmp_path / "none.msgpack")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "no archive of scored groups" in bad.stderr


class Killed(Exception):
    pass


class KillAt(MetricsLog):
    """Metrics that 'kill' the learner right after step ``at`` trained (weights announced)."""

    def __init__(self, path: Path, at: int) -> None:
        super().__init__(path)
        self.at = at

    def log(self, step: int, metrics: dict) -> None:
        super().log(step, metrics)
        if step == self.at:
            raise Killed


@pytest.mark.integration
@pytest.mark.anyio
async def test_killed_learner_resumes_from_its_checkpoint_without_losing_groups(
    model_dir: Path, tmp_path: Path, bus
) -> None:
    from userrl.bus.messages import ScoredGroup
    from userrl.envs.datasets import load_tasks
    from userrl.learner.dispatch import Dispatcher
    from userrl.learner.loop import learn

    probe = GRPOLearner(model_dir, tmp_path / "probe", lr=1e-2, loss=LossConfig())
    for i in range(6):
        g = group(probe)
        await bus.send(
            bus.keys.stream("learner"),
            ScoredGroup(episode_id=f"g{i}", group_id=f"g{i}", env_id=g["env_id"], items=g["items"]),
        )
    tasks = {"userrl/Function-v0": load_tasks("userrl/Function-v0", "train")}

    def dispatcher() -> Dispatcher:
        return Dispatcher(bus, tasks, group_size=2, max_in_flight=0, max_turns=2, sampling={})

    loss = LossConfig(max_staleness=100)
    learner = GRPOLearner(model_dir, tmp_path / "run", lr=1e-2, loss=loss)
    with pytest.raises(Killed):  # checkpoint at step 2; step 3 trains on g2, then the process dies
        await learn(
            bus,
            learner,
            dispatcher(),
            steps=5,
            groups_per_step=1,
            metrics=KillAt(tmp_path / "m.jsonl", 3),
            time_budget_s=600,
            checkpoint_every=2,
            group_timeout_s=10,
        )
    stream = bus.keys.stream("learner")
    assert (await bus.redis.xpending(stream, "learner"))["pending"] == 1  # g2: trained, not checkpointed

    again, state = GRPOLearner.resume(tmp_path / "run", lr=1e-2, loss=loss)
    assert again.version == 2 and state["step"] == 2
    rows = await learn(
        bus,
        again,
        dispatcher(),
        steps=5,
        groups_per_step=1,
        metrics=MetricsLog(tmp_path / "m.jsonl"),
        time_budget_s=600,
        checkpoint_every=2,
        group_timeout_s=10,
        first_step=3,
    )
    assert [r["step"] for r in rows] == [3, 4, 5] and rows[0]["rollout/replayed_groups"] == 1
    assert again.version == 5
    trained = [g["group_id"] for g in read_groups(tmp_path / "run" / "groups.msgpack")]
    assert trained == ["g0", "g1", "g2", "g2", "g3", "g4"]  # g2 again after the resume; none lost
    assert (await bus.redis.xpending(stream, "learner"))["pending"] == 0


def test_lr_schedules_warm_up_then_decay_to_zero() -> None:
    from userrl.errors import ConfigError
    from userrl.learner.grpo_learner import lr_factor

    assert [lr_factor("constant", s, 10) for s in (0, 5, 9, 50)] == [1.0] * 4
    linear = [lr_factor("linear", s, 10) for s in range(10)]
    assert linear[0] == 1.0 and linear[5] == pytest.approx(0.5) and linear[9] == pytest.approx(0.1)
    cosine = [lr_factor("cosine", s, 10) for s in range(10)]
    assert cosine[0] == 1.0 and cosine[5] == pytest.approx(0.5) and cosine[9] < 0.03
    assert all(a > b for a, b in zip(cosine, cosine[1:], strict=False))
    # warmup: 1/3, 2/3 of the peak, then the decay over the remaining steps
    warm = [lr_factor("linear", s, 6, warmup_steps=2) for s in range(6)]
    assert warm == pytest.approx([1 / 3, 2 / 3, 1.0, 0.75, 0.5, 0.25])
    assert lr_factor("linear", 12, 10) == 0.0  # past the end (a resumed run given more steps)
    with pytest.raises(ConfigError, match="unknown lr schedule 'step'"):
        lr_factor("step", 0, 10)


def test_learner_follows_its_lr_schedule_across_a_resume(model_dir: Path, tmp_path: Path) -> None:
    kw = {"lr": 1e-2, "loss": LossConfig(max_staleness=100), "lr_schedule": "linear", "total_steps": 4}
    learner = GRPOLearner(model_dir, tmp_path, **kw)
    seen = [learner.step([group(learner)])["policy/lr"] for _ in range(2)]
    assert seen == pytest.approx([1e-2, 0.75e-2])
    assert learner.optimizer.param_groups[0]["lr"] == pytest.approx(0.75e-2)  # what AdamW stepped with
    learner.checkpoint({"step": 2})
    resumed, _ = GRPOLearner.resume(tmp_path, **kw)
    assert resumed.step([group(resumed)])["policy/lr"] == pytest.approx(0.5e-2)  # continues, no restart
    with pytest.raises(Exception, match="unknown lr schedule"):
        GRPOLearner(model_dir, tmp_path / "bad", **{**kw, "lr_schedule": "exp"})
