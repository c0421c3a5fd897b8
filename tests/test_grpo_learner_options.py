"""The learner's settings of issue 23 end to end on a tiny model: old logprobs recomputed with the
weights that sampled, the engine fallback, KL in the reward, the entropy bonus, truncated
episodes, dynamic sampling over a real Redis, pass^k, micro-batch invariance and config checks."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest

from tests.learner_groups import make_groups
from userrl.config import load_config
from userrl.errors import ConfigError

torch = pytest.importorskip("torch")

from userrl.agents.tiny import build_tiny_model  # noqa: E402
from userrl.learner.grpo_learner import GRPOLearner  # noqa: E402
from userrl.learner.losses import LossConfig, grpo_loss, token_logprobs  # noqa: E402
from userrl.learner.microbatch import step_plan  # noqa: E402
from userrl.learner.prepass import kl_in_reward  # noqa: E402
from userrl.learner.rewards import RewardConfig, group_advantages  # noqa: E402
from userrl.learner.sequences import per_token_advantages  # noqa: E402

pytestmark = pytest.mark.train


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("opts")
    return build_tiny_model(root / "policy", seed=0), build_tiny_model(root / "ref", seed=1)


def logprobs_of(model: torch.nn.Module, prompt: list[int], gen: list[int]) -> list[float]:
    """The model's logprobs of ``gen`` after ``prompt``: a plain full forward, log-softmax, gather."""
    ids = torch.tensor([prompt + gen])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1].double()
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(gen)[:, None])[:, 0].tolist()


def one_turn_group(model: torch.nn.Module, version: int, noise: float = 0.0, seed: int = 0) -> dict[str, Any]:
    """Two one-turn trajectories sampled by ``model`` at ``version``; the engine's logprobs are the
    model's plus Gaussian noise (a sampler that is not the learner); advantages +1 / −1."""
    gen = torch.Generator().manual_seed(seed)
    items = []
    for i, adv in enumerate((1.0, -1.0)):
        prompt, tokens = [5, 6, 7, 8 + i], [20 + i, 21, 22, 30 + i]
        lp = [x + noise * float(torch.randn(1, generator=gen)) for x in logprobs_of(model, prompt, tokens)]
        turn = {
            "prompt_ids": prompt,
            "token_ids": tokens,
            "logprobs": lp,
            "policy_version": version,
            "reward": float(adv > 0),
            "advantages": [adv] * len(tokens),
        }
        items.append({"episode_id": f"e{i}", "score": adv, "return": turn["reward"], "n_turns": 1, "turns": [turn]})
    return {"items": items, "env_id": "userrl/Function-v0"}


def grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def reference_grads(model: torch.nn.Module, group: dict[str, Any], old: list[list[float]], cap: float | None):
    """Gradients of the token-mean GRPO loss with π_old = ``old`` and weights min(π_old/μ, cap),
    computed on a copy of ``model`` without the learner."""
    net = copy.deepcopy(model).train()
    net.zero_grad(set_to_none=True)
    rows = [(it["turns"][0], o) for it, o in zip(group["items"], old, strict=True)]
    ids = torch.tensor([t["prompt_ids"] + t["token_ids"] for t, _ in rows])
    n_prompt = len(rows[0][0]["prompt_ids"])
    mask = torch.zeros(ids.shape)
    mask[:, n_prompt:] = 1
    pad = [0.0] * n_prompt
    mu = torch.tensor([pad + t["logprobs"] for t, _ in rows])
    old_t = torch.tensor([pad + o for _, o in rows], dtype=torch.float32)
    adv = torch.tensor([pad + t["advantages"] for t, _ in rows])
    logp = token_logprobs(net, ids, torch.ones_like(ids), mask=mask)
    weights = None if cap is None else torch.exp(old_t - mu).clamp(max=cap)
    loss, _ = grpo_loss(logp, old_t, adv, mask, weights=weights)
    loss.backward()
    return grads(net)


