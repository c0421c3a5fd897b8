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
    cfg = load_config(None, ["workers.env.replicas=3", "bus.block_ms=500", "user.backend=openai"])
    assert cfg.workers["env"].replicas == 3 and cfg.workers["env"].concurrency == 256
    assert cfg.workers["policy"].replicas == 1
    assert cfg.bus.block_ms == 500 and cfg.user.backend == "openai"


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("workers.env.replicas=x", "workers.env.replicas: expected an integer"),
        ("workers.env.replicas=-1", "replicas must be >= 0"),
        ("bus.nope=1", "bus: unknown key(s) ['nope']; allowed:"),
        ("policy.backend=foo", "policy.backend: 'foo' is not allowed; choose one of ['hf', 'vllm', 'openai', 'scripted']"),
        ("workers.bogus.replicas=1", "workers: unknown role(s) ['bogus']"),
        ("redis=http://x", "redis: expected 'embedded' or a redis://"),
        ("bus.min_idle_ms=10", "bus.min_idle_ms (10) must be larger than bus.block_ms"),
        ("bus.read_count=0", "bus.read_count must be >= 1"),
        ("run=a b", "run: 'a b' must be non-empty"),
        ("gyms=notalist", "gyms: expected a list"),
        ("policy.temperature=hot", "policy.temperature: expected a number"),
        ("noequals", "expected key.path=value"),
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
