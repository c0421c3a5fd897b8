"""`userrl status`, `scale` and `episodes ls|show|watch` on hand-built Redis state."""

from __future__ import annotations

import json
import time
from pathlib import Path

import anyio
import pytest

from userrl.bus.transport import Bus
from userrl.cli import main
from userrl.deploy.episodes import (
    Watch,
    format_dialogue,
    format_episodes,
    list_episodes,
    read_episode,
)
from userrl.deploy.status import collect_status, format_status

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

CI = str(Path(__file__).resolve().parents[1] / "deploy" / "ci.yaml")

DIALOGUE = [
    {"role": "system", "turn": 0, "text": "You are playing Telepathy."},
    {"role": "user", "turn": 0, "text": "Guess what I am thinking of."},
    {"role": "assistant", "turn": 0, "text": "[action] Is it an animal?", "version": 3, "worker": "policy-0"},
    {"role": "env", "turn": 0, "text": "Yes.\nReward: 0", "reward": 0.0, "worker": "env-0"},
    {"role": "assistant", "turn": 1, "text": "[answer] a cat", "version": 3, "worker": "policy-0"},
    {"role": "env", "turn": 1, "text": "Correct!\nReward: 1", "reward": 1.0, "worker": "env-0"},
    {"role": "end", "turn": 1, "text": "terminated", "reward": 1.0, "worker": "env-0"},
]


@pytest.fixture(autouse=True)
def _keep_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI configures structlog for the process; in tests that would bind pytest's capture."""
    monkeypatch.setattr("userrl.cli_deploy.configure_logging", lambda *a, **k: None)


async def add_entries(bus: Bus, episode: str, entries: list[dict]) -> None:
    for e in entries:
        await bus.redis.xadd(bus.keys.episode(episode), {k: str(v) for k, v in e.items()})


async def cli(*argv: str) -> int:
    """Run the CLI in a thread (it starts its own event loop)."""
    return await anyio.to_thread.run_sync(main, list(argv))


def cli_args(bus: Bus, redis_url: str) -> list[str]:
    return ["--config", CI, "--set", f"run={bus.keys.run}", "--set", f"redis={redis_url}"]


async def build_situation(bus: Bus) -> None:
    env, user = bus.keys.stream("env"), bus.keys.stream("user")
    await bus.ensure_group(env, "env")
    for i in range(5):
        await bus.redis.xadd(env, {"p": b"x", "i": str(i)})
    got = await bus.redis.xreadgroup("env", "env-0", {env: ">"}, count=2)  # 2 pending, 3 lag
    assert len(got[0][1]) == 2
    await bus.ensure_group(user, "user")
    await bus.redis.xadd(user, {"p": b"\xc1 not msgpack"})
    (d,) = await bus.read(user, "user", "user-0")
    assert d.msg is None and d.error
    await bus.dead_letter(d, f"undecodable: {d.error}")
    now = time.time()
    for role, name, handled in (("env", "env-0", 7), ("env", "env-1", 3), ("user", "user-0", 1)):
        hb = {
            "role": role,
            "worker": name,
            "pid": 100 + handled,
            "host": "h",
            "at": now,
            "in_flight": 1,
            "handled": handled,
            "committed": handled,
            "duplicates": 0,
            "dead_lettered": int(role == "user"),
            "errors": 0,
        }
        await bus.redis.set(bus.keys.heartbeat(role, name), json.dumps(hb), px=10_000)
    await bus.redis.hset(bus.keys.replicas, mapping={"env": 2, "policy": 1, "user": 1, "reward": 0})
    await bus.redis.zadd(bus.keys.live, {"Telepathy:t1/0": now - 5, "Telepathy:t1/1": now - 1})
    await bus.redis.zadd(bus.keys.finished, {"Telepathy:t0/0": now - 2})
    await add_entries(bus, "Telepathy:t0/0", DIALOGUE)
    await add_entries(bus, "Telepathy:t1/0", DIALOGUE[:4])


async def test_status_reports_lag_pending_heartbeats_and_dead_letters(bus: Bus) -> None:
    await build_situation(bus)
    s = await collect_status(bus, sample_s=0)
    env, user, policy = s["roles"]["env"], s["roles"]["user"], s["roles"]["policy"]
    assert (env["stream_length"], env["lag"], env["pending"], env["consumers"]) == (5, 3, 2, 1)
    assert env["wanted"] == 2 and env["live"] == 2
    assert [w["worker"] for w in env["workers"]] == ["env-0", "env-1"]
    assert env["workers"][0]["handled"] == 7 and 0 <= env["workers"][0]["age_s"] < 60  # seconds, not ms
    assert user["dead_letters"] == 1 and user["pending"] == 0 and s["dead_letters"] == 1
    assert env["dead_letters"] == 0
    assert policy["live"] == 0 and policy["wanted"] == 1 and policy["lag"] is None
    assert s["episodes"] == {"live": 2, "finished": 1}
    assert s["supervisor"] is None and s["counters"]["dead_lettered"] == 1
    table = format_status(s)
    assert "supervisor: none" in table
    env_row = next(line for line in table.splitlines() if line.startswith("env "))
    assert env_row.split() == ["env", "2", "2", "5", "3", "2", "0", "-"]
    assert "env-1" in table and "user-0" in table


