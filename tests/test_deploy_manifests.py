"""The compose file and kubernetes manifests follow the deploy config and run real commands."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from userrl.cli import WORKER_CLASSES, build_parser
from userrl.config import load_config
from userrl.deploy.render import render

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
LOCAL = "deploy/local.yaml"
ROLES = ["env", "policy", "user", "reward"]


@pytest.fixture(scope="module")
def cfg():
    return load_config(REPO / LOCAL)


def _k8s_docs() -> list[dict]:
    docs = []
    for f in sorted((DEPLOY / "k8s").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(f.read_text()) if d]
    return docs


def _parses(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert callable(args.func)


def test_checked_in_files_are_rendered_from_local_yaml(cfg, monkeypatch) -> None:
    monkeypatch.chdir(REPO)
    files = render(cfg, LOCAL, "all")
    stale = [rel for rel, text in files.items() if (DEPLOY / rel).read_text() != text]
    assert not stale, f"re-run `userrl deploy render all --config {LOCAL} --out deploy`: {stale} differ"
    on_disk = {p.relative_to(DEPLOY).as_posix() for p in (DEPLOY / "k8s").glob("*.yaml")}
    assert on_disk == {rel for rel in files if rel.startswith("k8s/")}


def test_compose_has_every_role_with_config_replicas(cfg) -> None:
    doc = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = doc["services"]
    assert "--maxmemory-policy" in services["redis"]["command"]
    assert services["redis"]["command"][services["redis"]["command"].index("--maxmemory-policy") + 1] == "noeviction"
    images = set()
    for role in ROLES:
        s = services[role]
        images.add(s["image"])
        assert s["deploy"]["replicas"] == cfg.workers[role].replicas
        assert s["environment"]["USERRL_REDIS_URL"] == "redis://redis:6379/0"
        assert s["command"][:2] == ["worker", role]
        assert s["command"][s["command"].index("--config") + 1] == f"/app/{LOCAL}"
        _parses(s["command"])
        test = s["healthcheck"]["test"]
        assert test[0] == "CMD" and test[1:4] == ["userrl", "check", role]
        _parses(test[2:])
        assert s["depends_on"]["redis"]["condition"] == "service_healthy"
    assert len(images) == 1


def test_k8s_has_a_deployment_per_role_with_config_replicas(cfg) -> None:
    docs = _k8s_docs()
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    assert set(deployments) == {f"userrl-{r}" for r in [*ROLES, "learner"]}
    kinds = {d["kind"] for d in docs}
    assert {"ConfigMap", "Secret", "Service", "StatefulSet"} <= kinds
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap"]
    mounted = cm["data"]["deploy.yaml"]
    images = set()
    for role in ROLES:
        d = deployments[f"userrl-{role}"]
        assert d["spec"]["replicas"] == cfg.workers[role].replicas
        assert d["spec"]["selector"]["matchLabels"].items() <= d["spec"]["template"]["metadata"]["labels"].items()
        (c,) = d["spec"]["template"]["spec"]["containers"]
        images.add(c["image"])
        assert c["args"][:2] == ["worker", role]
        _parses(c["args"])
        env = {e["name"]: e for e in c["env"]}
        assert env["USERRL_WORKER_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        assert env["USERRL_REDIS_URL"]["valueFrom"]["secretKeyRef"]["name"] == "userrl-redis"
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            cmd = c[probe]["exec"]["command"]
            assert cmd[:2] == ["sh", "-c"]
            argv = shlex.split(cmd[2])
            assert argv[:4] == ["exec", "userrl", "check", role]
            assert argv[argv.index("--worker") + 1] == "$USERRL_WORKER_NAME"
            _parses([a.replace("$USERRL_WORKER_NAME", "pod-0") for a in argv[2:]])
        mount_dir = next(m["mountPath"] for m in c["volumeMounts"] if m["name"] == "config")
        assert c["args"][c["args"].index("--config") + 1].startswith(mount_dir + "/")
    assert len(images) == 1
    # the config map holds the config the replicas came from
    loaded = yaml.safe_load(mounted)
    assert {r: v["replicas"] for r, v in loaded["workers"].items()} == {r: cfg.workers[r].replicas for r in ROLES}


def test_every_worker_role_is_deployed() -> None:
    assert set(ROLES) == set(WORKER_CLASSES)


def test_render_follows_overrides(cfg, monkeypatch) -> None:
    monkeypatch.chdir(REPO)
    scaled = load_config(REPO / LOCAL, ["workers.env.replicas=5"])
    files = render(scaled, LOCAL, "all", overrides=["workers.env.replicas=5"])
    compose = yaml.safe_load(files["compose.yaml"])
    assert compose["services"]["env"]["deploy"]["replicas"] == 5
    assert compose["services"]["env"]["command"][-2:] == ["--set", "workers.env.replicas=5"]
    assert yaml.safe_load(files["k8s/env.yaml"])["spec"]["replicas"] == 5
    cm = yaml.safe_load(files["k8s/config.yaml"])
    assert yaml.safe_load(cm["data"]["deploy.yaml"])["workers"]["env"]["replicas"] == 5


def test_render_cli_prints_and_writes(tmp_path, capsys, monkeypatch) -> None:
    from userrl.cli import main

    monkeypatch.chdir(REPO)
    # the CLI configures structlog for the process; in tests that would bind pytest's capture
    monkeypatch.setattr("userrl.cli_deploy.configure_logging", lambda *a, **k: None)
    assert main(["deploy", "render", "compose", "--config", LOCAL]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["services"]["env"]["deploy"]["replicas"] == 1
    assert main(["deploy", "render", "k8s", "--config", LOCAL, "--out", str(tmp_path)]) == 0
    assert (tmp_path / "k8s" / "env.yaml").read_text() == (DEPLOY / "k8s" / "env.yaml").read_text()


def test_dockerfile_installs_train_extra_with_userrl_entrypoint() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert text.startswith("#") and "FROM python:3.11-slim" in text
    assert '".[train]"' in text
    assert 'ENTRYPOINT ["userrl"]' in text
