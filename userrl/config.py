"""Deploy configs: one YAML per deploy, validated once at load.

Every section is a dataclass with a docstring under each field; a component's own settings
class is the section where one exists (``bus`` is :class:`~userrl.bus.settings.BusSettings`), so
each field is defined once. :func:`load_config` reads YAML, applies ``--set a.b=c`` overrides, and
builds the dataclasses; a wrong key, type or value raises :class:`~userrl.errors.ConfigError`
naming the field (``workers.env.replicas``) and what is allowed.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from userrl.bus.keys import RESERVED
from userrl.bus.settings import BusSettings
from userrl.envs.registry import get_env_class, list_envs
from userrl.errors import ConfigError, UnknownEnvError
from userrl.learner.rewards import RewardConfig

ROLE_NAMES = ("env", "policy", "user", "reward", "learner")


#: the ``bus`` section is the bus's own settings class: each knob is defined (and checked) once
BusConfig = BusSettings


@dataclass(frozen=True)
class RoleConfig:
    replicas: int = 1
    """How many processes of this role the launcher starts (replicas in compose/k8s)."""
    concurrency: int = 64
    """Messages one process handles at once."""

    def __post_init__(self) -> None:
        if self.replicas < 0:
            raise ConfigError(f"replicas must be >= 0, got {self.replicas}")
        if self.concurrency < 1:
            raise ConfigError(f"concurrency must be >= 1, got {self.concurrency}")


def _default_workers() -> dict[str, RoleConfig]:
    return {
        "env": RoleConfig(replicas=1, concurrency=256),
        "policy": RoleConfig(replicas=1, concurrency=64),
        "user": RoleConfig(replicas=1, concurrency=64),
        "reward": RoleConfig(replicas=1, concurrency=64),
    }


@dataclass(frozen=True)
class VLLMOptions:
    """vLLM engine settings of the policy workers (policy.backend: vllm), passed to AsyncEngineArgs."""

    tensor_parallel_size: int = 1
    """GPUs one engine shards the model over (8B fits one 80 GB GPU; 32B wants 2-4)."""
    gpu_memory_utilization: float = 0.85
    """Fraction of each GPU's memory vLLM may take (weights + KV cache); lower it to share a GPU."""
    max_model_len: int = 0
    """Context cap of the engine in tokens (0 = the model's own); smaller leaves more KV cache."""
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    """Weights and activation dtype of the engine (auto = the checkpoint's)."""
    enable_prefix_caching: bool = True
    """Reuse the KV cache of shared prefixes: a dialogue's next turn extends its last prompt."""
    kv_cache_gb: float = 0.0
    """KV cache per engine in GiB (0 = from gpu_memory_utilization on GPUs; 1 GiB on CPUs, where
    vLLM would take gpu_memory_utilization of the machine's RAM)."""
    engine_kwargs: dict[str, Any] = field(default_factory=dict)
    """Any other AsyncEngineArgs field, e.g. {enforce_eager: true, max_num_seqs: 256}."""

    def __post_init__(self) -> None:
        if self.tensor_parallel_size < 1:
            raise ConfigError(f"policy.vllm.tensor_parallel_size must be >= 1, got {self.tensor_parallel_size}")
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise ConfigError(
                f"policy.vllm.gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}"
            )
        if self.max_model_len < 0:
            raise ConfigError(f"policy.vllm.max_model_len must be >= 0 (0 = the model's), got {self.max_model_len}")
        if self.kv_cache_gb < 0:
            raise ConfigError(f"policy.vllm.kv_cache_gb must be >= 0 (0 = the default), got {self.kv_cache_gb}")
        clash = sorted(
            set(self.engine_kwargs)
            & {
                "model",
                "seed",
                "worker_extension_cls",
                "logprobs_mode",
                "kv_cache_memory_bytes",
                *(f.name for f in dataclasses.fields(self)),
            }
        )
        if clash:
            raise ConfigError(
                f"policy.vllm.engine_kwargs: {clash} are set elsewhere (policy.model, seed, kv_cache_gb, "
                "or their own policy.vllm field); remove them from engine_kwargs"
            )

    def engine_args(self) -> dict[str, Any]:
        """Keyword arguments for the engine: the named options, then engine_kwargs."""
        out: dict[str, Any] = {
            "tensor_parallel_size": self.tensor_parallel_size,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "dtype": self.dtype,
            "enable_prefix_caching": self.enable_prefix_caching,
        }
        if self.max_model_len:
            out["max_model_len"] = self.max_model_len
        if self.kv_cache_gb:
            out["kv_cache_memory_bytes"] = int(self.kv_cache_gb * 2**30)
        return {**out, **self.engine_kwargs}


