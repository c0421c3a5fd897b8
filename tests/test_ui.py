"""`userrl ui`: every endpoint over HTTP against a real deploy, the token, and a real browser.

One deploy serves the module: the launcher's env, user and reward workers plus a slow scripted
policy worker (``tests/ui_policy.py``) whose first turn of each episode carries ``<script>``.
The web view connects as a Redis ACL user that may only read, and each test checks the ACL log
afterwards: a single write command from the view would be refused and logged.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
import redis
from starlette.testclient import TestClient

from tests.ui_policy import INJECTED
from tests.ui_support import (
    CI,
    Deploy,
    Server,
    add_dead_letter,
    free_port,
    live_deploy,
    make_ui,
    refusals,
    run_async,
    sse_events,
    wait_until,
)
from userrl.bus.client import make_client
from userrl.bus.keys import Keys
from userrl.bus.transport import Bus
from userrl.cli import main
from userrl.envs.datasets import load_tasks
from userrl.errors import ConfigError
from userrl.learner.metrics import MetricsLog
from userrl.ui import UISettings, create_app
from userrl.ui.data import MetricsTail, gym_task_from_id
from userrl.ui.streams import resume_id

pytestmark = [pytest.mark.integration]

TOKEN = "s3cret-token-for-tests"


# ---- the deploy and the read-only user ---------------------------------------------------------


@pytest.fixture(scope="module")
def deploy(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deploy]:
    run = "ui" + uuid.uuid4().hex[:8]
    run_dir = tmp_path_factory.mktemp("ui-run")
    slow = {"UI_TEST_POLICY_DELAY": "0.7"}
    with live_deploy(redis_url, run, run_dir, [], "tests.ui_policy:SlowPolicyWorker", slow) as d:
        yield d


@pytest.fixture
def readonly_url(redis_url: str) -> Iterator[str]:
    """A URL for an ACL user that may read anything and write nothing; afterwards, no command
    of that user may have been refused (the ACL log names the user of each refusal)."""
    name, password = "ui-ro-" + uuid.uuid4().hex[:6], uuid.uuid4().hex
    with redis.Redis.from_url(redis_url) as r:
        r.execute_command(
            "ACL", "SETUSER", name, "reset", "on", f">{password}", "~*", "&*", "+@read", "+@connection", "-@write"
        )
        parts = urlsplit(redis_url)  # the session's URL may carry the default user's password
        url = urlunsplit(parts._replace(netloc=f"{name}:{password}@{parts.hostname}:{parts.port}"))
        try:
            with redis.Redis.from_url(url) as ro, pytest.raises(redis.exceptions.NoPermissionError):
                ro.set("userrl:ui-test:probe", 1)  # the user really cannot write
            probe = refusals(r, name)
            assert sum(e["count"] for e in probe) == 1
            yield url
            refused = refusals(r, name)
            assert refused == probe, f"the web view sent commands a read-only user may not: {refused}"
        finally:
            r.execute_command("ACL", "DELUSER", name)


# ---- HTTP ------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_every_endpoint_over_http(deploy: Deploy, readonly_url: str) -> None:
    ids = deploy.dispatch(["userrl/Telepathy-v0", "userrl/Function-v0"], 2, "http:")
    add_dead_letter(deploy)
    metrics = MetricsLog(deploy.run_dir / "metrics.jsonl")
    for step in range(3):
        metrics.log(
            step,
            {
                "rollout/score_mean": 0.1 * step,
                "rollout/score/Telepathy-v0": 0.2 * step,
                "loss/policy": 1.0 - step / 10,
                "policy/clip_frac": 0.01,
            },
        )
    with Server(make_ui(deploy, readonly_url)) as srv, httpx.Client(base_url=srv.url) as c:
        # pages and static files
        r = c.get("/", follow_redirects=False)
        assert r.status_code in (302, 307) and r.headers["location"] == "/episodes"
        for path in ("/episodes", "/episode?id=x", "/system", "/learning"):
            r = c.get(path)
            assert r.status_code == 200 and "text/html" in r.headers["content-type"], path
            assert "script-src 'self'" in r.headers["content-security-policy"]
            assert '<script src="/static/ui.js"></script>' in r.text
        for name in ("ui.js", "plot.js", "episodes.js", "episode.js", "system.js", "learning.js", "style.css"):
            assert c.get(f"/static/{name}").status_code == 200, name
        assert c.post("/api/episodes").status_code == 405
        assert c.get("/static/../app.py").status_code == 404

        # episodes list, filters
        rows = {r["episode"]: r for r in c.get("/api/episodes").json()["rows"]}
        assert set(ids) <= set(rows)
        tele = rows[ids[0]]
        assert (tele["gym"], tele["status"], tele["version"]) == ("Telepathy-v0", "finished", 0)
        assert tele["task"] == load_tasks("userrl/Telepathy-v0", "test")[0]["id"]
        assert tele["turn"] >= 1 and tele["worker"] == "policy-0" and tele["score"] is not None
        assert tele["return"] == tele["score"]  # the new name; "score" is its deprecated alias
        assert tele["age_s"] >= 0 and not tele["expired"]
        assert {"Telepathy-v0", "Function-v0"} <= set(c.get("/api/episodes").json()["gyms"])
        only = c.get("/api/episodes", params={"gym": "Function-v0"}).json()["rows"]
        assert only and {r["gym"] for r in only} == {"Function-v0"}
        assert c.get("/api/episodes", params={"status": "live"}).json()["rows"] == []
        assert c.get("/api/episodes", params={"status": "bogus"}).status_code == 400

        # one episode: JSON, then the SSE stream replays it to its end; Last-Event-ID resumes
        ep = c.get("/api/episode", params={"id": ids[0]}).json()
        assert ep["gym"] == "Telepathy-v0" and ep["state"] == "finished" and ep["entries"][-1]["role"] == "end"
        assert INJECTED in next(e["text"] for e in ep["entries"] if e["role"] == "assistant")
        events = sse_events(c, f"/api/stream/episode?id={ids[0]}", lambda ev: ev[-1][0] == "end")
        entries = [d for n, d in events if n == "entry"]
        assert [e["role"] for e in entries] == [e["role"] for e in ep["entries"]]
        resumed = sse_events(
            c,
            f"/api/stream/episode?id={ids[0]}",
            lambda ev: ev[-1][0] == "end",
            headers={"Last-Event-ID": entries[2]["_id"]},
        )
        assert [d["_id"] for n, d in resumed if n == "entry"] == [e["_id"] for e in entries[3:]]

        # system: workers, lag/pending, the dead letter and its reason, the supervisor
        s = c.get("/api/system", params={"sample": "0.3"}).json()
        assert s["roles"]["env"]["live"] == 1 and s["roles"]["policy"]["workers"][0]["worker"] == "policy-0"
        assert s["roles"]["env"]["pending"] == 0 and s["roles"]["env"]["lag"] == 0
        assert s["dead_letters"] == 1 and s["dead"][0]["error"] == "undecodable: <b>not msgpack</b>"
        assert set(s["supervisor"]["restarts"]) == {"env", "policy", "user", "reward"}
        assert s["episodes"]["finished"] >= len(ids)
        ((name, snap),) = sse_events(c, "/api/stream/system", lambda ev: len(ev) == 1)
        assert name == "system" and "env" in snap["roles"]

        # learning: the rows so far, then the stream sends rows appended later
        assert [r["step"] for r in c.get("/api/metrics").json()["rows"]] == [0, 1, 2]

        def grown(ev: list[tuple[str, Any]]) -> bool:
            steps = [r["step"] for n, d in ev if n == "rows" for r in d]
            if steps == [0, 1, 2]:
                metrics.log(3, {"rollout/score_mean": 0.5})
            return steps == [0, 1, 2, 3]

        sse_events(c, "/api/stream/metrics", grown)

        # the episodes stream: a snapshot of the list; a filter applies to it
        ((name, data),) = sse_events(c, "/api/stream/episodes?gym=Telepathy-v0", lambda ev: len(ev) == 1)
        assert name == "episodes" and {r["gym"] for r in data["rows"]} == {"Telepathy-v0"}

        # an episode that finished and expired says so instead of waiting forever
        run_async(
            lambda bus: bus.redis.zadd(bus.keys.finished, {"gone:Telepathy-v0:x/0": time.time()}),
            deploy.redis_url,
            deploy.run,
        )
        assert sse_events(c, "/api/stream/episode?id=gone:Telepathy-v0:x/0", lambda ev: True) == [
            ("expired", {"episode": "gone:Telepathy-v0:x/0"})
        ]
        gone = c.get("/api/episodes", params={"gym": "Telepathy-v0"}).json()["rows"]
        assert next(r for r in gone if r["episode"] == "gone:Telepathy-v0:x/0")["expired"]


def test_live_episode_stream_sends_turns_as_they_happen(deploy: Deploy, readonly_url: str) -> None:
    (eid,) = deploy.dispatch(["userrl/Telepathy-v0"], 1, "sse:", wait=False)
    with Server(make_ui(deploy, readonly_url)) as srv, httpx.Client(base_url=srv.url) as c:
        stamps: list[float] = []

        def arrived(ev: list[tuple[str, Any]]) -> bool:
            stamps.append(time.monotonic())
            return ev[-1][0] == "end"

        events = sse_events(c, f"/api/stream/episode?id={eid}", arrived, timeout=60)
    roles = [d["role"] for n, d in events if n == "entry"]
    assert roles[:3] == ["system", "user", "assistant"] and roles[-1] == "end"
    # the policy takes 0.7 s a turn: entries reached us over seconds, not in one burst
    assert stamps[-1] - stamps[0] > 1.0


# ---- token and binding ---------------------------------------------------------------------------


def test_non_loopback_needs_a_token(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="--token"):
        UISettings(host="0.0.0.0")
    with pytest.raises(ConfigError, match="ui.token"):
        UISettings(token="short")
    UISettings(host="0.0.0.0", token=TOKEN)
    UISettings(host="::1")
    assert main(["ui", "--host", "0.0.0.0", "--config", CI]) == 2
    assert "USERRL_UI_TOKEN" in capsys.readouterr().err


def test_every_request_needs_the_token() -> None:
    app = create_app(UISettings(host="0.0.0.0", token=TOKEN), lambda: pytest.fail("no Redis needed"))
    c = TestClient(app)
    for path in (
        "/",
        "/episodes",
        "/static/ui.js",
        "/api/episodes",
        "/api/system",
        "/api/stream/episode?id=x",
        "/api/metrics",
    ):
        r = c.get(path, follow_redirects=False)
        assert r.status_code == 401, path
        assert "content-security-policy" in r.headers
    assert c.get("/episodes", params={"token": TOKEN + "x"}).status_code == 401
    assert c.get("/episodes", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert c.get("/episodes", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert c.get("/episodes", headers={"X-UserRL-Token": TOKEN}).status_code == 200
    # a browser's first visit passes ?token=; it gets the cookie and the URL without the token
    r = c.get("/episode", params={"id": "a:b/0", "token": TOKEN}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/episode?id=a%3Ab%2F0"
    assert "HttpOnly" in r.headers["set-cookie"] and TOKEN in r.headers["set-cookie"]
    assert c.get(r.headers["location"]).status_code == 200
    assert c.get("/static/ui.js").status_code == 200
    assert c.get("/api/metrics", params={"token": TOKEN}, follow_redirects=False).status_code != 303
    c.cookies.clear()
    assert c.get("/static/ui.js").status_code == 401


def test_loopback_without_token_refuses_foreign_host_names() -> None:
    c = TestClient(create_app(UISettings(), lambda: pytest.fail("no Redis needed")), base_url="http://127.0.0.1")
    assert c.get("/static/ui.js").status_code == 200
    assert c.get("/static/ui.js", headers={"host": "evil.example"}).status_code == 400


def test_redis_down_is_a_503_and_a_problem_event() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    settings = UISettings(refresh_s=0.1)
    app = create_app(settings, lambda: Bus(make_client(url, retries=0, connect_timeout_s=1), Keys("nobody")))
    with TestClient(app, base_url="http://127.0.0.1") as c:
        r = c.get("/api/system")
        assert r.status_code == 503 and "Redis: ConnectionError" in r.json()["error"]
        assert c.get("/api/episodes").status_code == 503
        r = c.get("/api/stream/episodes")  # the stream ends with the problem: the test client sees it whole
        assert r.text.startswith("retry: 3000\nevent: problem\ndata: ") and "ConnectionError" in r.text
        assert c.get("/episodes").status_code == 200  # the pages still load and say what is wrong


def test_ui_command_serves(deploy: Deploy, tmp_path: Path) -> None:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "userrl",
        "ui",
        "--port",
        str(port),
        "--config",
        CI,
        *sum((["--set", o] for o in deploy.overrides), []),
    ]
    with open(tmp_path / "ui.log", "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=log, env={**os.environ, "USERRL_UI_TOKEN": TOKEN})
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "ui.log").read_text()
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/api/system", headers={"X-UserRL-Token": TOKEN})
                break
            except httpx.ConnectError:
                time.sleep(0.2)
        assert r.status_code == 200 and r.json()["run"] == deploy.run
        assert httpx.get(f"http://127.0.0.1:{port}/api/system").status_code == 401
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C: a clean stop
        assert proc.wait(timeout=20) == 0
    out = (tmp_path / "ui.log").read_text()
    assert f"http://127.0.0.1:{port}/" in out and "Traceback" not in out


# ---- pure parts --------------------------------------------------------------------------------


def test_gym_and_task_from_episode_ids() -> None:
    assert gym_task_from_id("run:Function-v0:f12/3") == ("Function-v0", "f12")
    assert gym_task_from_id("Telepathy-v0:t1/0") == ("Telepathy-v0", "t1")
    assert gym_task_from_id("odd") == ("", "")


def test_resume_id_takes_only_stream_ids() -> None:
    assert resume_id("1700000000000-3") == "1700000000000-3"
    for bad in (None, "", "$", "+", "1-2-3", "abc", "1" * 30 + "-0"):
        assert resume_id(bad) == "0-0", bad


def test_metrics_tail_reads_complete_lines_and_notices_a_new_file(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    tail = MetricsTail(path)
    assert tail.read_new() == ([], False)
    path.write_text('{"step": 0}\n{"step": 1}\n{"step": 2, "par')
    assert tail.read_new() == ([{"step": 0}, {"step": 1}], False)
    with path.open("a") as f:
        f.write('tial": 1}\nnot json\n')
    assert tail.read_new() == ([{"step": 2, "partial": 1}], False)
    path.write_text('{"step": 0}\n')
    assert tail.read_new() == ([{"step": 0}], True)


# ---- a real browser ------------------------------------------------------------------------------


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Headless Debian chromium through chromium-driver (Selenium; nothing is downloaded)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_bin = shutil.which("chromedriver")
    if not chromium or not driver_bin:
        pytest.skip("Debian's chromium and chromium-driver are not installed (.ci/run installs them with apt)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium (the dev extra) is not installed")
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must not look for downloads
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1000",
        "--disable-extensions",
        "--no-first-run",
    ):
        opts.add_argument(arg)
    driver = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=driver_bin))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_browser_shows_live_dialogues_as_text(browser: Any, deploy: Deploy, readonly_url: str, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    MetricsLog(deploy.run_dir / "metrics.jsonl").log(0, {"rollout/score_mean": 0.2, "loss/policy": 0.9})
    with Server(make_ui(deploy, readonly_url)) as srv:
        browser.get(srv.url + "/episodes")
        deploy.dispatch(["userrl/Telepathy-v0"], 2, "browser:", wait=False)
        # an episode appears in the list while it runs
        link = wait_until(
            lambda: browser.find_element(By.CSS_SELECTOR, 'tr.st-live[data-episode^="browser:"] a'),
            60,
            "a live episode in the list",
        )
        browser.save_screenshot(str(tmp_path / "episodes.png"))
        link.click()
        wait_until(lambda: "/episode?id=" in browser.current_url, 10, "the episode page")

        def count() -> int:
            return len(browser.find_elements(By.CSS_SELECTOR, "#dialogue .entry"))

        first = wait_until(count, 30, "the first turns")
        assert wait_until(lambda: count() > first, 30, "a turn arriving live"), "no turn arrived"
        # a policy turn that contains markup is shown as that text, never run or parsed
        policy = wait_until(
            lambda: [
                e
                for e in browser.find_elements(By.CSS_SELECTOR, "#dialogue .role-assistant pre")
                if "<script>" in e.text
            ],
            30,
            "the injected policy turn",
        )
        assert INJECTED in policy[0].text
        assert browser.find_elements(By.CSS_SELECTOR, "#dialogue script, #dialogue img") == []
        assert browser.execute_script("return window.__pwned === undefined")
        wait_until(lambda: browser.find_element(By.ID, "state").text in ("finished", "failed"), 60, "the end")
        assert browser.find_element(By.CSS_SELECTOR, "#dialogue .role-end").is_displayed()
        assert "policy v0" in browser.find_element(By.CSS_SELECTOR, "#dialogue .role-assistant").text
        browser.save_screenshot(str(tmp_path / "episode.png"))

        browser.get(srv.url + "/system")
        wait_until(lambda: browser.find_element(By.CSS_SELECTOR, 'tr[data-role="env"]'), 20, "the roles table")
        assert "policy-0" in browser.find_element(By.ID, "workers").text

        def points() -> int:  # one per role and snapshot on the throughput chart
            return len(browser.find_elements(By.CSS_SELECTOR, "#rate circle"))

        seen = wait_until(points, 20, "a throughput point")
        wait_until(lambda: points() > seen, 20, "the next system snapshot")
        browser.save_screenshot(str(tmp_path / "system.png"))
        browser.get(srv.url + "/learning")
        wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, "#charts svg.chart circle"), 20, "a metrics chart")
        metrics = MetricsLog(deploy.run_dir / "metrics.jsonl")
        n = len(metrics.read())
        wait_until(lambda: browser.find_element(By.ID, "info").text.startswith(f"{n} steps"), 20, "the steps so far")
        metrics.log(n, {"rollout/score_mean": 0.4, "loss/policy": 0.7})
        wait_until(lambda: browser.find_element(By.ID, "info").text.startswith(f"{n + 1} steps"), 20, "the new step")
        browser.save_screenshot(str(tmp_path / "learning.png"))
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, f"the pages logged errors: {errors}"
        browser.get("about:blank")  # closes the page's event stream before the server stops
    for name in ("episodes", "episode", "system", "learning"):
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000, name
