"""Deploy configs: one YAML per deploy, validated once at load.

Every section is a dataclass with a docstring under each field. :func:`load_config` reads YAML,
applies ``--set a.b=c`` overrides, and builds the dataclasses; a wrong key, type or value raises
:class:`~userrl.errors.ConfigError` naming the field (``workers.env.replicas``) and what is
allowed.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from userrl.errors import ConfigError
from userrl.learner.rewards import RewardConfig

ROLE_NAMES = ("env", "policy", "user", "reward", "learner")


@dataclass(frozen=True)
class BusConfig:
    read_count: int = 128
    """Entries per XREADGROUP (COUNT)."""
    block_ms: int = 1000
    """XREADGROUP BLOCK in milliseconds; the socket timeout is set above it."""
    min_idle_ms: int = 15000
    """Entries idle longer than this are reclaimed from their (dead or stopped) consumer."""
    max_deliveries: int = 5
    """An entry delivered more often than this goes to the dead-letter stream."""
    stream_cap: int = 1_000_000
    """MAXLEN ~ safety cap per stream; normal trimming is by consumption point."""
    max_message_bytes: int = 8 * 1024 * 1024
    """Payload size cap; bigger messages are refused on send and dead-lettered on read."""
    max_connections: int = 64
    """Redis connection pool size per process."""
    reclaim_interval_ms: int = 5000
    """How often each worker looks for idle entries of dead or stopped peers (XAUTOCLAIM)."""
    heartbeat_interval_ms: int = 2000
    """How often each worker refreshes its heartbeat key."""
    heartbeat_ttl_ms: int = 10000
    """Heartbeat key expiry: a worker silent this long is reported dead by `userrl check`."""
    idempotency_ttl_ms: int = 0
    """How long commit keys remember a handled message; 0 = auto: 4 x min_idle_ms x
    (max_deliveries + 1), at least a minute (a duplicate can only come while redelivery can)."""
    dead_cap: int = 10_000
    """MAXLEN ~ of the dead-letter stream."""
    dead_payload_bytes: int = 65_536
    """A dead letter keeps at most this many bytes of each field (plus its size and sha256)."""
    results_cap: int = 100_000
    """MAXLEN ~ of the learner and results streams (bounded even when nothing reads them)."""
    finished_cap: int = 100_000
    """Members kept in the finished-episode and done-group indexes (oldest dropped first)."""
    episode_log_ttl_ms: int = 3_600_000
    """Readable episode logs expire this long after the episode ends."""
    episode_log_cap: int = 2_000
    """MAXLEN ~ of one readable episode log."""
    stall_timeout_ms: int = 900_000
    """A live episode without progress this long is reported failed (reward workers' sweep and
    waiters: dispatch --wait, eval); a waiter first re-dispatches one whose state vanished."""

    def __post_init__(self) -> None:
        _positive(self, "bus", ("read_count", "block_ms", "min_idle_ms", "max_deliveries",
                                "stream_cap", "max_message_bytes", "max_connections",
                                "reclaim_interval_ms", "heartbeat_interval_ms", "heartbeat_ttl_ms"))
        _positive(self, "bus", ("dead_cap", "dead_payload_bytes", "results_cap", "finished_cap",
                                "episode_log_ttl_ms", "episode_log_cap", "stall_timeout_ms"))
        window = self.min_idle_ms * (self.max_deliveries + 1)
        if self.idempotency_ttl_ms and self.idempotency_ttl_ms < window:
            raise ConfigError(f"bus.idempotency_ttl_ms ({self.idempotency_ttl_ms}) must cover min_idle_ms x "
                              f"(max_deliveries + 1) = {window}, or be 0 (auto)")
        if self.stall_timeout_ms <= window:
            raise ConfigError(f"bus.stall_timeout_ms ({self.stall_timeout_ms}) must be longer than min_idle_ms x "
                              f"(max_deliveries + 1) = {window}: a redelivered step is not a stall")
        if self.heartbeat_ttl_ms <= self.heartbeat_interval_ms:
            raise ConfigError("bus.heartbeat_ttl_ms must be larger than bus.heartbeat_interval_ms")
        if self.min_idle_ms <= self.block_ms:
            raise ConfigError(f"bus.min_idle_ms ({self.min_idle_ms}) must be larger than bus.block_ms ({self.block_ms})")


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
    return {"env": RoleConfig(replicas=1, concurrency=256), "policy": RoleConfig(replicas=1, concurrency=64),
            "user": RoleConfig(replicas=1, concurrency=64), "reward": RoleConfig(replicas=1, concurrency=64)}


@dataclass(frozen=True)
class PolicyConfig:
    backend: Literal["hf", "vllm", "openai", "scripted"] = "hf"
    """Generation backend: hf (transformers), vllm (GPU), openai (API models), scripted (gym experts)."""
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
    tiny_size: dict[str, int] = field(default_factory=lambda: {
        "hidden_size": 128, "intermediate_size": 384, "num_hidden_layers": 4, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 32})
    """Qwen3Config fields of the locally built tiny model (model: tiny)."""


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
    """Reply length cap of LLM users (Qwen3 thinking needs more, or disable it)."""
    timeout_s: float = 60.0
    """Deadline of one HTTP attempt."""
    max_retries: int = 4
    """HTTP client retries of a transient failure (429, 5xx, timeout, dropped connection)."""
    backoff_s: float = 0.5
    """First backoff delay of the client and the worker (doubles, capped)."""
    retries: int = 2
    """Worker retries after the client gave up; then the episode fails as an infrastructure error."""

    def __post_init__(self) -> None:
        for name in ("temperature", "timeout_s", "backoff_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"user.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("max_tokens", "timeout_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"user.{name} must be > 0, got {getattr(self, name)}")
        if self.max_retries < 0 or self.retries < 0:
            raise ConfigError("user.max_retries and user.retries must be >= 0")


@dataclass
class RewardSection(RewardConfig):
    """Turn credits, trajectory score and normalization (GYMS.md), plus group collection."""

    group_timeout_s: float = 600.0
    """A group still incomplete this long after its first member arrived is dropped as a whole."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.group_timeout_s <= 0:
            raise ConfigError(f"reward.group_timeout_s must be > 0, got {self.group_timeout_s}")


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
    """GRPO learning rate."""
    clip_low: float = 0.2
    """PPO clip epsilon below 1."""
    clip_high: float = 0.2
    """PPO clip epsilon above 1."""
    kl_coef: float = 0.0
    """KL penalty to the SFT model (0 = none, as in the paper)."""
    max_staleness: int = 1
    """Turns generated more than this many versions before the learner's are dropped."""
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

    def __post_init__(self) -> None:
        _positive(self, "train", ("max_turns", "steps", "groups_per_step", "group_size", "eval_tasks",
                                  "eval_samples", "checkpoint_every"))
        if self.eval_temperature < 0:
            raise ConfigError(f"train.eval_temperature must be >= 0, got {self.eval_temperature}")
        if self.sft_epochs < 0:
            raise ConfigError(f"train.sft_epochs must be >= 0, got {self.sft_epochs}")
        if self.max_staleness < 0:
            raise ConfigError(f"train.max_staleness must be >= 0, got {self.max_staleness}")
        if self.group_size < 2:
            raise ConfigError("train.group_size must be >= 2: GRPO normalizes scores within a group")
        for name in ("sft_lr", "lr", "time_budget_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"train.{name} must be > 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class DeployConfig:
    run: str = "default"
    """Run name; every Redis key lives under userrl:{run}:."""
    redis: str = "embedded"
    """'embedded' (a private server started for the run) or a redis:// / rediss:// URL."""
    run_dir: str = "runs/default"
    """Where weights, metrics, logs and the embedded server's address go."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """structlog level for every process."""
    bus: BusConfig = field(default_factory=BusConfig)
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

    def __post_init__(self) -> None:
        bad = set(self.workers) - set(ROLE_NAMES)
        if bad:
            raise ConfigError(f"workers: unknown role(s) {sorted(bad)}; allowed: {list(ROLE_NAMES)}")
        if not (self.redis == "embedded" or self.redis.startswith(("redis://", "rediss://", "unix://"))):
            raise ConfigError(f"redis: expected 'embedded' or a redis://, rediss:// or unix:// URL, got {self.redis!r}")
        if not self.run or any(c in self.run for c in " :*?"):
            raise ConfigError(f"run: {self.run!r} must be non-empty without spaces, ':', '*' or '?'")


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
            raise ConfigError(f"{p}: not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{p}: top level must be a mapping, got {type(loaded).__name__}")
        data = loaded or {}
    for ov in overrides or []:
        _apply_override(data, ov)
    workers = data.get("workers")
    if isinstance(workers, dict):  # roles left out keep their defaults
        defaults = {r: dataclasses.asdict(c) for r, c in _default_workers().items()}
        data["workers"] = {**defaults, **{r: ({**defaults.get(r, {}), **v} if isinstance(v, dict) else v)
                                          for r, v in workers.items()}}
    return build(DeployConfig, data, "")


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


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
