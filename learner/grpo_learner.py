"""The GRPO learner: scored groups in, a policy update, new weights out.

Reads top to bottom like the algorithm (cleanrl style)::

    receive B scored groups -> drop stale turns (and truncated episodes, if set) -> per-token
    advantages (recomputed with a KL penalty, with kl_in: reward) -> old logprobs recomputed
    with the sampling versions' weights -> GRPO loss with importance weights -> optimizer step
    -> save weights (safetensors) -> announce the version -> log

The engine's logprobs come from the policy workers with the token ids (the learner never
re-tokenizes a transcript); π_old and the importance weights are :mod:`.offpolicy`'s.

A step's sequences are split into micro-batches under ``max_tokens_per_microbatch`` padded tokens
and gradients accumulate; each micro-batch's loss is divided by the whole step's normalizer, so
the update equals the one-batch update. How many processes run it is the learner's
:class:`~userrl.learner.distributed.Replicas` (one, or the ranks of ``accelerate launch``, over
which the sequences are also split); what trains is its :class:`~userrl.learner.lora.Weights`
(every parameter, or LoRA adapters with merged weights published). Both are chosen once at
construction, so the update below has no branch on either.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from userrl.bus.records import scored_trajectories
from userrl.config import LoraSection, LRSchedule
from userrl.errors import ConfigError, RewardError
from userrl.hardware import resolve_dtype
from userrl.learner.distributed import Replicas, TokenLogprobs, make_replicas
from userrl.learner.lora import Weights, trained_weights
from userrl.learner.losses import LossConfig, agg_normalizer, token_logprobs
from userrl.learner.microbatch import step_plan
from userrl.learner.offpolicy import WeightSnapshots, corrected_loss, mismatch_metrics
from userrl.learner.prepass import kl_in_reward, recompute_old_logprobs
from userrl.learner.rewards import RewardConfig
from userrl.learner.sequences import (
    TrainingSequence,
    assemble,
    collate,
    masked_as_truncated,
    pad_rows,
    per_token_advantages,
    trained_positions,
)
from userrl.learner.weights import prune_versions, write_version

log = structlog.get_logger(__name__)


LR_SCHEDULES: tuple[str, ...] = typing.get_args(LRSchedule)


def lr_factor(schedule: str, step: int, total_steps: int, warmup_steps: int = 0) -> float:
    """The learning rate of optimizer step ``step`` (0-based) as a fraction of ``train.lr``:
    a linear warmup from 0 over ``warmup_steps``, then ``constant``, or decayed to 0 at
    ``total_steps`` (``linear``, or half a cosine), as TRL's and transformers' schedulers do.
    Steps past ``total_steps`` (a resumed run given more steps) keep the last value."""
    if schedule not in LR_SCHEDULES:
        raise ConfigError(f"unknown lr schedule {schedule!r}: expected one of {', '.join(LR_SCHEDULES)}")
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    if schedule == "constant" or total_steps <= warmup_steps:
        return 1.0
    done = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
    if schedule == "linear":
        return 1.0 - done
    return 0.5 * (1.0 + math.cos(math.pi * done))


@dataclass(frozen=True)
class LearnerSettings:
    """Everything a :class:`GRPOLearner` is set up with (the deploy config's ``train`` section
    and the loss built from it: :func:`userrl.runtime.learner_settings`)."""

    lr: float
    """Peak learning rate (AdamW, betas 0.9/0.99, no weight decay)."""
    loss: LossConfig
    """The GRPO objective."""
    seed: int = 0
    """torch's seed, set before the model loads."""
    device: str = "auto"
    """torch device (auto: CUDA when present); under accelerate the launcher assigns each rank's."""
    dtype: str = "auto"
    """Training precision (auto, bf16, fp32): master weights stay fp32, bf16 is autocast."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward."""
    ref_model_path: str | Path | None = None
    """The KL reference model (loss.kl_coef > 0); None = the base model."""
    max_tokens_per_microbatch: int = 16384
    """Padded tokens per forward/backward; gradients accumulate over micro-batches."""
    lora: LoraSection | None = None
    """LoRA adapters (r > 0) instead of full fine-tuning."""
    keep_weights: int = 0
    """Published weight versions kept on disk (0 = all)."""
    lr_schedule: LRSchedule = "constant"
    """Learning-rate schedule (:func:`lr_factor`)."""
    total_steps: int = 0
    """Steps the schedule decays over."""
    warmup_steps: int = 0
    """Steps of linear warmup."""
    reward: RewardConfig | None = None
    """The reward settings kl_in: reward recomputes advantages with (None = the defaults)."""


