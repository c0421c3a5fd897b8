"""Deploy configs are validated once at load, with errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from userrl.config import load_config
from userrl.errors import ConfigError

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


@pytest.mark.parametrize("name", ["local.yaml", "ci.yaml"])
def test_shipped_configs_load(name: str) -> None:
    cfg = load_config(DEPLOY / name)
    assert cfg.redis == "embedded" and set(cfg.workers) >= {"env", "policy", "user", "reward"}


def test_defaults_and_overrides_merge_per_role() -> None:
    cfg = load_config(
        None,
        [
            "workers.env.replicas=3",
            "bus.block_ms=500",
            "user.backend=openai",
            "user.base_url=http://localhost:8000/v1",
            "user.model=m",
        ],
    )
    assert cfg.workers["env"].replicas == 3 and cfg.workers["env"].concurrency == 256
    assert cfg.workers["policy"].replicas == 1
    assert cfg.bus.block_ms == 500 and cfg.user.backend == "openai"


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("workers.env.replicas=x", "workers.env.replicas: expected an integer"),
        ("workers.env.replicas=-1", "replicas must be >= 0"),
        ("bus.nope=1", "bus: unknown key(s) ['nope']; allowed:"),
        (
            "policy.backend=foo",
            "policy.backend: 'foo' is not allowed; choose one of ['hf', 'vllm', 'openai', 'scripted']",
        ),
        ("workers.bogus.replicas=1", "workers: unknown role(s) ['bogus']"),
        ("redis=http://x", "redis: expected 'embedded' or a redis://"),
        ("bus.min_idle_ms=10", "bus.min_idle_ms (10) must be larger than bus.block_ms"),
        ("bus.read_count=0", "bus.read_count must be >= 1"),
        ("run=a b", "run: 'a b' must be non-empty"),
        ("gyms=notalist", "gyms: expected a list"),
        ("policy.temperature=hot", "policy.temperature: expected a number"),
        ("noequals", "expected key.path=value"),
        ("train.lr_schedule=step", "train.lr_schedule: 'step' is not allowed"),
        ("train.warmup_steps=-1", "train.warmup_steps must be >= 0"),
    ],
)
def test_bad_values_name_the_field(override: str, needle: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(None, [override])
    assert needle in str(exc.value)


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("run: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(bad)
    bad.write_text("bus: 5\n")
    with pytest.raises(ConfigError, match="bus: expected a mapping"):
        load_config(bad)


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["gyms=[userrl/Nope-v0]"], "gyms: unknown gym id(s) ['userrl/Nope-v0']; known ids: ["),
        (["train.gyms=[userrl/Telepathy-v0, Nope]"], "train.gyms: unknown gym id(s) ['Nope']"),
        (["user.per_gym={userrl/Nope-v0: openai}"], "user.per_gym: unknown gym id(s)"),
        (["user.per_gym={userrl/Turtle-v0: gpt}"], "user.per_gym: backend(s) ['gpt'] not allowed"),
        (["user.backend=openai"], "user.base_url and user.model are required for user.backend: openai"),
        (["user.backend=openai", "user.base_url=http://x/v1"], "user.base_url and user.model are required"),
        (["user.per_gym={userrl/Turtle-v0: openai}"], "user.base_url and user.model are required"),
        (["user.backend=hf"], "user.model (a local model folder) is required for user.backend: hf"),
        (["policy.backend=openai"], "policy.base_url is required for policy.backend: openai"),
        (
            ["policy.backend=openai", "policy.base_url=http://x/v1", "policy.timeout_s=0"],
            "policy.timeout_s must be > 0",
        ),
        (["policy.max_retries=-1"], "policy.max_retries must be >= 0"),
        (["policy.extra_body=3"], "policy.extra_body: expected a mapping"),
    ],
)
def test_cross_field_checks_name_the_field(overrides: list[str], needle: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(None, overrides)
    assert needle in str(exc.value)


def test_openai_policy_settings_load() -> None:
    cfg = load_config(
        None,
        [
            "policy.backend=openai",
            "policy.base_url=http://x/v1",
            "policy.tools=true",
            "policy.api_key_env=",
            "policy.timeout_s=5",
            "policy.max_retries=0",
            "policy.extra_body={chat_template_kwargs: {enable_thinking: false}}",
        ],
    )
    p = cfg.policy
    assert (p.api_key_env, p.timeout_s, p.max_retries) == ("", 5.0, 0)
    assert p.extra_body == {"chat_template_kwargs": {"enable_thinking": False}}


def test_yaml_error_is_one_line_with_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("run: ok\nbus:\n  block_ms: 100\n  read_count: [1, 2\nseed: 1\n")
    with pytest.raises(ConfigError) as exc:
        load_config(bad)
    msg = str(exc.value)
    assert msg.startswith(f"{bad}:5: not valid YAML: ") and "\n" not in msg
    assert msg.endswith("expected ',' or ']', but got ':' (column 5), while parsing a flow sequence")
    assert "<unicode string>" not in msg and "^" not in msg  # PyYAML's own mark dump
