"""Issue 22: ``userrl users eval`` (the same test tasks under several simulators, side by side)
and ``userrl users swap|show``, through the CLI against a real Redis.

Three simulators on the bundled test split, with the scripted expert as the policy: the scripted
user; an LLM user served over HTTP (a local OpenAI-compatible server whose replies are what the
scripted user would say, so its scores must equal the scripted column exactly); and the hf user
backend on a locally built, untrained tiny model, whose replies are unusable, so its episodes
fail with a typed reason that the report carries (never a silent zero).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from tests.openai_server import FakeOpenAIServer
from tests.test_user_worker import ScriptedLLM
from userrl.bus.keys import Keys
from userrl.cli import main

CI = str(Path(__file__).resolve().parents[1] / "deploy" / "ci.yaml")
GYMS = ["userrl/Telepathy-v0", "userrl/Intention-v0"]


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.train
@pytest.mark.timeout(400)
def test_users_eval_prints_scores_side_by_side(
    redis_url: str, run_name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("torch")
    from userrl.agents.tiny import build_tiny_model

    tiny = build_tiny_model(tmp_path / "tiny-user", seed=0)
    out = tmp_path / "report"
    with FakeOpenAIServer(ScriptedLLM(GYMS), model="fake-user") as srv:
        rc = main(
            [
                "users",
                "eval",
                "scripted",
                f"llm=openai:fake-user@{srv.base_url},api_key_env=,model_version=7",
                f"tiny=hf:{tiny},max_tokens=8",
                "--model",
                "scripted",
                "--gyms",
                *GYMS,
                "--tasks",
                "3",
                "--out",
                str(out),
                "--config",
                CI,
                "--set",
                f"redis={redis_url}",
                "--set",
                f"run={run_name}",
                "--set",
                f"run_dir={tmp_path / 'run'}",
            ]
        )
        n_llm = len(srv.chat_requests)
    printed = capsys.readouterr().out
    assert rc == 0, printed
    lines = printed.splitlines()
    assert [c.strip() for c in lines[0].split("|")] == ["gym", "scripted", "llm", "tiny", "gap"]
    assert [ln.split("|")[0].strip() for ln in lines[1:4]] == ["Telepathy-v0", "Intention-v0", "overall"]

    report = json.loads((out / "report.json").read_text())
    assert (out / "report.png").stat().st_size > 5_000
    sims = report["simulators"]
    for gym in GYMS:
        row = report["side_by_side"]["gyms"][gym]["scores"]
        # same tasks, same answers (the sums may add the episodes in another order)
        assert row["scripted"] > 0 and row["llm"] == pytest.approx(row["scripted"]), (gym, row)
        assert row["tiny"] == 0.0
        assert report["side_by_side"]["gyms"][gym]["gap"] == pytest.approx(row["scripted"])
        assert sims["tiny"]["report"]["gyms"][gym]["failed"] == 3
    # every simulator's turns were answered by that simulator, and say so
    assert set(sims["scripted"]["answered_by"]) == {"scripted"}
    assert set(sims["llm"]["answered_by"]) == {"openai:fake-user@7"}
    assert sum(sims["llm"]["answered_by"].values()) == n_llm
    assert sims["tiny"]["answered_by"] == {}  # no usable reply: the failed turns are not recorded
    assert set(sims["tiny"]["failed"]) <= {"user_empty", "user_malformed"} and sum(sims["tiny"]["failed"].values()) == 6
    assert "tiny: user turns by no user calls; failed episodes: user_" in printed
    assert sims["scripted"]["failed"] == {} and sims["llm"]["failed"] == {}
    with redis.Redis.from_url(redis_url) as r:  # the deploy's user role is back on its config
        assert not r.exists(f"{Keys(run_name).prefix}user:target")


@pytest.mark.integration
def test_users_swap_and_show_through_the_cli(
    redis_url: str, run_name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--config", CI, "--set", f"redis={redis_url}", "--set", f"run={run_name}", "--set", f"run_dir={tmp_path}"]
    assert main(["users", "show", *base]) == 0
    assert capsys.readouterr().out.splitlines() == ["target: none (each worker's config)", "no user worker is alive"]
    assert main(["users", "swap", "openai:m@http://127.0.0.1:9/v1,api_key_env=", "--timeout", "0", *base]) == 0
    assert "not waiting" in capsys.readouterr().out
    assert main(["users", "show", "--json", *base]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["target"]["fields"] == {
        "backend": "openai",
        "model": "m",
        "base_url": "http://127.0.0.1:9/v1",
        "api_key_env": "",
    }
    # no worker alive to switch: waiting says so instead of hanging
    assert main(["users", "swap", "scripted", "--timeout", "0.5", *base]) == 2
    assert "did not switch" in capsys.readouterr().err
    # a bad spec is refused before anything is written
    assert main(["users", "swap", "hf", *base]) == 2
    assert "not key=value" in capsys.readouterr().err
    assert main(["users", "swap", *base]) == 2
    assert main(["users", "swap", "--reset", "--timeout", "0", *base]) == 0
    capsys.readouterr()
    assert main(["users", "show", *base]) == 0
    assert capsys.readouterr().out.startswith("target: none")