def test_old_logprobs_are_recomputed_with_the_weights_that_sampled(models: tuple[Path, Path], tmp_path: Path) -> None:
    learner = GRPOLearner(models[0], tmp_path, lr=1e-2, loss=LossConfig(max_staleness=2), device="cpu")
    v0 = copy.deepcopy(learner.model)  # the weights of version 0
    learner.step([one_turn_group(learner.model, 0)])
    learner.step([one_turn_group(learner.model, 1)])
    assert learner.version == 2 and 0 in learner.snapshots and 1 in learner.snapshots
    g = one_turn_group(v0, 0, noise=0.4, seed=3)  # sampled two versions ago by an engine off by noise
    seqs, advs = learner.sequences([g])
    before = {n: p.detach().clone() for n, p in learner.model.named_parameters()}
    learner.optimizer.zero_grad(set_to_none=True)
    m = learner.accumulate(seqs, advs)
    for n, p in learner.model.named_parameters():  # version 0 was swapped in, then out again
        assert torch.equal(p, before[n]), n
    old = [logprobs_of(v0, it["turns"][0]["prompt_ids"], it["turns"][0]["token_ids"]) for it in g["items"]]
    mu = [x for it in g["items"] for x in it["turns"][0]["logprobs"]]
    flat_old = [x for row in old for x in row]
    assert m["offpolicy/recomputed_tokens"] == 8 and m["offpolicy/missing_tokens"] == 0
    assert m["offpolicy/tokens"] == 8
    assert m["offpolicy/kl_k1"] == pytest.approx(sum(a - b for a, b in zip(mu, flat_old, strict=True)) / 8, abs=1e-5)
    rhos = [math.exp(b - a) for a, b in zip(mu, flat_old, strict=True)]
    assert m["offpolicy/ratio_max"] == pytest.approx(max(rhos), rel=1e-4)
    assert m["offpolicy/capped_frac"] == pytest.approx(sum(r > 2.0 for r in rhos) / 8)
    want = reference_grads(learner.model, g, old, cap=2.0)
    got = grads(learner.model)
    assert got.keys() == want.keys()
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=1e-4, atol=1e-7, msg=n)
    learner.step([one_turn_group(learner.model, 2)])
    assert 0 not in learner.snapshots  # version 3 trains nothing older than 3 - 2


def test_a_version_no_longer_kept_falls_back_to_the_engine_logprobs(models: tuple[Path, Path], tmp_path: Path) -> None:
    learner = GRPOLearner(models[0], tmp_path, lr=1e-2, loss=LossConfig(max_staleness=1), device="cpu")
    learner.version = 5  # as after a resume: no snapshot of version 4
    g = one_turn_group(learner.model, 4, noise=0.3)
    seqs, advs = learner.sequences([g])
    learner.optimizer.zero_grad(set_to_none=True)
    m = learner.accumulate(seqs, advs)
    assert m["offpolicy/missing_tokens"] == 8 and m["offpolicy/recomputed_tokens"] == 0
    assert m["offpolicy/tokens"] == 0  # nothing to measure the mismatch on
    old = [it["turns"][0]["logprobs"] for it in g["items"]]
    want = reference_grads(learner.model, g, old, cap=None)  # π_old = μ, weight 1
    for n, grad in grads(learner.model).items():
        torch.testing.assert_close(grad, want[n], rtol=1e-4, atol=1e-7, msg=n)


def test_engine_old_logprobs_train_against_the_sampler_and_still_measure_it(
    models: tuple[Path, Path], tmp_path: Path
) -> None:
    loss = LossConfig(old_logprobs="engine", is_correction="none")
    learner = GRPOLearner(models[0], tmp_path, lr=1e-2, loss=loss, device="cpu")
    g = one_turn_group(learner.model, 0, noise=0.3, seed=1)
    seqs, advs = learner.sequences([g])
    learner.optimizer.zero_grad(set_to_none=True)
    m = learner.accumulate(seqs, advs)
    want = reference_grads(learner.model, g, [it["turns"][0]["logprobs"] for it in g["items"]], cap=None)
    for n, grad in grads(learner.model).items():
        torch.testing.assert_close(grad, want[n], rtol=1e-4, atol=1e-7, msg=n)
    mine = [
        x
        for it in g["items"]
        for x in logprobs_of(learner.model, it["turns"][0]["prompt_ids"], it["turns"][0]["token_ids"])
    ]
    mu = [x for it in g["items"] for x in it["turns"][0]["logprobs"]]
    assert m["offpolicy/tokens"] == 8  # sampled by the current version: the gradient pass measures it
    assert m["offpolicy/kl_k1"] == pytest.approx(sum(a - b for a, b in zip(mu, mine, strict=True)) / 8, abs=1e-5)


