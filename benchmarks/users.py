"""User-role throughput: the user worker next to raw calls to the same model server.

One vLLM server (``userrl serve``'s command line: the CPU defaults, compact structured output)
serves a user model; the queries are the gyms' own user and judge questions from their test
split (:func:`userrl.learner.user_sft.collect_examples`), each sent with the gym's LLM prompt and
reply schema at temperature 0. At 1, 16 and 64 concurrent dialogues (each asks its next
question when the last one is answered), for the same number of seconds each, in one run:

- **raw**: each dialogue posts ``/v1/chat/completions`` straight to the server (httpx, a client of
  one connection per dialogue) and waits for the answer;
- **worker**: each dialogue puts a ``user_request`` on the ``user`` stream of a private Redis
  and waits for the ``user_reply`` on the ``env`` stream, as an env worker does; a
  ``userrl worker user`` process (``user.backend: openai``) answers through the same server:
  stream read, prompt, structured output, parse, leak guard, the atomic commit.

The two sides alternate (``--rounds`` each, ``--seconds`` a round, which side goes first
swapping each round: a shared machine's load drifts). Prints turns/s of both and the ratio
worker / raw (target >= 0.9 at 16 and 64), the worker's generations per turn (re-asks of replies
that did not parse show there), the share of queries it failed after its re-asks, and the user
worker process's CPU time per turn.

    python benchmarks/users.py [--model runs/llm-user/user-model] [--dialogues 1 16 64] [--seconds 15] [--rounds 2]
                               [--omp-wait passive|inherit]

Each round also prints what the server itself held (running + waiting requests, from its
``/metrics`` every 0.1 s), the tokens generated and prompted per request (from its counters:
both sides must ask for the same work) and the dialogues' latency, the worker's own time per
request beside it: where a gap comes from shows there.

Without ``--model`` it serves ``runs/llm-user/user-model`` when that exists (``userrl sft-user
--config deploy/llm-user.yaml`` builds it), else the untrained tiny model.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import httpx

from userrl.agents.tiny import build_tiny_model
from userrl.bus.client import make_client
from userrl.bus.embedded import EmbeddedRedis
from userrl.bus.keys import Keys
from userrl.bus.messages import UserReply, UserRequest
from userrl.bus.transport import Bus, BusSettings
from userrl.config import load_config
from userrl.envs.registry import user_spec
from userrl.learner.user_sft import collect_examples
from userrl.logs import configure_logging
from userrl.openai_compat import json_schema_format
from userrl.runtime import cpu_thread_defaults
from userrl.serve import ServeOptions, VLLMServer, entry_module, server_argv, server_env
from userrl.sim_users.base import UserQuery
from userrl.sim_users.llm_user import schema_name

ROOT = Path(__file__).resolve().parents[1]
CI = ROOT / "deploy" / "ci.yaml"
NAME = "user-model"
RUN = "ubench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: vLLM's Prometheus gauges and counters the probe reads (the same server serves both sides)
GAUGES = ("vllm:num_requests_running", "vllm:num_requests_waiting")
COUNTERS = ("vllm:generation_tokens_total", "vllm:prompt_tokens_total", "vllm:request_success_total")


def metric_sums(text: str, names: tuple[str, ...]) -> dict[str, float]:
    """Each metric of ``names`` in a Prometheus text page, summed over its label sets."""
    out = dict.fromkeys(names, 0.0)
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in out:
            out[name] += float(line.rsplit(" ", 1)[1])
    return out


class ServerProbe:
    """What the server itself saw during a measured window, the same for both sides: how many
    requests it held (running + waiting, sampled every ``every_s``) and, from its counters, the
    tokens generated and prompted per finished request."""

    def __init__(self, base_url: str, every_s: float = 0.1) -> None:
        self.url = base_url.removesuffix("/v1") + "/metrics"
        self.every_s = every_s
        self.samples: list[float] = []
        self.c0: dict[str, float] = {}
        self.c1: dict[str, float] = {}

    async def read(self, client: httpx.AsyncClient, names: tuple[str, ...]) -> dict[str, float]:
        return metric_sums((await client.get(self.url)).text, names)

    async def sample(self, client: httpx.AsyncClient) -> None:
        while True:
            g = await self.read(client, GAUGES)
            self.samples.append(sum(g.values()))
            await anyio.sleep(self.every_s)

    def summary(self) -> dict[str, float]:
        d = {k: self.c1[k] - self.c0[k] for k in COUNTERS}
        done = max(d["vllm:request_success_total"], 1.0)
        xs = sorted(self.samples) or [0.0]
        return {
            "held_mean": sum(xs) / len(xs),
            "held_min": xs[0],
            "held_p10": xs[len(xs) // 10],
            "gen_tok": d["vllm:generation_tokens_total"] / done,
            "prompt_tok": d["vllm:prompt_tokens_total"] / done,
        }


async def window(base_url: str, seconds: float, probe: ServerProbe) -> None:
    """Sleep through the measured window while the probe samples the server."""
    async with httpx.AsyncClient(timeout=30) as client, anyio.create_task_group() as tg:
        probe.c0 = await probe.read(client, COUNTERS)
        tg.start_soon(probe.sample, client)
        await anyio.sleep(seconds)
        probe.c1 = await probe.read(client, COUNTERS)
        tg.cancel_scope.cancel()


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else 0.0


def body(q: UserQuery, max_tokens: int) -> dict[str, Any]:
    """The request the openai user backend sends for ``q`` (first attempt)."""
    spec = user_spec(q.env_id)
    return {
        "model": NAME,
        "messages": spec.llm_messages(q),
        "temperature": 0.0,
        "max_tokens": max_tokens,
        "response_format": json_schema_format(schema_name(q), spec.reply_schema(q)),
    }


async def raw(base_url: str, queries: list[UserQuery], n: int, seconds: float, max_tokens: int) -> dict[str, float]:
    bodies = [body(q, max_tokens) for q in queries]
    turns = 0
    counting = False
    lat: list[float] = []
    probe = ServerProbe(base_url)
    # a client of one connection per dialogue: the cheapest httpx can do (one pool of n
    # connections costs ms of CPU per request at 64, see userrl.openai_compat)
    clients = [httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=1)) for _ in range(n)]

    async def dialogue(i: int) -> None:
        nonlocal turns
        k = i
        while True:
            t = time.perf_counter()
            r = await clients[i].post(f"{base_url}/chat/completions", json=bodies[k % len(bodies)])
            if r.status_code != 200:
                raise RuntimeError(f"the server answered {r.status_code}: {r.text[:300]}")
            r.json()["choices"][0]["message"]["content"]
            turns += counting
            if counting:
                lat.append(time.perf_counter() - t)
            k += n

    try:
        async with anyio.create_task_group() as tg:
            for i in range(n):
                tg.start_soon(dialogue, i)
            await anyio.sleep(2.0)  # warm up: every dialogue in flight
            counting, t0 = True, time.perf_counter()
            await window(base_url, seconds, probe)
            done, dt = turns, time.perf_counter() - t0
            tg.cancel_scope.cancel()
    finally:
        for c in clients:
            await c.aclose()
    return {"turns": done, "s": dt, "gens": done, "failed": 0, "cpu": 0.0, "lat": lat, **probe.summary()}


async def through_worker(
    url: str, base_url: str, queries: list[UserQuery], n: int, seconds: float, tag: str, pid: int
) -> dict[str, Any]:
    keys = Keys(RUN)
    bus = Bus(make_client(url, block_ms=200, max_connections=n + 8), keys, BusSettings(block_ms=200))
    env = keys.stream("env")
    await bus.ensure_group(env, "bench", start="$")
    waiting: dict[tuple[str, int], anyio.Event] = {}
    turns = gens = failed = 0
    counting = False
    lat: list[float] = []
    inner: list[float] = []  #: the worker's own time per request (UserReply.stats["ms"])
    #: per turn, from Redis's entry ids (ms stamps of its clock): request added -> reply added,
    #: less the worker's own time = waiting in the stream, being read, started and committed
    bus_s: list[float] = []
    added: dict[tuple[str, int], int] = {}  #: the request's entry-id milliseconds
    #: per turn, this process's share: sending the request and reading the reply (wall clock
    #: against the entry ids)
    here_s: list[float] = []
    wrote: dict[tuple[str, int], float] = {}  #: when the dialogue started sending (time.time())
    probe = ServerProbe(base_url)

    async def replies() -> None:
        nonlocal turns, gens, failed
        while True:
            got = await bus.read(env, "bench", "bench", count=256, block_ms=200)
            if got:
                await bus.ack(env, "bench", [d.entry_id for d in got])
            for d in got:
                m = d.msg
                if isinstance(m, UserReply) and (ev := waiting.pop((m.episode_id, m.seq), None)) is not None:
                    failed += counting * (m.error is not None)  # answered all the same: re-asked, then failed
                    turns += counting
                    gens += counting * int(m.stats.get("attempts", 1))
                    if counting:
                        inner.append(float(m.stats.get("ms", 0.0)) / 1000)
                        sent = added.pop((m.episode_id, m.seq), None)
                        back = int(d.entry_id.split("-")[0])
                        if sent is not None:
                            bus_s.append((back - sent) / 1000 - inner[-1])
                            here_s.append(time.time() - back / 1000 + sent / 1000 - wrote.pop((m.episode_id, m.seq)))
                    ev.set()

    async def dialogue(i: int) -> None:
        k, seq = i, 0
        while True:
            seq += 1
            ev = anyio.Event()
            waiting[(f"{tag}-{i}", seq)] = ev
            q = queries[k % len(queries)]
            t = time.perf_counter()
            req = UserRequest(episode_id=f"{tag}-{i}", seq=seq, hop=1, query=q.to_dict())
            wrote[(req.episode_id, seq)] = time.time()
            added[(req.episode_id, seq)] = int((await bus.send(keys.stream("user"), req)).split("-")[0])
            await ev.wait()
            if counting:
                lat.append(time.perf_counter() - t)
            k += n

    async with anyio.create_task_group() as tg:
        tg.start_soon(replies)
        for i in range(n):
            tg.start_soon(dialogue, i)
        await anyio.sleep(2.0)
        counting, t0, c0 = True, time.perf_counter(), cpu_s(pid)
        await window(base_url, seconds, probe)
        done, g, bad, dt, cpu = turns, gens, failed, time.perf_counter() - t0, cpu_s(pid) - c0
        tg.cancel_scope.cancel()
    await bus.close()
    return {
        "turns": done,
        "s": dt,
        "gens": g,
        "failed": bad,
        "cpu": cpu,
        "lat": lat,
        "inner": inner,
        "bus": bus_s,
        "here": here_s,
        **probe.summary(),
    }


def start_worker(
    redis_url: str, base_url: str, concurrency: int, max_tokens: int, log: Path
) -> subprocess.Popen[bytes]:
    sets = [
        f"run={RUN}",
        "log_level=warning",
        "user.backend=openai",
        f"user.base_url={base_url}",
        f"user.model={NAME}",
        "user.api_key_env=",
        f"user.max_tokens={max_tokens}",
        "user.timeout_s=300",
        "user.share_ttl_s=0",  # the pool repeats: only the server's own caching on either side
        f"workers.user.concurrency={concurrency}",
    ]
    cmd = [sys.executable, "-m", "userrl", "worker", "user", "--name", "user-0", "--config", str(CI)]
    for s in sets:
        cmd += ["--set", s]
    env = {**os.environ, "USERRL_REDIS_URL": redis_url, "PYTHONPATH": str(ROOT)}
    with log.open("wb") as out:
        return subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)


async def wait_worker(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 300) -> None:
    r = make_client(url)
    t0 = time.monotonic()
    try:
        while not [k async for k in r.scan_iter(match=Keys(RUN).heartbeat_pattern("user"))]:
            if proc.poll() is not None or time.monotonic() - t0 > timeout_s:
                raise RuntimeError("the user worker did not start")
            await anyio.sleep(0.5)
    finally:
        await r.aclose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="", help="user model folder (default: runs/llm-user/user-model, else tiny)")
    ap.add_argument("--dialogues", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--seconds", type=float, default=15.0, help="per side and round")
    ap.add_argument("--rounds", type=int, default=2, help="raw and worker alternate, this many times each")
    ap.add_argument("--gyms", nargs="+", default=["userrl/Intention-v0", "userrl/Telepathy-v0"])
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--kv-cache", default="1G")
    ap.add_argument(
        "--omp-wait",
        choices=["passive", "inherit"],
        default="passive",
        help="OpenMP wait policy of the server and the worker: passive, as `userrl serve` and `userrl train` start "
        "them (userrl.runtime), or inherit this environment's (unset: OpenMP's threads spin at each barrier)",
    )
    args = ap.parse_args()
    if args.omp_wait == "passive":
        cpu_thread_defaults()  # the children inherit it, as under the CLI
    configure_logging("warning")
    work = Path(tempfile.mkdtemp(prefix="userrl-bench-users-"))
    model = args.model or str(ROOT / "runs" / "llm-user" / NAME)
    if not (Path(model) / "config.json").is_file():
        if args.model:
            sys.exit(f"--model {args.model}: no config.json there")
        model = str(build_tiny_model(work / "tiny", seed=0, **load_config(CI).policy.tiny_size))  # vLLM's head_dim
    examples, _ = anyio.run(lambda: collect_examples(args.gyms, "test", episodes_per_task=2, max_turns=6))
    queries = [e.query for e in examples]
    port = free_port()
    opts = ServeOptions(model=model, port=port, served_model_name=NAME, kv_cache=args.kv_cache)
    argv = server_argv(opts, model, NAME, cpu=True, module=entry_module())
    base_url = f"http://127.0.0.1:{port}/v1"
    omp = os.environ.get("OMP_WAIT_POLICY", "unset")
    print(f"model {model}; {len(queries)} queries of {args.gyms}; OMP_WAIT_POLICY {omp}; serving on {base_url} ...")
    concurrency = max(64, *args.dialogues)
    with (
        VLLMServer(argv, base_url=base_url, model_name=NAME, log_path=work / "serve.log", env=server_env(True)) as srv,
        EmbeddedRedis() as redis,
    ):
        print(f"vLLM ready after {srv.wait_ready(900):.0f}s", flush=True)
        worker = start_worker(redis.url, base_url, concurrency, args.max_tokens, work / "worker.log")
        try:
            anyio.run(wait_worker, redis.url, worker)
            rows = [(n, measure_both(redis.url, base_url, queries, n, args, worker.pid)) for n in args.dialogues]
        finally:
            worker.terminate()
            worker.wait(60)
    print(
        f"\n{'dialogues':>9} | {'raw turns/s':>11} | {'worker turns/s':>14} | {'ratio':>5} | gens/turn | failed", end=""
    )
    print(" | worker CPU ms/turn | server held raw / worker | p50 ms raw / worker")
    print("-" * 139)
    for n, (r, w, cpu) in rows:
        rate_r, rate_w = r["turns"] / r["s"], w["turns"] / w["s"]
        cells = f"{n:>9} | {rate_r:>11.1f} | {rate_w:>14.1f} | {rate_w / rate_r if rate_r else 0.0:>5.2f}"
        gens, failed = w["gens"] / max(w["turns"], 1), w["failed"] / max(w["turns"], 1)
        held = f"{sum(r['held']) / len(r['held']):>11.1f} / {sum(w['held']) / len(w['held']):<10.1f}"
        p50 = f"{1000 * percentile(r['lat'], 0.5):>10.0f} / {1000 * percentile(w['lat'], 0.5):<6.0f}"
        print(f"{cells} | {gens:>9.2f} | {failed:>6.2f} | {cpu:>18.1f} | {held} | {p50}")
    print("gens/turn: the worker's generations per answered query (re-asks of unusable replies); failed: the share")
    print("of queries it answered with a typed error after the re-asks; worker CPU: the user worker process's")
    print("CPU time per turn (user + system); server held: requests running + waiting in vLLM (its /metrics,")
    print("sampled every 0.1 s), the mean over the measured windows; p50: a dialogue's wait for its answer")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def round_line(n: int, i: int, side: str, got: dict[str, Any]) -> str:
    """One round of one side: its rate, what the server held, the work per request, the latencies."""
    lat = got["lat"]
    line = (
        f"  {n} dialogues, round {i + 1}: {side:>6} {got['turns'] / got['s']:6.1f} turns/s | server held "
        f"{got['held_mean']:5.1f} (p10 {got['held_p10']:4.0f}) | {got['gen_tok']:4.1f} gen + {got['prompt_tok']:5.0f} "
        f"prompt tok/req | latency p50 {1000 * percentile(lat, 0.5):6.0f} p95 {1000 * percentile(lat, 0.95):6.0f} ms"
    )
    if "inner" in got:
        line += f" (in the worker: p50 {1000 * percentile(got['inner'], 0.5):.0f} ms"
        line += f"; user stream -> env stream less that: p50 {1000 * percentile(got['bus'], 0.5):.0f}"
        line += f" p95 {1000 * percentile(got['bus'], 0.95):.0f} ms; sending + reading here: p50"
        line += f" {1000 * percentile(got['here'], 0.5):.0f} ms)"
    return line + f" | load {os.getloadavg()[0]:.1f}"


def measure_both(
    redis_url: str, base_url: str, queries: list[UserQuery], n: int, args: argparse.Namespace, pid: int
) -> tuple[dict[str, Any], dict[str, Any], float]:
    """``args.rounds`` rounds of raw and worker, alternating which goes first (the machine's
    load drifts); totals of each side (the server's held requests averaged over rounds), and the
    worker's CPU ms per turn."""
    tot: dict[str, dict[str, Any]] = {
        side: {"turns": 0, "s": 0.0, "gens": 0, "failed": 0, "cpu": 0.0, "lat": [], "held": []}
        for side in ("raw", "worker")
    }
    for i in range(args.rounds):
        for side in ("raw", "worker") if i % 2 == 0 else ("worker", "raw"):
            if side == "raw":
                got = anyio.run(raw, base_url, queries, n, args.seconds, args.max_tokens)
            else:
                got = anyio.run(through_worker, redis_url, base_url, queries, n, args.seconds, f"d{n}r{i}", pid)
            for k in ("turns", "s", "gens", "failed", "cpu", "lat"):
                tot[side][k] += got[k]
            tot[side]["held"].append(got["held_mean"])
            print(round_line(n, i, side, got), flush=True)
    return tot["raw"], tot["worker"], 1000 * tot["worker"]["cpu"] / max(tot["worker"]["turns"], 1)


if __name__ == "__main__":
    main()
