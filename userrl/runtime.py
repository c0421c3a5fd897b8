"""The deploy config wired into the components: where Redis is and the Bus on it (the config's
``bus`` section is the bus's own settings), a role's worker (:func:`make_worker`), and the GRPO
learner's settings (:func:`learner_settings`).

With ``redis: embedded`` the launcher (``userrl up``/``train``) starts a private server and
writes its URL, password included, to ``{run_dir}/redis.url`` (mode 0600); workers started
alone find it there. The environment variable ``USERRL_REDIS_URL`` overrides everything
(containers, tests, and the launcher's own workers: never their command line, which any local
user can read in ``/proc``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from userrl.bus.embedded import ping_url
from userrl.bus.keys import Keys
from userrl.bus.transport import Bus
from userrl.bus.worker import Worker, WorkerSettings
from userrl.config import DeployConfig
from userrl.errors import ConfigError

if TYPE_CHECKING:
    from userrl.learner.grpo_learner import LearnerSettings
    from userrl.learner.losses import LossConfig

URL_FILE = "redis.url"

#: OpenMP's wait policy for every userrl process and the workers it starts, unless set already.
#: By default OpenMP threads spin at each barrier waiting for the others; when another process
#: holds a core (a learner, a peer worker, CI's neighbours) the thread they wait for is off the
#: CPU and the spinning takes the rest. PyTorch runs a small model as thousands of tiny parallel
#: regions, so on the 2-core machine with one other busy process the hf policy generated 96-1,126
#: tokens/s spinning against 3,014-5,590 passive (``benchmarks/policy.py``, alternating), and the
#: main job's SFT took 201-352 s instead of 22 s. Passive threads sleep at the barrier instead.
OMP_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE"}


def cpu_thread_defaults(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Set :data:`OMP_DEFAULTS` in ``environ`` (``os.environ`` by default) where the user has not
    set them; returns what was set. Must run before torch loads OpenMP (the CLI's first step)."""
    env: Any = os.environ if environ is None else environ
    added = {k: v for k, v in OMP_DEFAULTS.items() if k not in env}
    env.update(added)
    return added


def write_url_file(run_dir: str | Path, url: str) -> Path:
    """Write ``redis.url`` readable by its owner only: it holds the password."""
    path = Path(run_dir) / URL_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)  # an older file keeps its mode through O_CREAT
        f.write(url)
    return path


def live_url_file(run_dir: str | Path) -> str | None:
    """The URL in ``run_dir/redis.url`` when its server answers, else None."""
    f = Path(run_dir) / URL_FILE
    if f.is_file():
        url = f.read_text().strip()
        if ping_url(url):
            return url
    return None


def redis_url(cfg: DeployConfig) -> str:
    env = os.environ.get("USERRL_REDIS_URL")
    if env:
        return env
    if cfg.redis != "embedded":
        return cfg.redis
    url = live_url_file(cfg.run_dir)
    if url:
        return url
    raise ConfigError(
        f"redis: embedded, but no embedded server is running for run_dir {cfg.run_dir!r}. "
        "Start the deploy with `userrl up CONFIG` (it starts the server), "
        "or set USERRL_REDIS_URL / redis: redis://host:port to use your own server."
    )


def tls_kwargs(cfg: DeployConfig) -> dict[str, Any]:
    """redis-py ``ssl_*`` arguments from ``redis_tls`` (applied to ``rediss://`` URLs only)."""
    return cfg.redis_tls.redis_kwargs()


def make_bus(cfg: DeployConfig, url: str | None = None, client_name: str | None = None) -> Bus:
    return Bus.open(
        url or redis_url(cfg),
        Keys(cfg.run),
        cfg.bus,
        max_connections=cfg.bus.max_connections,
        client_name=client_name,
        tls=tls_kwargs(cfg),
        cluster=cfg.redis_cluster,
    )


def worker_settings(
    cfg: DeployConfig, role: str, *, name: str = "", burst: bool = False, concurrency: int = 0
) -> WorkerSettings:
    """A ``role`` worker's settings: its concurrency from ``workers.<role>`` unless given (64 for
    a role the config does not list), heartbeat and reclaim timings from ``bus``."""
    rc = cfg.workers.get(role)
    b = cfg.bus
    return WorkerSettings(
        name=name,
        burst=burst,
        concurrency=concurrency or (rc.concurrency if rc else 64),
        reclaim_interval_s=b.reclaim_interval_ms / 1000,
        heartbeat_interval_s=b.heartbeat_interval_ms / 1000,
        heartbeat_ttl_s=b.heartbeat_ttl_ms / 1000,
    )


def make_worker(cfg: DeployConfig, cls: type[Worker], settings: WorkerSettings, role: str) -> Worker:
    """A worker of class ``cls`` on its own bus connection (named after ``role`` and the worker),
    built by its ``from_config`` (backends from ``cfg``) where it has one."""
    bus = make_bus(cfg, client_name=f"userrl:{role}:{settings.name or 'worker'}")
    from_config = getattr(cls, "from_config", None)
    return from_config(bus, settings, cfg) if from_config is not None else cls(bus, settings)


def loss_config(cfg: DeployConfig) -> LossConfig:
    """The GRPO objective of ``cfg.train`` (Dr. GRPO's constant: the most tokens a dialogue can
    generate, max_turns x policy.max_new_tokens)."""
    from userrl.learner.losses import LossConfig

    t = cfg.train
    return LossConfig(
        clip_low=t.clip_low,
        clip_high=t.clip_high,
        kl_coef=t.kl_coef,
        agg=t.loss_agg,
        max_staleness=t.max_staleness,
        temperature=cfg.policy.temperature,
        kl_estimator=t.kl_estimator,
        kl_in=t.kl_in,
        ratio_level=t.ratio_level,
        entropy_coef=t.entropy_coef,
        old_logprobs=t.old_logprobs,
        is_correction=t.is_correction,
        is_cap=t.is_cap,
        truncated=t.truncated_episodes,
        norm_len=t.max_turns * cfg.policy.max_new_tokens,
    )


def learner_settings(cfg: DeployConfig) -> LearnerSettings:
    """What the GRPO learner of ``cfg`` is set up with: ``train``'s optimizer, hardware and LoRA
    settings, :func:`loss_config`, and the reward section (kl_in: reward recomputes advantages)."""
    from userrl.learner.grpo_learner import LearnerSettings

    t = cfg.train
    return LearnerSettings(
        lr=t.lr,
        loss=loss_config(cfg),
        seed=cfg.seed,
        device=t.device,
        dtype=t.dtype,
        gradient_checkpointing=t.gradient_checkpointing,
        max_tokens_per_microbatch=t.max_tokens_per_microbatch,
        lora=t.lora,
        keep_weights=t.keep_weights,
        lr_schedule=t.lr_schedule,
        total_steps=t.steps,
        warmup_steps=t.warmup_steps,
        reward=cfg.reward,
    )
