"""Issue 22: a person in the user's seat, from the web view, against a real deploy.

The deploy (env, user and reward workers under the launcher, ``user.seat: true``) plays
TelepathyGym with a scripted policy whose first action waits for the test's go
(``tests/seat_policy.py``), so the seat is claimed before the agent's first question whatever
the load. The person's replies go through the HTTP API (and, in the last test, through the page
in headless Chromium); they reach the episode through the ``user`` stream, and the turns say a
person wrote them. Off by default, the view has no seat at all.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from starlette.testclient import TestClient

from tests.seat_policy import gate_key
from tests.test_ui import browser  # noqa: F401 - the headless Chromium fixture
from tests.ui_support import Deploy, Server, live_deploy, make_ui, run_async, wait_until
from userrl.bus.keys import Keys
from userrl.bus.messages import Trajectory
from userrl.bus.transport import Bus
from userrl.errors import ConfigError
from userrl.learner.metrics import MetricsLog
from userrl.learner.sim_health import simulator_metrics
from userrl.rollouts import wait_trajectories
from userrl.ui import UISettings, create_app

pytestmark = [pytest.mark.integration]

TOKEN = "s3at-token-for-tests"
GYM = "userrl/Telepathy-v0"


@pytest.fixture(scope="module")
def deploy(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deploy]:
    run = "seat" + uuid.uuid4().hex[:8]
    run_dir = tmp_path_factory.mktemp("seat-run")
    with live_deploy(redis_url, run, run_dir, ["user.seat=true"], "tests.seat_policy:GatedPolicyWorker", {}) as d:
        yield d


def start_episode(deploy: Deploy, prefix: str) -> str:
    """One live Telepathy episode whose agent waits for :func:`go` before its first question."""
    (eid,) = deploy.dispatch([GYM], 1, prefix, wait=False)
    with redis.Redis.from_url(deploy.redis_url) as r:
        wait_until(lambda: r.zscore(Keys(deploy.run).live, eid) is not None, 60, "the episode to go live")
    return eid


def go(deploy: Deploy, eid: str) -> None:
    run_async(lambda bus: bus.redis.set(gate_key(bus, eid), 1, ex=3600), deploy.redis_url, deploy.run)


def trajectory(deploy: Deploy, eid: str) -> Trajectory:
    async def wait(bus: Bus) -> Trajectory:
        return (await wait_trajectories(bus, [eid], timeout=120))[eid][0]

    return run_async(wait, deploy.redis_url, deploy.run)


def calls(t: Trajectory) -> list[tuple[str, str, str]]:
    """``(query kind, query name, who answered)`` of every user/judge call, in order."""
    return [(u["kind"], u["name"], u["by"]) for turn in t.turns for u in turn["users"]]


def seat_ui(deploy: Deploy, timeout_s: float = 30.0) -> Any:
    # the seat writes (claims, replies), so it connects as a user that may write
    return make_ui(deploy, deploy.redis_url, token=TOKEN, seat=True, seat_timeout_s=timeout_s)


def open_ask(c: httpx.Client, eid: str, holder: str) -> dict[str, Any]:
    def ask() -> Any:
        s = c.get("/api/seat", params={"id": eid, "holder": holder}).json()
        assert s["mine"], s
        return s["asks"][0] if s["asks"] else None

    return wait_until(ask, 60, "a question parked for the seat")


# ---- off by default ----------------------------------------------------------------------------


def test_without_the_seat_the_view_has_no_way_to_write() -> None:
    app = create_app(UISettings(token=TOKEN), lambda: pytest.fail("no Redis needed"))
    c = TestClient(app, headers={"X-UserRL-Token": TOKEN})
    assert c.get("/api/seat", params={"id": "x"}).status_code == 404
    for path in ("/api/seat/claim", "/api/seat/reply", "/api/seat/renew", "/api/seat/release"):
        assert c.post(path, json={"id": "x"}).status_code == 404, path
    with pytest.raises(ConfigError, match="user.seat.*needs a token"):
        UISettings(seat=True)


# ---- over HTTP -----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_person_answers_for_the_user_and_the_episode_continues(deploy: Deploy) -> None:
    eid = start_episode(deploy, "seat-http:")
    with Server(seat_ui(deploy)) as srv, httpx.Client(base_url=srv.url, headers={"X-UserRL-Token": TOKEN}) as c:
        assert c.post("/api/seat/claim", content=b"id=x", headers={"content-type": "text/plain"}).status_code == 415
        assert c.post("/api/seat/claim", json={"id": eid, "who": "no spaces!"}).status_code == 400
        assert c.post("/api/seat/claim", json={"id": "nobody:x/0", "who": "tester"}).status_code == 404
        r = c.post("/api/seat/claim", json={"id": eid, "who": "tester"})
        assert r.status_code == 200, r.text
        holder = r.json()["holder"]
        r = c.post("/api/seat/claim", json={"id": eid, "who": "mallory"})
        assert r.status_code == 409 and "taken" in r.json()["error"]
        stranger = c.get("/api/seat", params={"id": eid}).json()  # no holder: no questions, no hidden task
        assert stranger["claim"]["who"] == "tester" and not stranger["mine"] and "asks" not in stranger
        go(deploy, eid)

        ask = open_ask(c, eid, holder)
        assert (ask["seq"], ask["hop"], ask["name"]) == (0, 1, "yes_no")
        assert "Is it an animal?" in ask["question"] and "Reply with JSON only" in ask["instructions"]
        reply = {"id": eid, "seq": 0, "hop": 1, "text": "No"}
        # only the holder of the claim, only an open question, only a reply the gym can use
        assert c.post("/api/seat/reply", json={**reply, "holder": "not-the-holder"}).status_code == 403
        assert c.post("/api/seat/reply", json={**reply, "holder": holder, "hop": 2}).status_code == 409
        bad = c.post("/api/seat/reply", json={**reply, "holder": holder, "text": '{"answer": "Perhaps"}'})
        assert bad.status_code == 422 and "Yes, No or Maybe" in bad.json()["error"]
        assert c.post("/api/seat/reply", json={**reply, "holder": holder}).status_code == 202

        def answered() -> bool:  # the next question may already wait for the person (still seated)
            asks = c.get("/api/seat", params={"id": eid, "holder": holder}).json()["asks"]
            return all((a["seq"], a["hop"]) != (0, 1) for a in asks)

        wait_until(answered, 30, "the person's reply to be taken")
        assert c.post("/api/seat/reply", json={**reply, "holder": holder}).status_code == 409  # answered once
        assert c.post("/api/seat/release", json={"id": eid, "holder": "not-the-holder"}).status_code == 403
        assert c.post("/api/seat/release", json={"id": eid, "holder": holder}).status_code == 200
    t = trajectory(deploy, eid)
    assert t.status == "ok", t.error
    who = calls(t)
    assert who[0] == ("respond", "yes_no", "human:tester")  # the person's reply
    assert all(by == "scripted" for _, _, by in who[1:])  # the seat was given back
    assert ("judge", "judge_guess", "scripted") in who  # a person never grades
    assert t.turns[0]["observation"] == "No."
    entries = run_async(lambda bus: bus.redis.xrange(bus.keys.episode(eid)), deploy.redis_url, deploy.run)
    env = [f for _, f in entries if f[b"role"] == b"env"]
    assert env[0][b"by"] == b"human:tester" and env[0][b"text"].startswith(b"No.")


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_an_abandoned_claim_times_out_back_to_the_simulator(deploy: Deploy) -> None:
    eid = start_episode(deploy, "seat-gone:")
    with (
        Server(seat_ui(deploy, timeout_s=2)) as srv,
        httpx.Client(base_url=srv.url, headers={"X-UserRL-Token": TOKEN}) as c,
    ):
        holder = c.post("/api/seat/claim", json={"id": eid, "who": "walked-away"}).json()["holder"]
        go(deploy, eid)
        open_ask(c, eid, holder)  # parked for the person, who never answers nor renews
        t = trajectory(deploy, eid)
        late = c.post("/api/seat/reply", json={"id": eid, "holder": holder, "seq": 0, "hop": 1, "text": "Yes"})
        assert late.status_code == 403
        assert c.post("/api/seat/renew", json={"id": eid, "holder": holder}).status_code == 410
    assert t.status == "ok", t.error
    assert {by for _, _, by in calls(t)} == {"scripted"}


# ---- in a browser ----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_browser_a_person_takes_the_seat_and_replies(
    browser: Any,  # noqa: F811
    deploy: Deploy,
    tmp_path: Path,
) -> None:
    from selenium.webdriver.common.by import By

    eid = start_episode(deploy, "seat-browser:")
    with Server(seat_ui(deploy)) as srv:
        browser.get(f"{srv.url}/episode?id={eid}&token={TOKEN}")
        name = wait_until(lambda: browser.find_element(By.ID, "seat-who"), 30, "the seat's name field")
        name.send_keys("alice")
        browser.find_element(By.ID, "seat-claim").click()
        wait_until(lambda: browser.find_element(By.ID, "seat-release"), 30, "the claim")
        go(deploy, eid)
        box = wait_until(lambda: browser.find_element(By.CSS_SELECTOR, "#seat textarea.seat-reply"), 60, "a question")
        assert "Is it an animal?" in browser.find_element(By.CSS_SELECTOR, "#seat .seat-question").text
        browser.save_screenshot(str(tmp_path / "seat-question.png"))
        box.send_keys("Maybe")
        browser.find_element(By.CSS_SELECTOR, "#seat button.seat-send").click()

        def human_turn() -> Any:
            for e in browser.find_elements(By.CSS_SELECTOR, "#dialogue .role-env"):
                if "user: human:alice" in e.text:
                    return e
            return None

        entry = wait_until(human_turn, 60, "the person's reply arriving in the live episode")
        assert entry.find_element(By.CSS_SELECTOR, "pre").text.startswith("Maybe.")
        browser.save_screenshot(str(tmp_path / "seat-reply.png"))
        browser.find_element(By.ID, "seat-release").click()
        wait_until(lambda: browser.find_element(By.ID, "state").text == "finished", 60, "the episode's end")
        assert wait_until(lambda: browser.find_element(By.ID, "seat-closed"), 30, "the seat closing").is_displayed()
        t = trajectory(deploy, eid)
        assert t.status == "ok" and calls(t)[0] == ("respond", "yes_no", "human:alice")

        # the Learning page draws the simulator's health from the learner's metrics
        health = simulator_metrics([{"items": [{"meta": t.meta, "turns": t.turns}]}])
        MetricsLog(deploy.run_dir / "metrics.jsonl").log(1, health)
        browser.get(f"{srv.url}/learning")
        titles = lambda: {e.text for e in browser.find_elements(By.CSS_SELECTOR, "#charts .chart-title")}  # noqa: E731
        wait_until(lambda: {"how episodes ended", "user latency (ms)"} <= titles(), 30, "the health charts")
        assert "user calls by simulator" in titles()
        info = browser.find_element(By.ID, "info").text
        assert "user turns by " in info and "human:alice (1)" in info and "scripted (" in info
        browser.save_screenshot(str(tmp_path / "learning-health.png"))
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, f"the pages logged errors: {errors}"
        browser.get("about:blank")  # closes the page's event stream before the server stops
    assert (tmp_path / "seat-reply.png").stat().st_size > 10_000