def test_kl_in_the_reward_penalises_each_turn_and_recomputes_the_advantages(
    models: tuple[Path, Path], tmp_path: Path
) -> None:
    reward = RewardConfig(credit="r2g", score="r2g")
    loss = LossConfig(kl_coef=0.5, kl_in="reward", kl_estimator="k1", max_staleness=100)
    learner = GRPOLearner(
        models[0], tmp_path, lr=1e-2, loss=loss, device="cpu", ref_model_path=models[1], reward=reward
    )
    groups = make_groups(3, seed=4)
    seqs, _ = learner.sequences(groups)
    advs, metrics = kl_in_reward(learner, seqs)
    kl_total = n_tokens = 0.0
    for gi in range(3):
        members = [s for s in seqs if s.group == gi]
        penalised = []
        for s in members:
            prompt_end = s.turn_starts[-1] + s.turn_lengths[-1]
            ids = torch.tensor([s.input_ids[:prompt_end]])
            with torch.no_grad():
                ref = torch.log_softmax(learner.ref(input_ids=ids).logits[0].double(), -1)
            rewards = []
            for r, a, n in zip(s.turn_rewards, s.turn_starts, s.turn_lengths, strict=True):
                k1 = [s.behaviour_logprobs[t] - float(ref[t - 1, s.input_ids[t]]) for t in range(a, a + n)]
                kl_total += sum(k1)
                n_tokens += n
                rewards.append(r - 0.5 * sum(k1))
            penalised.append(rewards)
        _, want = group_advantages(penalised, [s.turn_lengths for s in members], credit="r2g", score="r2g")
        for s, w in zip(members, want, strict=True):
            got = advs[seqs.index(s)]
            torch.testing.assert_close(
                torch.tensor(got), torch.tensor(per_token_advantages(s, w), dtype=torch.float32), rtol=1e-4, atol=1e-5
            )
    assert metrics["policy/kl"] == pytest.approx(kl_total / n_tokens, rel=1e-4)
    m = learner.step(groups)
    assert m["reward/kl_penalty"] != 0 and m["rollout/trained_tokens"] > 0


def test_the_entropy_bonus_raises_the_entropy_and_is_logged_without_it(
    models: tuple[Path, Path], tmp_path: Path
) -> None:
    def run(coef: float) -> list[float]:
        loss = LossConfig(entropy_coef=coef, max_staleness=100)
        learner = GRPOLearner(models[0], tmp_path / str(coef), lr=1e-3, loss=loss, device="cpu")
        with torch.no_grad():  # a peaked policy (an untrained one is near the maximum entropy)
            learner.model.get_output_embeddings().weight.mul_(6.0)
        flat = one_turn_group(learner.model, 0)
        for it in flat["items"]:
            it["turns"][0]["advantages"] = [0.0] * 4  # no policy signal: only the bonus moves the model
        return [learner.step([flat])["policy/entropy"] for _ in range(4)]

    without, with_bonus = run(0.0), run(0.5)
    assert without[0] > 0 and without == pytest.approx([without[0]] * 4, rel=1e-6)  # logged, unchanged
    assert with_bonus[0] == pytest.approx(without[0], rel=1e-6)
    assert with_bonus[-1] > with_bonus[0] + 0.1


@pytest.mark.parametrize(
    ("setting", "trained", "masked"),
    [("keep", 16, 0), ("mask", 8, 2), ("mask-turn-cap", 12, 1), ("mask-token-cap", 12, 1)],
)
def test_truncated_episodes_are_masked_or_kept_and_counted(
    models: tuple[Path, Path], tmp_path: Path, setting: str, trained: int, masked: int
) -> None:
    learner = GRPOLearner(models[0], tmp_path, lr=1e-2, loss=LossConfig(truncated=setting), device="cpu")
    a, b = one_turn_group(learner.model, 0), one_turn_group(learner.model, 0, seed=1)
    a["items"][0]["meta"] = {"end": "truncated"}  # the turn cap
    a["items"][1]["meta"] = {"end": "terminated"}
    b["items"][0]["turns"][0]["finish_reason"] = "length"  # the token cap
    m = learner.step([a, b])
    assert m["rollout/truncated_turn_cap"] == 1 and m["rollout/truncated_token_cap"] == 1
    assert m["rollout/truncated_masked"] == masked
    assert m["rollout/trained_tokens"] == trained and m["rollout/stale_tokens"] == 0