@dataclass(frozen=True)
class PolicyConfig:
    backend: Literal["hf", "vllm", "openai", "scripted"] = "hf"
    """Generation backend: hf (transformers), vllm (GPU or CPU), openai (API models), scripted (gym experts)."""
    model: str = "tiny"
    """'tiny' (built locally in the run dir), a local path, or a hub name you have."""
    base_url: str = ""
    """For backend openai: the endpoint, e.g. http://localhost:8000/v1."""
    device: str = "auto"
    """torch device of the hf backend: auto (CUDA when present), cpu, cuda, cuda:1, ..."""
    temperature: float = 1.0
    """Sampling temperature for training rollouts."""
    max_new_tokens: int = 48
    """Tokens generated per turn."""
    tools: bool = False
    """Render the interact_with_env tool schema into the system turn (Hermes tool calls, for real
    Qwen-style models). The tiny model learns the plain [action]/[answer] prefixes instead."""
    tiny_size: dict[str, int] = field(
        default_factory=lambda: {
            "hidden_size": 128,
            "intermediate_size": 384,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 32,
        }
    )
    """Qwen3Config fields of the locally built tiny model (model: tiny)."""
    vllm: VLLMOptions = field(default_factory=VLLMOptions)
    """Engine settings of the vllm backend (tensor parallelism, memory, context, dtype, ...)."""
    api_key_env: str = "OPENAI_API_KEY"
    """For backend openai: environment variable holding the API key ('' = send none)."""
    timeout_s: float = 60.0
    """For backend openai: deadline of one HTTP attempt."""
    max_retries: int = 4
    """For backend openai: retries of a transient failure (408, 429, 5xx, timeout, dropped
    connection) with exponential backoff; other 4xx fail at once."""
    extra_body: dict[str, Any] = field(default_factory=dict)
    """For backend openai: extra request fields sent with every request, e.g.
    {chat_template_kwargs: {enable_thinking: false}} for vLLM serving Qwen3."""