class GRPOLearner:
    """Holds the model and optimizer; one :meth:`step` per batch of scored groups."""

    def __init__(
        self,
        model_path: str | Path,
        out_dir: str | Path,
        settings: LearnerSettings | None = None,
        *,
        base_model_path: str | Path | None = None,
        **fields: Any,
    ) -> None:
        """The model of ``model_path`` trained into ``out_dir`` with ``settings`` (or the fields
        of :class:`LearnerSettings` as keywords, which also override those of ``settings``).
        ``base_model_path``: the base model a LoRA checkpoint's adapter sits on."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.settings = s = dataclasses.replace(settings, **fields) if settings else LearnerSettings(**fields)
        torch.manual_seed(s.seed)
        self.torch = torch
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        # how many processes run each call, and what the model trains: chosen here, once
        self.replicas: Replicas = make_replicas(s.device)
        self.weights: Weights = trained_weights(s.lora, self.replicas.sharded)
        self.is_main = self.replicas.is_main
        self.device = self.replicas.device(s.device)
        # Master weights and optimizer state stay fp32; bf16 is autocast for forward/backward.
        self.dtype = resolve_dtype(s.dtype, self.device)
        self.max_tokens = s.max_tokens_per_microbatch
        self.keep_weights = s.keep_weights
        self.base_model_path = str(base_model_path or model_path)  # what LoRA adapters sit on
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.model = AutoModelForCausalLM.from_pretrained(
            self.weights.load_from(str(model_path), self.base_model_path), dtype=torch.float32
        ).to(self.device)
        if s.gradient_checkpointing:
            self.model.gradient_checkpointing_enable()
            self.model.config.use_cache = False
        self.model = self.weights.wrap(self.model, str(model_path))
        log.info(
            "learner.ready",
            device=self.device,
            dtype=self.dtype,
            gradient_checkpointing=s.gradient_checkpointing,
            lora=self.weights.lora,
            microbatch_tokens=self.max_tokens,
        )
        self.loss_cfg = s.loss
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=s.lr, weight_decay=0.0, betas=(0.9, 0.99))
        lr_factor(s.lr_schedule, 0, s.total_steps, s.warmup_steps)  # a bad schedule fails before training
        # the forward pass the engines wrap; the inner HF model keeps the masked-head fast path
        self.net, self.optimizer = self.replicas.prepare(TokenLogprobs(self.weights.inner(self.model)), optimizer)
        # the trainable weights of recent versions (old_logprobs: recompute); taken from the
        # prepared module, whose parameters FSDP may have replaced by sharded ones
        self.snapshots = WeightSnapshots([p for p in self.net.parameters() if p.requires_grad])
        self.reward_cfg = s.reward  # kl_in: reward recomputes advantages with it
        self.ref = None
        if s.loss.kl_coef > 0:
            self.ref = (
                AutoModelForCausalLM.from_pretrained(s.ref_model_path or self.base_model_path).to(self.device).eval()
            )
        self.version = 0
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    # -- every rank runs each call; rank 0 leads the others into it ------------------------------
    def step(self, groups: list[dict[str, Any]]) -> dict[str, Any]:
        """One update on ``groups`` (the same batch on every rank)."""
        self.replicas.lead("step", (groups,))
        return self.update(groups)

    def save_weights(self) -> Path:
        """Weights of the current version as one safetensors file; older versions pruned."""
        self.replicas.lead("save_weights", ())
        state = self.full_state_dict()  # every rank: a collective under FSDP
        weights = self.out / "weights"
        path = weights / f"v{self.version:05d}.safetensors"
        if self.is_main:
            path = write_version(
                state, weights, self.version, bool(getattr(self.model.config, "tie_word_embeddings", False))
            )
            self.weights.save(self.model, weights / f"v{self.version:05d}-adapter")
            if self.keep_weights:
                prune_versions(weights, self.keep_weights)
        return path

    def save_model(self, out: str | Path) -> Path:
        """A full Hugging Face folder (model + tokenizer; LoRA merged), for evaluation and later runs."""
        self.replicas.lead("save_model", (str(out),))
        return self.write_model(Path(out))

    def checkpoint(self, extra: dict[str, Any] | None = None) -> Path:
        """The model, the optimizer state and the version (plus ``extra``) in ``out/checkpoint``."""
        self.replicas.lead("checkpoint", (extra,))
        ck = self.write_model(self.out / "checkpoint")
        self.replicas.save_optimizer(self.optimizer.state_dict(), ck)
        if self.is_main:
            self.weights.save(self.model, ck / "adapter")
            (ck / "state.json").write_text(
                json.dumps(
                    {"version": self.version, "time": time.time(), "base_model": self.base_model_path, **(extra or {})}
                )
            )
        return ck

    def stop(self) -> None:
        """Release the other ranks (rank 0, at the end of a run) and close the process group;
        nothing in one process."""
        self.replicas.lead("stop", ())
        self.replicas.close()

    # -- one update -----------------------------------------------------------------------------
    def sequences(self, groups: list[dict[str, Any]]) -> tuple[list[TrainingSequence], list[list[float]]]:
        """Every trainable trajectory of the batch as one token sequence, with its advantages."""
        seqs, advs = [], []
        for gi, g in enumerate(groups):
            for item in scored_trajectories(g["items"]):
                turns = [t for t in item.turns or () if t.token_ids]
                if not turns:
                    continue
                try:
                    seq = assemble(turns)
                    advs.append(per_token_advantages(seq, [t.advantages or [] for t in turns]))
                except RewardError as exc:
                    log.warning("learner.bad_trajectory", episode_id=item.episode_id, error=str(exc))
                    continue
                seq.group = gi
                seq.cut_turn_cap = item.meta.get("end") == "truncated"
                seqs.append(seq)
        return seqs, advs

    def update(self, groups: list[dict[str, Any]]) -> dict[str, Any]:
        """The GRPO update on ``groups`` (this rank's share of it; :meth:`step` leads the others)."""
        # the schedule follows the version, so a resumed run continues it where it stopped
        opt = self.settings
        lr = opt.lr * lr_factor(opt.lr_schedule, self.version, opt.total_steps, opt.warmup_steps)
        seqs, advs = self.sequences(groups)
        if not seqs:
            return {"learner/skipped": 1}
        extra: dict[str, Any] = {}
        if self.ref is not None and self.loss_cfg.kl_in == "reward":
            advs, extra = kl_in_reward(self, seqs)
        self.optimizer.zero_grad(set_to_none=True)
        metrics = self.accumulate(seqs, advs)
        if metrics["rollout/trained_tokens"] > 0:
            grad_norm = self.replicas.clip_grad_norm(self.net, 1.0)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            self.optimizer.step()
        else:
            grad_norm = 0.0
        self.version += 1
        # versions older than this can only sample turns the staleness bound drops
        self.snapshots.prune(self.version - self.loss_cfg.max_staleness)
        lags = [self.version - 1 - v for s in seqs for v in s.policy_version if v >= 0]
        metrics.update(extra)
        metrics.update(
            {
                "policy/grad_norm": grad_norm,
                "policy/lr": lr,
                "policy/version": self.version,
                "rollout/staleness_mean": sum(lags) / len(lags) if lags else 0.0,
                "rollout/truncated_turn_cap": sum(s.cut_turn_cap for s in seqs),
                "rollout/truncated_token_cap": sum(s.cut_token_cap for s in seqs),
                "rollout/truncated_masked": sum(masked_as_truncated(s, self.loss_cfg.truncated) for s in seqs),
            }
        )
        return metrics

    def train_masks(self, seqs: list[TrainingSequence]) -> list[list[int]]:
        """Per sequence, 1 on the tokens this step trains (:func:`trained_positions`)."""
        c = self.loss_cfg
        return [trained_positions(s, self.version, c.max_staleness, c.truncated) for s in seqs]

    def accumulate(self, seqs: list[TrainingSequence], advs: list[list[float]]) -> dict[str, Any]:
        """Gradients of the step's loss over ``seqs`` into ``.grad`` (this rank's share, summed
        over micro-batches; the engine sums the ranks'), and the step's loss metrics."""
        cfg = self.loss_cfg
        keep = self.train_masks(seqs)
        trained = [sum(k) for k in keep]
        stale = sum(v >= 0 and self.version - v > cfg.max_staleness for s in seqs for v in s.policy_version)
        norm = agg_normalizer(trained, cfg.agg, cfg.norm_len)
        world = self.replicas.world
        mine, n_micro = step_plan([len(s) for s in seqs], world, self.replicas.rank, self.max_tokens)
        plan = [(mine[k], False) if k < len(mine) else ([0], True) for k in range(n_micro)]
        # a rank with fewer micro-batches runs empty ones: collectives must line up
        old, recomputed, missing = recompute_old_logprobs(self, seqs, keep, plan)
        sums: dict[str, float] = {}
        maxes: dict[str, float] = {}
        if sum(trained) > 0:  # the same on every rank: all see the whole batch
            for k, (idx, empty) in enumerate(plan):
                part, top = self._micro(seqs, advs, keep, old, idx, norm, world, empty, last=k == n_micro - 1)
                for key, v in part.items():
                    sums[key] = sums.get(key, 0.0) + v
                for key, v in top.items():
                    maxes[key] = max(maxes.get(key, -math.inf), v)
        sums = dict(zip(sums, self.replicas.sum(list(sums.values())), strict=True))
        maxes = dict(zip(maxes, self.replicas.max(list(maxes.values())), strict=True))
        n = max(sums.get("tokens", 0.0), 1.0)
        out = {
            "loss/total": sums.get("loss", 0.0),
            "loss/policy": sums.get("loss_policy", 0.0),
            "policy/clip_frac": sums.get("clip", 0.0) / n,
            "policy/kl": sums.get("kl", 0.0) / n,
            "policy/ratio_mean": sums.get("ratio", 0.0) / n,
            "policy/entropy": sums.get("entropy", 0.0) / n,
            "rollout/stale_tokens": stale,
            "rollout/trained_tokens": sum(trained),
            "offpolicy/recomputed_tokens": recomputed,
            "offpolicy/missing_tokens": missing,
        }
        if "mm_n" in sums:
            out.update(mismatch_metrics({k[3:]: v for k, v in sums.items() if k.startswith("mm_")}, maxes))
        return out

    def _micro(
        self,
        seqs: list[TrainingSequence],
        advs: list[list[float]],
        keep: list[list[int]],
        old: list[list[float | None]],
        idx: list[int],
        norm: float,
        world: int,
        empty: bool,
        last: bool,
    ) -> tuple[dict[str, float], dict[str, float]]:
        torch = self.torch
        c = self.loss_cfg
        batch = {
            k: v.to(self.device)
            for k, v in collate([seqs[i] for i in idx], self.pad_id, [advs[i] for i in idx]).items()
        }
        width = batch["input_ids"].shape[1]
        mask = pad_rows([keep[i] for i in idx], 0, torch.float32, width).to(self.device) * (0.0 if empty else 1.0)
        recomputed = pad_rows([[v is not None for v in old[i]] for i in idx], False, torch.bool, width)
        old_values = pad_rows([[0.0 if v is None else v for v in old[i]] for i in idx], 0.0, torch.float32, width)
        self.net.train()
        with self.replicas.sync(self.net, last):
            with self.autocast():
                logp, entropy = self.net(
                    batch["input_ids"],
                    batch["attention_mask"],
                    mask,
                    c.temperature,
                    "grad" if c.entropy_coef else "value",
                )
                logp, entropy = logp.float(), entropy.float()
                ref_logp = None
                if self.ref is not None and c.kl_in == "loss":
                    with torch.no_grad():
                        ref_logp = token_logprobs(
                            self.ref, batch["input_ids"], batch["attention_mask"], c.temperature, mask=mask
                        ).float()
            # the learner's logprob under the sampling version's weights: this very pass for
            # tokens of the current version, the recomputed one for older kept versions
            current = batch["policy_version"] == self.version
            learner_old = torch.where(current, logp.detach(), old_values.to(self.device))
            loss, m, (mm, top) = corrected_loss(
                logp,
                entropy,
                batch["behaviour_logprobs"],
                batch["advantages"],
                mask,
                c,
                learner_old=learner_old,
                known=current | recomputed.to(self.device),
                ref_logp=ref_logp,
                normalizer=norm,
            )
            # DDP/FSDP average gradients over ranks; the step's loss is their sum
            (loss * world).backward()
        n = float(mask.sum())
        part = {
            "loss": float(loss.detach()),
            "loss_policy": m["loss/policy"],
            "clip": m["policy/clip_frac"] * n,
            "kl": m["policy/kl"] * n,
            "ratio": m["policy/ratio_mean"] * n,
            "entropy": m["policy/entropy"] * n,
            "tokens": n,
            **{f"mm_{k}": v for k, v in mm.items()},
        }
        return part, top

    def autocast(self) -> Any:
        """bf16 autocast for forward passes when the learner trains in bf16, else nothing."""
        if self.dtype != "bf16":
            return contextlib.nullcontext()
        return self.torch.autocast(self.torch.device(self.device).type, dtype=self.torch.bfloat16)

    # -- publish ------------------------------------------------------------------------------
    def full_state_dict(self) -> dict[str, Any]:
        """The policy's weights under the base model's names (LoRA merged; gathered under FSDP)."""
        return self.weights.state_dict(self.model, lambda: self.replicas.full_state_dict(self.net))

    def write_model(self, out: Path) -> Path:
        """The Hugging Face folder of :meth:`save_model` (every rank gathers, rank 0 writes)."""
        state = self.full_state_dict()
        if self.is_main:
            self.weights.inner(self.model).save_pretrained(out, state_dict=state)
            self.tokenizer.save_pretrained(out)
        return out

    # -- resume ---------------------------------------------------------------------------------
    @classmethod
    def resume(
        cls, out_dir: str | Path, settings: LearnerSettings | None = None, **fields: Any
    ) -> tuple[GRPOLearner, dict[str, Any]]:
        """The learner of ``out_dir/checkpoint``: its weights, optimizer state and version (and
        the checkpoint's state.json, for the caller's own entries)."""
        ck = Path(out_dir) / "checkpoint"
        state = json.loads((ck / "state.json").read_text())
        learner = cls(ck, out_dir, settings, base_model_path=state.get("base_model"), **fields)
        learner.optimizer.load_state_dict(learner.torch.load(learner.replicas.optimizer_file(ck)))
        learner.version = int(state["version"])
        return learner, state
