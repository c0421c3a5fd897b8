"""Manifests that train (issue 12): a learner, a shared weights volume at run_dir, GPU requests,
an external Redis through a Secret, and an offline schema check of every rendered object."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.k8s_check import check
from userrl.cli import build_parser
from userrl.config import load_config
from userrl.deploy.render import PASSWORD_PLACEHOLDER, render, secret_url

REPO = Path(__file__).resolve().parents[1]
GPU = "deploy/gpu.yaml"
EXTERNAL = "redis://:s3cret@redis.internal:6380/2"


def _docs(files: dict[str, str]) -> list[dict]:
    return [d for rel, text in files.items() if rel.startswith("k8s/") for d in yaml.safe_load_all(text) if d]


@pytest.fixture
def gpu_files(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.chdir(REPO)
    cfg = load_config(REPO / GPU, [f"redis={EXTERNAL}"])
    return render(cfg, GPU, "all", overrides=[f"redis={EXTERNAL}"])


@pytest.mark.parametrize("config", ["deploy/local.yaml", GPU, "deploy/ci.yaml"])
def test_every_rendered_object_passes_the_offline_schema_check(config: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    docs = _docs(render(load_config(REPO / config), config, "k8s"))
    assert {d["kind"] for d in docs} >= {"Deployment", "PersistentVolumeClaim", "Secret", "ConfigMap"}
    assert [e for d in docs for e in check(d)] == []


def test_the_offline_check_catches_what_the_api_server_would_reject() -> None:
    good = _docs(render(load_config(REPO / "deploy/local.yaml"), "deploy/local.yaml", "k8s"))
    dep = next(d for d in good if d["kind"] == "Deployment")
    c = dep["spec"]["template"]["spec"]["containers"][0]
    c["volumeMounts"].append({"name": "nope", "mountPath": "/x"})
    c["env"].append({"name": "A", "value": "1", "valueFrom": {}})
    c["resoures"] = {}
    dep["spec"]["selector"]["matchLabels"]["extra"] = "x"
    errors = check(dep)
    assert len(errors) == 4, errors
    assert check({"apiVersion": "v1", "kind": "Deployment"}) == ["unknown apiVersion/kind v1/Deployment"]


def test_k8s_learner_shares_weights_with_gpu_policy_workers(gpu_files: dict[str, str]) -> None:
    cfg = load_config(REPO / GPU)
    docs = {(d["kind"], d["metadata"]["name"]): d for d in _docs(gpu_files) if "metadata" in d}
    pvc = docs[("PersistentVolumeClaim", "userrl-runs")]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    learner = docs[("Deployment", "userrl-learner")]
    assert learner["spec"]["replicas"] == 1 and learner["spec"]["strategy"]["type"] == "Recreate"
    for name, gpus in (
        ("userrl-learner", 4),
        ("userrl-policy", cfg.policy.vllm.tensor_parallel_size),
        ("userrl-env", 0),
    ):
        pod = docs[("Deployment", name)]["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        assert c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0) == gpus, name
        runs = next(m for m in c["volumeMounts"] if m["name"] == "runs")
        assert runs["mountPath"] == cfg.run_dir  # weights are published where the config says
        assert {"name": "runs", "persistentVolumeClaim": {"claimName": "userrl-runs"}} in pod["volumes"]
        env = {e["name"]: e for e in c["env"]}
        assert env["USERRL_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "userrl-redis", "key": "url"}
    (c,) = learner["spec"]["template"]["spec"]["containers"]
    assert c["args"][0] == "learn"
    build_parser().parse_args(c["args"])


def test_external_redis_goes_through_a_secret_without_the_password(gpu_files: dict[str, str]) -> None:
    docs = _docs(gpu_files)
    assert not [d for d in docs if d["kind"] in ("StatefulSet", "Service")]  # no bundled Redis
    (secret,) = [d for d in docs if d["kind"] == "Secret"]
    assert secret["stringData"]["url"] == f"redis://:{PASSWORD_PLACEHOLDER}@redis.internal:6380/2"
    assert [rel for rel, text in gpu_files.items() if "s3cret" in text] == []
    assert secret_url("rediss://user:pw@h:1/0") == f"rediss://user:{PASSWORD_PLACEHOLDER}@h:1/0"
    assert secret_url("redis://h:6379/0") == "redis://h:6379/0"


def test_compose_learner_gpus_shared_volume_and_external_url(gpu_files: dict[str, str]) -> None:
    doc = yaml.safe_load(gpu_files["compose.yaml"])
    services = doc["services"]
    assert "redis" not in services and set(doc["volumes"]) == {"runs"}
    for name in ("learner", "policy", "env"):
        s = services[name]
        assert s["volumes"] == ["runs:/shared/runs/gpu"]
        assert s["environment"]["USERRL_REDIS_URL"].startswith("${USERRL_REDIS_URL:?")
        assert "depends_on" not in s
    devices = services["learner"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 4, "capabilities": ["gpu"]}]
    assert services["policy"]["deploy"]["resources"]["reservations"]["devices"][0]["count"] == 1
    assert "resources" not in services["env"]["deploy"]
    assert services["learner"]["command"][:3] == ["learn", "--config", "/app/deploy/gpu.yaml"]
    build_parser().parse_args(services["learner"]["command"])


def test_local_compose_bundles_redis_and_a_cpu_learner() -> None:
    doc = yaml.safe_load((REPO / "deploy" / "compose.yaml").read_text())
    learner = doc["services"]["learner"]
    assert learner["environment"]["USERRL_REDIS_URL"] == "redis://redis:6379/0"
    assert learner["volumes"] == ["runs:/app/runs/local"] == doc["services"]["policy"]["volumes"]
    assert "resources" not in learner["deploy"]


def test_dockerfile_gpu_build_arg_installs_vllm() -> None:
    text = (REPO / "deploy" / "Dockerfile").read_text()
    assert "ARG GPU=0" in text and '".[train,lora,gpu]"' in text