@pytest.mark.timeout(300)  # two learners and a dozen micro-batches: ~15 s each on an idle 2-core CPU
@pytest.mark.parametrize(
    "loss",
    [
        LossConfig(agg="dr-grpo", norm_len=40, max_staleness=3),
        LossConfig(ratio_level="sequence", agg="seq-mean-token-mean", max_staleness=3, kl_coef=0.1, kl_estimator="k2"),
        LossConfig(is_correction="sequence-mask", is_cap=1.5, max_staleness=3, entropy_coef=0.01),
        LossConfig(is_correction="token-mask", is_cap=1.2, max_staleness=1, kl_coef=0.1, kl_estimator="k1"),
    ],
    ids=["dr-grpo", "gspo-k2", "seq-mis-entropy", "token-mis-k1"],
)
def test_microbatches_give_the_one_batch_gradients_for_every_setting(
    models: tuple[Path, Path], tmp_path: Path, loss: LossConfig
) -> None:
    def run(budget: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        learner = GRPOLearner(
            models[0],
            tmp_path / str(budget),
            lr=1e-3,
            loss=loss,
            device="cpu",
            ref_model_path=models[1],
            max_tokens_per_microbatch=budget,
        )
        learner.version = 2
        learner.snapshots.save(2)  # version 2's weights, then the current ones move away from them
        with torch.no_grad():
            for p in learner.model.parameters():
                p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
        learner.version = 3
        seqs, advs = learner.sequences(make_groups(3, versions=(0, 2, 3), seed=11))
        assert (len(step_plan([len(s) for s in seqs], 1, 0, budget)[0]) > 3) == (budget < 10_000)
        learner.optimizer.zero_grad(set_to_none=True)
        return grads(learner.model), learner.accumulate(seqs, advs)

    (one, m1), (many, m2) = run(1_000_000), run(60)
    assert m1["offpolicy/recomputed_tokens"] > 0 and m1["rollout/trained_tokens"] > 0
    for n in one:
        torch.testing.assert_close(many[n], one[n], rtol=1e-4, atol=1e-7, msg=n)
    for key in ("loss/total", "loss/policy", "policy/kl", "policy/entropy", "offpolicy/kl", "offpolicy/ratio_max"):
        assert m2[key] == pytest.approx(m1[key], rel=1e-5, abs=1e-7), key


# --- dynamic sampling over a real Redis ---------------------------------------------------------


@pytest.mark.integration
@pytest.mark.anyio
@pytest.mark.parametrize(("max_refills", "dropped", "kept"), [(0, 0, 1), (1, 1, 1), (5, 2, 0)])
async def test_dynamic_sampling_drops_flat_groups_and_dispatches_replacements(
    bus, max_refills: int, dropped: int, kept: int
) -> None:
    from userrl.bus.messages import ScoredGroup
    from userrl.envs.datasets import load_tasks
    from userrl.learner.dispatch import Dispatcher
    from userrl.learner.loop import collect_groups

    tasks = {"userrl/Function-v0": load_tasks("userrl/Function-v0", "train")}
    d = Dispatcher(bus, tasks, group_size=2, max_in_flight=2, max_turns=2, sampling={}, groups_per_step=2)
    stream = bus.keys.stream("learner")
    await bus.ensure_group(stream, bus.keys.group("learner"))
    ids = list(dict.fromkeys(r.group_id for r in await d.fill(0)))
    assert len(ids) == 2 and d.dispatched == 2

    async def send(gid: str, scores: tuple[float, float]) -> None:
        items = [
            {"episode_id": f"{gid}-{i}", "score": s, "return": s, "n_turns": 0, "turns": []}
            for i, s in enumerate(scores)
        ]
        await bus.send(stream, ScoredGroup(episode_id=gid, group_id=gid, env_id="userrl/Function-v0", items=items))

    await send(ids[0], (0.5, 0.5))  # flat: no GRPO signal
    await send(ids[1], (0.0, 1.0))
    # what the replacements would bring back: one more flat group, then an informative one
    await send("later-flat", (0.0, 0.0))
    await send("later-ok", (1.0, 0.25))
    got, counts = await collect_groups(bus, d, 2, "learner-0", 10.0, max_refills=max_refills)
    assert counts["zero_variance_dropped"] == dropped and counts["zero_variance_kept"] == kept
    assert counts["dropped"] == 0 and len(got) == 2
    assert d.dispatched == 2 + (1 if dropped else 0)  # the first drop freed a slot: a replacement went out
    assert d.dropped == (1 if dropped else 0)  # the later ones were never dispatched by this dispatcher
    pending = (await bus.redis.xpending(stream, "learner"))["pending"]
    assert pending == 2  # dropped groups are acked at once; the two returned await their checkpoint


# --- pass^k ------------------------------------------------------------------------------------


def test_pass_hat_k_is_all_k_samples_succeeding() -> None:
    from userrl.bus.messages import Trajectory
    from userrl.envs.datasets import load_tasks
    from userrl.learner.evaluation.over_bus import format_report, summarize

    gym = "userrl/Function-v0"
    tasks = load_tasks(gym, "test")[:3]
    scores = {tasks[0]["id"]: [1.0, 1.0, 1.0], tasks[1]["id"]: [1.0, 0.0, 1.0], tasks[2]["id"]: [0.0, 0.0, 0.0]}
    trajs = {
        f"{tid}-{i}": (
            Trajectory(episode_id=f"{tid}-{i}", group_id=tid, env_id=gym, task_id=tid, turns=[], meta={"score": s}),
        )
        for tid, ss in scores.items()
        for i, s in enumerate(ss)
    }
    report = summarize(trajs, {gym: tasks}, 3)["gyms"][gym]
    assert report["pass@1"] == pytest.approx(5 / 9)
    assert report["pass@3"] == pytest.approx(2 / 3)  # at least one of three succeeded: tasks 0 and 1
    assert report["pass^3"] == pytest.approx(1 / 3)  # all three succeeded: task 0 only
    text = format_report({"gyms": {gym: report}, "overall": 0.5}, 3)
    assert "pass^3" in text.splitlines()[0] and "0.333" in text.splitlines()[1]


# --- config ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("train.loss_agg=mean", "train.loss_agg: 'mean' is not allowed"),
        ("train.ratio_level=group", "train.ratio_level: 'group' is not allowed"),
        ("train.kl_estimator=k4", "train.kl_estimator: 'k4' is not allowed"),
        ("train.kl_in=advantage", "train.kl_in: 'advantage' is not allowed"),
        ("train.entropy_coef=-0.1", "train.entropy_coef must be >= 0"),
        ("train.old_logprobs=vllm", "train.old_logprobs: 'vllm' is not allowed"),
        ("train.is_correction=token", "train.is_correction: 'token' is not allowed"),
        ("train.is_cap=0.5", "train.is_cap must be >= 1"),
        ("train.dynamic_sampling=maybe", "train.dynamic_sampling: expected true or false"),
        ("train.dynamic_sampling_max_refills=-1", "train.dynamic_sampling_max_refills must be >= 0"),
        ("train.truncated_episodes=drop", "train.truncated_episodes: 'drop' is not allowed"),
        ("train.kl_coef=-1", "train.kl_coef must be >= 0"),
    ],
)
def test_bad_learner_settings_name_the_field(override: str, needle: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(None, [override])
    assert needle in str(exc.value)


def test_settings_that_need_each_other() -> None:
    with pytest.raises(ConfigError, match="train.is_correction: token-truncate needs train.old_logprobs: recompute"):
        load_config(None, ["train.old_logprobs=engine"])
    load_config(None, ["train.old_logprobs=engine", "train.is_correction=none"])
    with pytest.raises(ConfigError, match="train.loss_agg: dr-grpo .* reward.use_std: false"):
        load_config(None, ["train.loss_agg=dr-grpo"])
    from userrl.runtime import loss_config

    cfg = load_config(
        None,
        [
            "train.loss_agg=dr-grpo",
            "reward.use_std=false",
            "train.ratio_level=sequence",
            "train.kl_in=reward",
            "train.kl_estimator=k2",
            "train.is_correction=sequence-mask",
            "train.is_cap=3",
            "train.truncated_episodes=mask-token-cap",
            "train.max_turns=5",
            "policy.max_new_tokens=32",
        ],
    )
    loss = loss_config(cfg)
    assert (loss.agg, loss.norm_len, loss.ratio_level, loss.kl_in, loss.kl_estimator) == (
        "dr-grpo",
        160,
        "sequence",
        "reward",
        "k2",
    )
    assert (loss.is_correction, loss.is_cap, loss.truncated) == ("sequence-mask", 3.0, "mask-token-cap")
    default = loss_config(load_config(None))
    assert (default.old_logprobs, default.is_correction, default.is_cap) == ("recompute", "token-truncate", 2.0)
    for bad in ({"is_correction": "token-mask", "old_logprobs": "engine"}, {"agg": "dr-grpo"}, {"is_cap": 0.9}):
        with pytest.raises(ValueError):
            LossConfig(**bad)