@dataclass(frozen=True)
class UserSFTConfig:
    """The user model (``userrl sft-user``, docs/users.md): a tiny model fine-tuned with TRL on
    the scripted users' replies and judge verdicts, prompted as the LLM user is."""

    gyms: list[str] = field(default_factory=list)
    """Gyms whose user and judge it learns (their train split; held out: their test split);
    empty = train.gyms."""
    episodes_per_task: int = 3
    """Episodes played per train task to collect the user's queries: the first by the scripted
    expert, the rest mixing in other tasks' expert actions, other steps and garbled text."""
    mix: float = 0.5
    """In the mixed episodes, the chance that a turn's action is another task's or another
    step's expert action (questions and guesses the user must turn down), not this task's."""
    epochs: int = 4
    """SFT epochs."""
    verdict_repeats: int = 1
    """How many times each example whose decision is not its query's most common one (a question
    that uncovers a detail, where most uncover nothing) is in the SFT data; 1 = as collected.
    Without it a tiny model can settle on the common verdict for every question."""
    lr: float = 3e-3
    """SFT learning rate (the tiny model wants a large one)."""
    max_length: int = 1024
    """Examples longer than this many tokens (prompt and reply) are left out, not cut."""
    heldout_tasks: int = 15
    """Test tasks per gym whose queries measure the model (parse and agreement rates)."""
    size: dict[str, int] = field(default_factory=dict)
    """Qwen3Config fields of the user model; empty = policy.tiny_size (the policy's tiny model)."""
    out: str = ""
    """Where the model goes; empty = {run_dir}/user-model."""
    serve: bool = False
    """``userrl train`` builds the user model if it is missing and, with user.backend openai, serves
    it with vLLM (``userrl serve``) at user.base_url as user.model for the job, then stops it."""

    def __post_init__(self) -> None:
        for name in ("episodes_per_task", "epochs", "verdict_repeats", "max_length", "heldout_tasks"):
            if getattr(self, name) < 1:
                raise ConfigError(f"user.sft.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.mix <= 1.0:
            raise ConfigError(f"user.sft.mix must be in [0, 1], got {self.mix}")
        if self.lr <= 0:
            raise ConfigError(f"user.sft.lr must be > 0, got {self.lr}")


@dataclass(frozen=True)
class UserConfig:
    backend: Literal["scripted", "openai", "hf"] = "scripted"
    """Simulated user/judge backend."""
    model: str = ""
    """Model name (openai) or local path (hf)."""
    base_url: str = ""
    """OpenAI-compatible endpoint, e.g. http://localhost:8000/v1 (vLLM serving Qwen3-32B)."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the API key (keys never go in configs)."""
    per_gym: dict[str, str] = field(default_factory=dict)
    """Backend override per env id, e.g. {userrl/Turtle-v0: openai}."""
    temperature: float = 0.0
    """Sampling temperature of LLM users and judges (the paper: 0)."""
    max_tokens: int = 512
    """Reply length cap of LLM users, openai and hf (Qwen3 thinking needs more, or disable it)."""
    timeout_s: float = 60.0
    """Deadline of one HTTP attempt."""
    max_retries: int = 4
    """HTTP client retries of a transient failure (429, 5xx, timeout, dropped connection)."""
    backoff_s: float = 0.5
    """First backoff delay of the client and the worker (doubles, capped)."""
    retries: int = 2
    """Worker retries after the client gave up; then the episode fails as an infrastructure error."""
    structured_output: Literal["auto", "always", "never"] = "auto"
    """openai backend: send each query's reply schema as response_format json_schema, so the server
    can only generate replies of the gym's format (docs/users.md). auto: asks again without it
    where the server refuses it; always: a refusal fails the query; never: send none."""
    model_version: str | int = ""
    """The user model's version (text; a number is read as text), stamped on every user turn with its name (``hf:NAME@VERSION``),
    e.g. a checkpoint step. Empty: the hf backend stamps a fingerprint of the weight files, the
    openai backend the model name alone."""
    seat: bool = False
    """Let a person with the web view's token take the user's seat of a live episode
    (docs/users.md). Off: user workers never look for claims and the view stays read-only."""
    seat_timeout_s: float = 60.0
    """A claim on the user's seat that its page stops renewing for this long expires, and the
    simulator answers the episode's questions again."""
    share_ttl_s: float = 30.0
    """LLM backends at temperature 0: identical prompts within this many seconds are generated
    once and the reply shared (the judge calls of a GRPO group on the same answer); 0 = never."""
    sft: UserSFTConfig = field(default_factory=UserSFTConfig)
    """How ``userrl sft-user`` builds the user model (a tiny stand-in for an LLM user; docs/users.md)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "model_version", str(self.model_version))  # `--set ...=3` reads as a number
        if self.seat_timeout_s < 1:
            raise ConfigError(f"user.seat_timeout_s must be >= 1, got {self.seat_timeout_s}")
        for name in ("temperature", "timeout_s", "backoff_s", "share_ttl_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"user.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("max_tokens", "timeout_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"user.{name} must be > 0, got {getattr(self, name)}")
        if self.max_retries < 0 or self.retries < 0:
            raise ConfigError("user.max_retries and user.retries must be >= 0")


@dataclass
class RewardSection(RewardConfig):
    """Turn credits, trajectory score and normalization (docs/gyms.md), plus group collection."""

    group_timeout_s: float = 600.0
    """A group still incomplete this long after its first member arrived is dropped as a whole."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.group_timeout_s <= 0:
            raise ConfigError(f"reward.group_timeout_s must be > 0, got {self.group_timeout_s}")


@dataclass(frozen=True)
class LoraSection:
    """LoRA adapters (the [lora] extra, peft) for GRPO and SFT; r = 0 trains the full model."""

    r: int = 0
    """Adapter rank; 0 = no LoRA (full fine-tuning)."""
    alpha: int = 16
    """lora_alpha: the update is scaled by alpha / r."""
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    """Names of the linear layers that get adapters (Qwen/Llama attention projections by default)."""
    dropout: float = 0.0
    """Dropout on the adapter input (0 keeps the learner's logprobs deterministic)."""

    def __post_init__(self) -> None:
        if self.r < 0 or self.alpha < 1:
            raise ConfigError(f"train.lora: r must be >= 0 and alpha >= 1, got r={self.r}, alpha={self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"train.lora.dropout must be in [0, 1), got {self.dropout}")
        if self.r and not self.target_modules:
            raise ConfigError("train.lora.target_modules must name at least one layer when r > 0")


#: GRPO learning-rate schedules (:func:`userrl.learner.grpo_learner.lr_factor` computes them)
LRSchedule = Literal["constant", "linear", "cosine"]


@dataclass(frozen=True)
class TrainConfig:
    """The main job: SFT cold start, then GRPO, then evaluation (``userrl train``)."""

    gyms: list[str] = field(default_factory=lambda: ["userrl/Intention-v0", "userrl/Turtle-v0"])
    """Gyms trained on (their train split) and evaluated (their test split)."""
    max_turns: int = 6
    """Turn cap of training and evaluation episodes."""
    sft_epochs: int = 10
    """Epochs of SFT on the scripted experts' demonstrations (0 = skip the cold start)."""
    sft_lr: float = 3e-3
    """SFT learning rate (the tiny model wants a large one; the paper used 1e-5 for 8B)."""
    sft_data: str = ""
    """A JSONL file of {"messages": [...]} dialogues; empty = demonstrations from scripted experts."""
    steps: int = 60
    """GRPO steps (one optimizer step per batch of groups)."""
    groups_per_step: int = 4
    """B: groups (tasks) per GRPO step."""
    group_size: int = 4
    """G: episodes per task, the GRPO group."""
    lr: float = 1e-3
    """GRPO learning rate (the peak, with a schedule)."""
    lr_schedule: LRSchedule = "constant"
    """GRPO learning-rate schedule over ``steps``: constant, or decayed to 0 (linear, cosine)."""
    warmup_steps: int = 0
    """GRPO steps of linear learning-rate warmup from 0 before the schedule."""
    clip_low: float = 0.2
    """PPO clip epsilon below 1."""
    clip_high: float = 0.2
    """PPO clip epsilon above 1."""
    kl_coef: float = 0.0
    """KL penalty to the SFT model (0 = none, as in the paper)."""
    max_staleness: int = 1
    """Turns generated more than this many versions before the learner's are dropped."""
    loss_agg: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "dr-grpo"] = "token-mean"
    """How per-token losses become the step's loss: token-mean (every trained token weighs the
    same; the paper's), seq-mean-token-mean (each dialogue's token mean, then the mean over
    dialogues), seq-mean-token-sum (each dialogue's token sum, then the mean), or dr-grpo
    (Dr. GRPO: the token sum over dialogues x max_turns x policy.max_new_tokens, a constant, so
    no length divides; needs reward.use_std: false, its other half)."""
    ratio_level: Literal["token", "sequence"] = "token"
    """Importance ratio of the PPO clip: per token, or GSPO's per dialogue (the geometric mean of
    its trained tokens' ratios, GSPO-token's form for per-token advantages; GSPO clips at
    3e-4/4e-4: set clip_low/clip_high)."""
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"
    """Estimator of the per-token KL to the reference (Schulman): k1 = log pi/pi_ref, k2 =
    (log pi/pi_ref)^2 / 2, k3 = pi_ref/pi - 1 - log(pi_ref/pi) (never negative)."""
    kl_in: Literal["loss", "reward"] = "loss"
    """Where kl_coef x KL goes: the loss (per token, GRPO's), or the reward (each turn's reward
    loses kl_coef x its tokens' KL of the sampling policy to the reference, and the learner
    recomputes the advantages with the reward section's settings)."""
    entropy_coef: float = 0.0
    """Entropy bonus (>= 0; 0 = none): the loss subtracts it times the policy's entropy on the
    trained tokens, aggregated like the policy loss. policy/entropy is logged every step."""
    old_logprobs: Literal["recompute", "engine"] = "recompute"
    """pi_old of the PPO ratio. recompute: the learner's own logprobs under the weights of the
    version that sampled each turn (the last max_staleness versions' trainable weights are kept
    in memory; the current version's come free with the gradient pass; a version not kept, after
    a resume, falls back to the engine's, counted as offpolicy/missing_tokens). engine: the
    logprobs the policy workers recorded (vLLM's differ from the learner's even at staleness 0)."""
    is_correction: Literal["none", "token-truncate", "token-mask", "sequence-truncate", "sequence-mask"] = (
        "token-truncate"
    )
    """Importance weight pi_old / pi_engine on each token's loss, correcting the sampler/trainer
    mismatch: per token (TIS) or per dialogue (the product over its trained tokens), truncated
    at is_cap or masked (weight 0) above it (MIS); none = no weight. Needs old_logprobs: recompute.
    The mismatch (offpolicy/kl, offpolicy/ratio_min|mean|max, offpolicy/capped_frac) is logged
    every step whatever this is."""
    is_cap: float = 2.0
    """C, the cap of the importance weight (>= 1; TIS's 2)."""
    dynamic_sampling: bool = False
    """DAPO's dynamic sampling: a group whose episodes all scored the same (no GRPO signal) is
    dropped and a replacement is dispatched, until the step has groups_per_step informative
    groups (rollout/zero_variance_dropped counts them)."""
    dynamic_sampling_max_refills: int = 16
    """With dynamic_sampling, at most this many groups are dropped per step; past it the step
    trains on the zero-variance groups that come (rollout/zero_variance_kept)."""
    truncated_episodes: Literal["keep", "mask", "mask-turn-cap", "mask-token-cap"] = "keep"
    """Episodes cut by the turn cap (max_turns) or by the token cap (a generation that hit
    policy.max_new_tokens): keep trains on them (the paper's), mask drops both kinds from the loss
    (their scores still count in their group), mask-turn-cap / mask-token-cap only one kind.
    Counted every step (rollout/truncated_turn_cap, _token_cap, _masked)."""
    eval_tasks: int = 15
    """Test tasks per gym in the final evaluation."""
    eval_temperature: float = 1.0
    """Sampling temperature of the final evaluation. The paper evaluates at 0 (greedy); a model
    of a million parameters loops under greedy decoding, so the CPU default samples like training."""
    eval_samples: int = 4
    """Episodes per test task in the final evaluation (averaged; fixed seed)."""
    time_budget_s: float = 400.0
    """GRPO stops early after this many seconds (the CPU default must finish in 10 minutes)."""
    checkpoint_every: int = 10
    """Save a resumable checkpoint every N steps (run_dir/learner/checkpoint)."""
    resume: bool = False
    """Continue GRPO from run_dir/learner/checkpoint (model, optimizer, version, step) if it exists."""
    device: str = "auto"
    """torch device of the learner, SFT and the final evaluation: auto (CUDA when present), cpu,
    cuda, cuda:1, ..."""
    dtype: Literal["auto", "bf16", "fp32"] = "auto"
    """Training precision. auto: bf16 on CUDA, fp32 on CPUs (emulated bf16 is ~4x slower on CPUs
    without AVX512-BF16/AMX; ask for bf16 explicitly on one that has them)."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward (saves memory on big models; slower, useless for tiny)."""
    max_tokens_per_microbatch: int = 16384
    """Padded tokens (rows x longest) per forward/backward; a step's sequences are split into
    micro-batches under this budget and gradients accumulate (the loss is the same token-mean)."""
    accelerate_config: str = ""
    """An `accelerate config` YAML: the learner runs under `accelerate launch` with it (DDP, FSDP2);
    empty = one process. `userrl learn/train --accelerate-config FILE` sets it too."""
    lora: LoraSection = field(default_factory=LoraSection)
    """LoRA adapters for GRPO and SFT (r: 0 = off); the learner publishes merged weights."""
    keep_weights: int = 3
    """Published weight versions kept on disk (older ones are deleted); >= 2 so the version a
    policy worker may still be loading is never removed."""
    weight_sync: Literal["disk", "memory"] = "disk"
    """How new weights reach vLLM policy engines: disk (the engines load each published file) or
    memory (the learner also broadcasts them into the engines, gloo on CPUs, NCCL on GPUs; the file
    stays the fallback). One-process learners only (not under accelerate_config)."""
    weight_sync_host: str = "127.0.0.1"
    """The learner's address the policy engines connect to for weight_sync: memory."""
    report_to: list[str] = field(default_factory=list)
    """Experiment trackers, as TRL's report_to: any of tensorboard, wandb, trackio (none by
    default). SFT passes them to TRL; GRPO logs its metrics.jsonl numbers to them every step
    (tensorboard: run_dir/tensorboard; wandb offline unless WANDB_API_KEY or WANDB_MODE)."""

    def __post_init__(self) -> None:
        _positive(
            self,
            "train",
            (
                "max_turns",
                "steps",
                "groups_per_step",
                "group_size",
                "eval_tasks",
                "eval_samples",
                "checkpoint_every",
                "max_tokens_per_microbatch",
            ),
        )
        if self.weight_sync == "memory" and self.accelerate_config:
            raise ConfigError(
                "train.weight_sync: memory needs a one-process learner (its rank 0 would have to gather "
                "sharded weights); unset train.accelerate_config or use weight_sync: disk"
            )
        if self.keep_weights < 2:
            raise ConfigError(
                f"train.keep_weights must be >= 2 (a policy worker may be loading the previous "
                f"version), got {self.keep_weights}"
            )
        if self.eval_temperature < 0:
            raise ConfigError(f"train.eval_temperature must be >= 0, got {self.eval_temperature}")
        if self.warmup_steps < 0:
            raise ConfigError(f"train.warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.sft_epochs < 0:
            raise ConfigError(f"train.sft_epochs must be >= 0, got {self.sft_epochs}")
        if self.max_staleness < 0:
            raise ConfigError(f"train.max_staleness must be >= 0, got {self.max_staleness}")
        if self.entropy_coef < 0:
            raise ConfigError(f"train.entropy_coef must be >= 0, got {self.entropy_coef}")
        if self.kl_coef < 0:
            raise ConfigError(f"train.kl_coef must be >= 0, got {self.kl_coef}")
        if self.is_cap < 1:
            raise ConfigError(
                f"train.is_cap must be >= 1 (a cap below 1 down-weights on-policy tokens), got {self.is_cap}"
            )
        if self.is_correction != "none" and self.old_logprobs != "recompute":
            raise ConfigError(
                f"train.is_correction: {self.is_correction} needs train.old_logprobs: recompute (with the engine's "
                "logprobs as pi_old the weight pi_old/pi_engine is 1); set train.is_correction: none"
            )
        if self.dynamic_sampling_max_refills < 0:
            raise ConfigError(
                f"train.dynamic_sampling_max_refills must be >= 0, got {self.dynamic_sampling_max_refills}"
            )
        if not 0 <= self.clip_low < 1 or self.clip_high < 0:
            raise ConfigError(
                f"train.clip_low must be in [0, 1) and train.clip_high >= 0, got {self.clip_low} and {self.clip_high}"
            )
        if self.group_size < 2:
            raise ConfigError("train.group_size must be >= 2: GRPO normalizes scores within a group")
        for name in ("sft_lr", "lr", "time_budget_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"train.{name} must be > 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class RedisTLSConfig:
    """TLS settings of a ``rediss://`` URL, passed to redis-py (``ssl_*`` connection arguments)."""

    ca_file: str = ""
    """PEM file of the CA that signed the server's certificate (empty: the system CAs)."""
    cert_file: str = ""
    """PEM client certificate, for servers that require one (``tls-auth-clients yes``)."""
    key_file: str = ""
    """PEM private key of ``cert_file``."""
    check_hostname: bool = True
    """Verify that the certificate names the host of the URL (turn off only for IP-only test CAs)."""

    def __post_init__(self) -> None:
        for name in ("ca_file", "cert_file", "key_file"):
            path = getattr(self, name)
            if path and not Path(path).is_file():
                raise ConfigError(f"redis_tls.{name}: {path!r} is not a file")
        if bool(self.cert_file) != bool(self.key_file):
            raise ConfigError("redis_tls.cert_file and redis_tls.key_file go together: set both or neither")

    def redis_kwargs(self) -> dict[str, Any]:
        """Connection arguments for redis-py (only meaningful with a ``rediss://`` URL)."""
        out: dict[str, Any] = {"ssl_cert_reqs": "required", "ssl_check_hostname": self.check_hostname}
        for ours, theirs in (("ca_file", "ssl_ca_certs"), ("cert_file", "ssl_certfile"), ("key_file", "ssl_keyfile")):
            if getattr(self, ours):
                out[theirs] = getattr(self, ours)
        return out


@dataclass(frozen=True)
class DeployConfig:
    run: str = "default"
    """Run name; every Redis key lives under userrl:{<run>}: (the braces: one Redis Cluster slot per run)."""
    redis: str = "embedded"
    """'embedded' (a private server started for the run) or a redis:// / rediss:// URL; a URL
    ending in ?cluster=true selects the cluster client like redis_cluster does."""
    run_dir: str = "runs/default"
    """Where weights, metrics, logs and the embedded server's address go."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """structlog level for every process."""
    bus: BusSettings = field(default_factory=BusSettings)
    """Transport settings."""
    workers: dict[str, RoleConfig] = field(default_factory=_default_workers)
    """Replicas and concurrency per role (env, policy, user, reward)."""
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    """Policy backend."""
    user: UserConfig = field(default_factory=UserConfig)
    """Simulated user and judge backend."""
    reward: RewardSection = field(default_factory=RewardSection)
    """How trajectories become scores and advantages."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """The main job's schedule."""
    """How trajectories become scores and advantages."""
    gyms: list[str] = field(default_factory=lambda: ["userrl/Function-v0", "userrl/Telepathy-v0"])
    """Env ids this deploy runs."""
    seed: int = 0
    """Seed of task order and episode seeds."""
    data: str = ""
    """Task data: a folder written by `userrl data import-userrl` (<data>/<gym>/{train,test}.jsonl),
    read by train (train split only), eval, dispatch, SFT demonstrations and `check env --data`;
    empty = the bundled tasks (envs/data)."""
    gym_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per-gym options of training episodes, e.g. {userrl/Travel-v0: {elicit_reward: 0.8}};
    each gym declares the options it reads and their defaults (Env.option_defaults)."""
    eval_gym_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per-gym options of evaluation episodes (userrl eval, the main job's final evaluation),
    e.g. {userrl/Travel-v0: {elicit_reward: 0.6}}; a gym not listed here uses gym_options."""
    include_final_pick_only: bool = False
    """Train and evaluate on gyms whose tasks in ``data`` are judged on the final pick only
    (imported TravelGym: the release has no catalog and no preferences). False leaves them out
    of train, learn and eval, with a message saying why (docs/gyms.md)."""

    redis_tls: RedisTLSConfig = field(default_factory=RedisTLSConfig)
    """CA, client certificate and key for a ``rediss://`` URL (README: Deploying and inspecting)."""
    redis_cluster: bool = False
    """The redis URL is one node of a Redis Cluster (or a managed Redis/Valkey in cluster mode):
    use redis-py's cluster client, which finds the other nodes itself (docs/scaling.md: the bus)."""

    def __post_init__(self) -> None:
        _check_gym_options(self.gym_options, "gym_options")
        _check_gym_options(self.eval_gym_options, "eval_gym_options")
        tls_set = self.redis_tls != RedisTLSConfig()
        if tls_set and self.redis.startswith(("redis://", "unix://")):
            raise ConfigError("redis_tls: set, but redis is a plain redis:// URL; TLS needs rediss://")
        bad = set(self.workers) - set(ROLE_NAMES)
        if bad:
            raise ConfigError(f"workers: unknown role(s) {sorted(bad)}; allowed: {list(ROLE_NAMES)}")
        if not (self.redis == "embedded" or self.redis.startswith(("redis://", "rediss://", "unix://"))):
            raise ConfigError(f"redis: expected 'embedded' or a redis://, rediss:// or unix:// URL, got {self.redis!r}")
        if not self.run or any(c in self.run for c in RESERVED):
            raise ConfigError(f"run: {self.run!r} must be non-empty without spaces or any of : * ? [ ] {{ }}")
        if self.redis_cluster and (self.redis == "embedded" or self.redis.startswith("unix://")):
            raise ConfigError("redis_cluster: true needs a redis:// or rediss:// URL of a cluster node in redis")


def _check_gym_options(options: dict[str, dict[str, Any]], name: str) -> None:
    """Each gym id must be registered and each option one it declares (Env.check_options)."""
    for env_id, opts in options.items():
        try:
            cls = get_env_class(env_id)
        except UnknownEnvError as exc:
            raise ConfigError(f"{name}.{env_id}: unknown gym; known: {', '.join(list_envs())}") from exc
        try:
            cls.check_options(opts)
        except ConfigError as exc:
            raise ConfigError(f"{name}.{exc}") from exc
        try:  # the gym's own value checks (constructors are cheap): at load, not in every episode
            cls(**opts)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{name}.{env_id}: {exc}") from exc


def gym_options_for(cfg: DeployConfig, env_id: str, *, evaluation: bool = False) -> dict[str, Any]:
    """The options episodes of ``env_id`` get: ``eval_gym_options`` first in evaluation, then
    ``gym_options``; {} (the gym's defaults) when neither lists the gym."""
    if evaluation and env_id in cfg.eval_gym_options:
        return dict(cfg.eval_gym_options[env_id])
    return dict(cfg.gym_options.get(env_id, {}))


def _positive(obj: Any, section: str, names: tuple[str, ...]) -> None:
    for n in names:
        if getattr(obj, n) < 1:
            raise ConfigError(f"{section}.{n} must be >= 1, got {getattr(obj, n)}")


# ---- loading -------------------------------------------------------------------------------------


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> DeployConfig:
    """Read a deploy YAML (or the defaults when ``path`` is None) and apply ``a.b=value`` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(yaml_error_line(p, exc)) from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{p}: top level must be a mapping, got {type(loaded).__name__}")
        data = loaded or {}
    for ov in overrides or []:
        _apply_override(data, ov)
    workers = data.get("workers")
    if isinstance(workers, dict):  # roles left out keep their defaults
        defaults = {r: dataclasses.asdict(c) for r, c in _default_workers().items()}
        data["workers"] = {
            **defaults,
            **{r: ({**defaults.get(r, {}), **v} if isinstance(v, dict) else v) for r, v in workers.items()},
        }
    cfg = build(DeployConfig, data, "")
    check_deploy(cfg)
    return cfg


def yaml_error_line(path: Path, exc: yaml.YAMLError) -> str:
    """``file:line: message`` for a YAML syntax error (one line, no parser internals)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
    col = f" (column {mark.column + 1})" if mark is not None else ""
    return f"{where}: not valid YAML: {problem}{col}" + (f", {context}" if context else "")


def check_deploy(cfg: DeployConfig) -> None:
    """Cross-field checks of what would otherwise fail later in a worker: unknown gym ids and
    backends without the fields they need."""
    known = list_envs()
    for where, ids in (("gyms", cfg.gyms), ("train.gyms", cfg.train.gyms), ("user.per_gym", list(cfg.user.per_gym))):
        bad = [g for g in ids if g not in known]
        if bad:
            raise ConfigError(f"{where}: unknown gym id(s) {bad}; known ids: {known}")
    if cfg.train.loss_agg == "dr-grpo" and cfg.reward.use_std:
        raise ConfigError(
            "train.loss_agg: dr-grpo drops the std normalisation of the advantages too: set reward.use_std: false"
        )
    bad_trackers = [r for r in cfg.train.report_to if r not in ("tensorboard", "wandb", "trackio")]
    if bad_trackers:
        raise ConfigError(
            f"train.report_to: {bad_trackers} not allowed; choose from ['tensorboard', 'wandb', 'trackio']"
        )
    p, u = cfg.policy, cfg.user
    if p.backend == "openai" and not p.base_url:
        raise ConfigError("policy.base_url is required for policy.backend: openai (e.g. http://localhost:8000/v1)")
    if p.timeout_s <= 0:
        raise ConfigError(f"policy.timeout_s must be > 0, got {p.timeout_s}")
    if p.max_retries < 0:
        raise ConfigError(f"policy.max_retries must be >= 0, got {p.max_retries}")
    user_backends = {u.backend, *u.per_gym.values()}
    bad_kinds = user_backends - {"scripted", "openai", "hf"}
    if bad_kinds:
        raise ConfigError(
            f"user.per_gym: backend(s) {sorted(bad_kinds)} not allowed; choose from ['scripted', 'openai', 'hf']"
        )
    if "openai" in user_backends and not (u.base_url and u.model):
        raise ConfigError(
            "user.base_url and user.model are required for user.backend: openai "
            "(e.g. user.base_url=http://localhost:8000/v1 user.model=Qwen/Qwen3-32B)"
        )
    if "hf" in user_backends and not u.model:
        raise ConfigError("user.model (a local model folder) is required for user.backend: hf")
    bad = [g for g in u.sft.gyms if g not in known]
    if bad:
        raise ConfigError(f"user.sft.gyms: unknown gym id(s) {bad}; known ids: {known}")
    if u.sft.serve and u.backend != "openai":
        raise ConfigError("user.sft.serve: serves the user model for user.backend: openai (set it, or serve: false)")
    if u.seat and "user" in cfg.workers and cfg.workers["user"].concurrency < 2:
        raise ConfigError("user.seat: needs workers.user.concurrency >= 2 (a parked question holds a slot)")


def _apply_override(data: dict[str, Any], ov: str) -> None:
    if "=" not in ov:
        raise ConfigError(f"override {ov!r}: expected key.path=value")
    key, raw = ov.split("=", 1)
    value = yaml.safe_load(raw) if raw else ""
    cur = data
    parts = key.strip().split(".")
    for part in parts[:-1]:
        nxt = cur.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"override {ov!r}: {part} is not a section")
        cur = nxt
    cur[parts[-1]] = value


def build(cls: type, data: Any, where: str) -> Any:
    """Build dataclass ``cls`` from plain data, naming the field on any error."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise ConfigError(f"{where or 'config'}: unknown key(s) {sorted(unknown)}; allowed: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}" if where else k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where or 'config'}: {exc}") from exc


def _coerce(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if value is None:
            value = {}
        return build(hint, value, where)  # type: ignore[arg-type]
    if origin is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            raise ConfigError(f"{where}: {value!r} is not allowed; choose one of {list(allowed)}")
        return value
    if origin in (Union, types.UnionType):
        errors = []
        for a in typing.get_args(hint):
            try:
                return _coerce(a, value, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{where}: {value!r} matches none of {hint}")
    if hint is type(None):
        if value is not None:
            raise ConfigError(f"{where}: expected null")
        return None
    if origin is dict:
        kt, vt = typing.get_args(hint)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return {_coerce(kt, k, f"{where}.{k}"): _coerce(vt, v, f"{where}.{k}") for k, v in value.items()}
    if origin is list:
        (it,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        return [_coerce(it, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-6 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def to_dict(cfg: DeployConfig) -> dict[str, Any]:
    """The config as plain data that :func:`build` reads back to the same config (the bus caps
    derived from ``bus.memory_mb`` written as 0, so they are derived again)."""
    return {**dataclasses.asdict(cfg), "bus": cfg.bus.as_written()}
