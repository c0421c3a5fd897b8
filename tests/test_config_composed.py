"""The deploy config is made of the components' own settings classes: the ``bus`` section is
:class:`~userrl.bus.settings.BusSettings` itself, and a config written out reads back the same."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from userrl.bus.settings import BusSettings
from userrl.bus.transport import Bus
from userrl.bus.worker import Worker, WorkerSettings
from userrl.config import DeployConfig, build, load_config, to_dict
from userrl.errors import ConfigError
from userrl.runtime import make_bus, make_worker, worker_settings


def test_the_bus_section_is_the_bus_settings_the_transport_gets() -> None:
    cfg = load_config(None, ["bus.block_ms=500", "bus.dead_cap=11", "run=composed"])
    assert type(cfg.bus) is BusSettings
    bus = make_bus(cfg, url="redis://127.0.0.1:1/0")  # no connection is made until a command
    assert bus.settings is cfg.bus
    assert (bus.settings.block_ms, bus.settings.dead_cap) == (500, 11)


def test_a_written_config_reads_back_the_same_with_derived_caps_still_auto(tmp_path) -> None:
    cfg = load_config(None, ["bus.memory_mb=64", "bus.results_cap=7"])
    assert cfg.bus.finished_auto and cfg.bus.finished_cap == BusSettings(memory_mb=64).finished_cap
    data = to_dict(cfg)
    assert data["bus"]["finished_cap"] == 0 and data["bus"]["dead_cap"] == 0 and data["bus"]["results_cap"] == 7
    path = tmp_path / "deploy.yaml"
    path.write_text(yaml.safe_dump(data))
    again = load_config(path)
    assert again == cfg and again.bus.finished_auto and not again.bus.auto_caps & {"results_cap"}
    assert build(DeployConfig, to_dict(again), "") == cfg


@pytest.mark.parametrize(
    ("override", "says"),
    [
        ("bus.heartbeat_ttl_ms=100", "bus.heartbeat_ttl_ms must be larger than bus.heartbeat_interval_ms"),
        ("bus.stall_timeout_ms=1000", r"bus.stall_timeout_ms \(1000\) must be longer than"),
        ("bus.max_connections=0", "bus.max_connections must be >= 1, got 0"),
        ("bus.dead_cap=-2", "bus.dead_cap must be >= 0"),
    ],
)
def test_the_bus_settings_name_the_field_when_loaded_or_built(override: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        load_config(None, [override])
    key, value = override.removeprefix("bus.").split("=")
    with pytest.raises(ConfigError, match=says):
        BusSettings(**{key: int(value)})


def test_every_bus_field_has_a_docstring() -> None:
    import ast
    import inspect

    import userrl.bus.settings as mod

    body = ast.parse(inspect.getsource(mod)).body
    cls = next(n for n in body if isinstance(n, ast.ClassDef) and n.name == "BusSettings")
    documented = {
        a.target.id
        for a, nxt in zip(cls.body, cls.body[1:], strict=False)
        if isinstance(a, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
    }
    assert documented == {f.name for f in dataclasses.fields(BusSettings)}


def test_the_learner_settings_come_from_the_train_section() -> None:
    pytest.importorskip("torch")
    from userrl.runtime import learner_settings

    cfg = load_config(
        None,
        ["train.lr=0.02", "train.steps=9", "train.warmup_steps=2", "train.max_turns=5", "policy.max_new_tokens=32"],
    )
    s = learner_settings(cfg)
    assert (s.lr, s.total_steps, s.warmup_steps, s.seed) == (0.02, 9, 2, cfg.seed)
    assert (s.lora, s.reward, s.keep_weights) == (cfg.train.lora, cfg.reward, cfg.train.keep_weights)
    assert (s.loss.norm_len, s.loss.temperature) == (160, cfg.policy.temperature)


@pytest.mark.train
def test_a_learner_from_settings_is_the_learner_from_keywords(tmp_path) -> None:
    torch = pytest.importorskip("torch")
    from tests.learner_groups import make_groups
    from userrl.agents.tiny import build_tiny_model
    from userrl.learner.grpo_learner import GRPOLearner, LearnerSettings
    from userrl.learner.losses import LossConfig

    model = build_tiny_model(tmp_path / "m", seed=0)
    kw = {"lr": 1e-2, "loss": LossConfig(max_staleness=100), "device": "cpu", "lr_schedule": "linear", "total_steps": 3}
    one = GRPOLearner(model, tmp_path / "a", LearnerSettings(**kw))
    two = GRPOLearner(model, tmp_path / "b", LearnerSettings(lr=1.0, loss=LossConfig()), **kw)  # keywords override
    assert one.settings == two.settings
    groups = make_groups(2, seed=1)
    assert one.step(groups) == two.step(groups)
    for (n, a), (_, b) in zip(one.model.named_parameters(), two.model.named_parameters(), strict=True):
        assert torch.equal(a, b), n
    with pytest.raises(TypeError):
        GRPOLearner(model, tmp_path / "c", loss=LossConfig())  # lr has no default


def test_no_function_takes_an_untyped_deploy_config() -> None:
    """Role functions and ``from_config`` take the typed config, never ``cfg: Any``."""
    import ast

    from tests.conftest import REPO

    found = []
    for path in REPO.rglob("*.py"):
        rel = path.relative_to(REPO)
        if rel.parts[0].startswith(".") or "site-packages" in rel.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                for a in node.args.args + node.args.kwonlyargs:
                    if a.arg == "cfg" and isinstance(a.annotation, ast.Name) and a.annotation.id == "Any":
                        found.append(f"{rel}:{node.lineno} {node.name}")
    assert found == []


class Plain(Worker):
    role = "env"


class Configured(Worker):
    role = "env"

    @classmethod
    def from_config(cls, bus: Bus, settings: WorkerSettings, cfg: DeployConfig) -> Configured:
        worker = cls(bus, settings)
        worker.run_name = cfg.run
        return worker


def test_a_role_worker_is_built_from_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USERRL_REDIS_URL", "redis://127.0.0.1:1/0")  # no connection is made until a command
    cfg = load_config(None, ["run=wired", "workers.env.concurrency=5", "bus.heartbeat_interval_ms=500"])
    s = worker_settings(cfg, "env", name="env-3")
    assert (s.name, s.concurrency, s.heartbeat_interval_s, s.heartbeat_ttl_s) == ("env-3", 5, 0.5, 10.0)
    assert worker_settings(cfg, "env", concurrency=2).concurrency == 2
    assert worker_settings(cfg, "custom").concurrency == 64  # a role the config does not list
    plain = make_worker(cfg, Plain, s, "env")
    assert type(plain) is Plain and plain.bus.settings is cfg.bus and plain.bus.keys.run == "wired"
    configured = make_worker(cfg, Configured, s, "env")
    assert type(configured) is Configured and configured.run_name == "wired"