async def test_status_throughput_from_two_samples(bus: Bus) -> None:
    await build_situation(bus)

    async def consume() -> None:
        await anyio.sleep(0.1)
        await bus.redis.xreadgroup("env", "env-1", {bus.keys.stream("env"): ">"}, count=3)

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        s = await collect_status(bus, sample_s=0.4)
    assert s["roles"]["env"]["throughput"] == pytest.approx(3 / 0.4, rel=0.3)
    assert s["roles"]["user"]["throughput"] == 0


async def test_status_cli_json_and_table(bus: Bus, redis_url: str, capsys) -> None:
    await build_situation(bus)
    capsys.readouterr()
    assert await cli("status", *cli_args(bus, redis_url), "--json", "--sample", "0") == 0
    s = json.loads(capsys.readouterr().out)
    assert s["roles"]["env"]["pending"] == 2
    assert await cli("status", *cli_args(bus, redis_url), "--sample", "0") == 0
    assert "ROLE" in capsys.readouterr().out


async def test_scale_cli_validates_and_writes_the_replicas_hash(bus: Bus, redis_url: str, capsys) -> None:
    args = cli_args(bus, redis_url)
    assert await cli("scale", "env=3", *args) == 2
    assert "no supervisor" in capsys.readouterr().err
    await bus.redis.set(bus.keys.supervisor, json.dumps({"pid": 1}), px=10_000)
    await bus.redis.hset(bus.keys.replicas, "env", 1)
    assert await cli("scale", "env=3", "user=2", *args) == 0
    assert capsys.readouterr().out.splitlines() == ["env: 1 -> 3", "user: - -> 2"]
    assert await bus.redis.hgetall(bus.keys.replicas) == {b"env": b"3", b"user": b"2"}
    for bad, why in (("learner=1", "unknown role"), ("env=-1", ">= 0"), ("env=two", "integer"), ("env", "ROLE=N")):
        assert await cli("scale", bad, *args) == 2
        assert why in capsys.readouterr().err
    assert await bus.redis.hget(bus.keys.replicas, "env") == b"3"


async def test_episodes_ls_and_show_are_readable(bus: Bus, redis_url: str, capsys) -> None:
    await build_situation(bus)
    capsys.readouterr()
    rows = {r["episode"]: r for r in await list_episodes(bus)}
    assert set(rows) == {"Telepathy:t1/0", "Telepathy:t1/1", "Telepathy:t0/0"}
    done = rows["Telepathy:t0/0"]
    assert (done["state"], done["turns"], done["last_reward"], done["score"], done["end"]) == (
        "finished",
        2,
        1.0,
        1.0,
        "terminated",
    )
    live = rows["Telepathy:t1/0"]
    assert (live["state"], live["turns"], live["last_reward"], live["end"]) == ("live", 1, 0.0, None)
    assert rows["Telepathy:t1/1"]["expired"]
    assert (done["return"], live["return"]) == (1.0, None)  # the sum of turn rewards; "score" is its old name
    table = format_episodes(list(rows.values()))
    assert "Telepathy:t0/0" in table and "terminated" in table
    assert table.splitlines()[0].split()[5] == "RETURN"
    text = format_dialogue("Telepathy:t0/0", await read_episode(bus, "Telepathy:t0/0"))
    lines = text.splitlines()
    assert lines[0] == "episode Telepathy:t0/0: 2 turn(s), ended terminated"
    assert "t0 assistant (v3, policy-0): [action] Is it an animal?" in lines
    assert "t1 env (reward=1):" in lines and "    Correct!" in lines
    assert await cli("episodes", "show", "Telepathy:t0/0", *cli_args(bus, redis_url)) == 0
    assert capsys.readouterr().out.strip() == text
    assert await cli("episodes", "show", "nope", *cli_args(bus, redis_url)) == 1
    assert await cli("episodes", "ls", *cli_args(bus, redis_url)) == 0
    assert "Telepathy:t1/0" in capsys.readouterr().out


async def test_watch_follows_new_turns_with_limit(bus: Bus) -> None:
    eid = "Function:f1/0"
    await add_entries(bus, eid, DIALOGUE[:2])
    lines: list[str] = []

    async def feed() -> None:
        for e in DIALOGUE[2:]:
            await anyio.sleep(0.05)
            await add_entries(bus, eid, [e])

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(feed)
            n = await Watch(bus, lines.append, episode_id=eid, limit=5, block_ms=200).run()
    assert n == 5 and len(lines) == 5
    assert lines[0].startswith("t0 system:") and lines[4].startswith("t1 assistant")


async def test_watch_without_id_follows_the_newest_live_episode(bus: Bus, redis_url: str, capsys) -> None:
    await bus.redis.zadd(bus.keys.live, {"old/0": time.time() - 10, "new/0": time.time()})
    await add_entries(bus, "old/0", DIALOGUE[:2])
    await add_entries(bus, "new/0", DIALOGUE[:3])
    lines: list[str] = []

    async def finish() -> None:
        await anyio.sleep(0.1)
        await add_entries(bus, "new/0", DIALOGUE[3:])

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(finish)
            n = await Watch(bus, lines.append, exit_when_done=True, block_ms=200).run()
    assert lines[0] == "--- following episode new/0"
    assert n == len(DIALOGUE) and lines[-1].startswith("[new/0] t1 end (reward=1): terminated")
    # the CLI: --limit stops it
    assert await cli("episodes", "watch", "old/0", "--limit", "2", *cli_args(bus, redis_url)) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
