"""What a running deploy is doing, read straight from Redis (``userrl status``).

Per role: the live workers (from their heartbeats), the wanted replica count (the launcher's
``replicas`` hash), the input stream's length, and the consumer group's ``lag`` (entries not
yet delivered) and ``pending`` (delivered, not yet acked) from ``XINFO GROUPS``; dead letters by
source group; throughput in messages per second from two samples of the group's
``entries-read`` counter (falling back to the heartbeats' ``handled`` counts). Plus the live and
finished episode counts and the supervisor's heartbeat.
"""

from __future__ import annotations

import time
from typing import Any

import anyio

from userrl.bus.keys import ROLES
from userrl.bus.transport import Bus

#: the worker roles shown even when nothing of them runs
SHOWN_ROLES = tuple(r for r in ROLES if r != "learner")


async def _heartbeats(bus: Bus) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    now = time.time()
    for hb in await bus.control.heartbeats():
        hb["age_s"] = round(max(0.0, now - float(hb.get("at", now))), 2)
        out.setdefault(str(hb.get("role", "?")), []).append(hb)
    for rows in out.values():
        rows.sort(key=lambda h: str(h.get("worker", "")))
    return out


async def _group(bus: Bus, role: str) -> dict[str, Any]:
    stream = bus.keys.stream(role)
    length = await bus.control.stream_length(stream)
    for g in await bus.group_info(stream):
        if g.get("name") == bus.keys.group(role):
            return {
                "stream_length": length,
                "lag": _int(g.get("lag")),
                "pending": _int(g.get("pending")),
                "consumers": _int(g.get("consumers")),
                "entries_read": _int(g.get("entries-read")),
            }
    return {"stream_length": length, "lag": None, "pending": 0, "consumers": 0, "entries_read": None}


def _int(v: Any) -> int | None:
    return None if v is None else int(v)


async def _sample(
    bus: Bus, roles: list[str]
) -> tuple[float, dict[str, dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    t = time.monotonic()
    groups = {r: await _group(bus, r) for r in roles}
    return t, groups, await _heartbeats(bus)


def _rate(
    role: str,
    t0: float,
    g0: dict[str, Any],
    hb0: list[dict[str, Any]],
    t1: float,
    g1: dict[str, Any],
    hb1: list[dict[str, Any]],
) -> float | None:
    if g0.get("entries_read") is not None and g1.get("entries_read") is not None and t1 > t0:
        return max(0, g1["entries_read"] - g0["entries_read"]) / (t1 - t0)
    before = {h["worker"]: h for h in hb0}
    rates = [
        (h.get("handled", 0) - before[h["worker"]].get("handled", 0)) / (h["at"] - before[h["worker"]]["at"])
        for h in hb1
        if h["worker"] in before and h["at"] > before[h["worker"]]["at"]
    ]
    return sum(rates) if rates else None


async def collect_status(bus: Bus, sample_s: float = 1.0) -> dict[str, Any]:
    """A snapshot of the deploy; ``sample_s`` > 0 adds throughput from two samples that far apart."""
    replicas = await bus.control.wanted()
    hb_roles = await _heartbeats(bus)
    roles = list(SHOWN_ROLES) + sorted((set(hb_roles) | set(replicas)) - set(SHOWN_ROLES))
    t0, g0, hb0 = await _sample(bus, roles)
    if sample_s > 0:
        await anyio.sleep(sample_s)
        t1, g1, hb1 = await _sample(bus, roles)
    else:
        t1, g1, hb1 = t0, g0, hb0
    dead_total, dead_by = await bus.control.dead_by_group()
    supervisor = await bus.control.supervisor()
    counters = await bus.control.counters()
    out_roles: dict[str, Any] = {}
    for r in roles:
        workers = [
            {
                k: h.get(k)
                for k in (
                    "worker",
                    "pid",
                    "host",
                    "age_s",
                    "in_flight",
                    "handled",
                    "committed",
                    "duplicates",
                    "dead_lettered",
                    "errors",
                )
            }
            for h in hb1.get(r, [])
        ]
        rate = _rate(r, t0, g0[r], hb0.get(r, []), t1, g1[r], hb1.get(r, [])) if sample_s > 0 else None
        g = {k: v for k, v in g1[r].items() if k != "entries_read"}
        out_roles[r] = {
            "wanted": replicas.get(r),
            "live": len(workers),
            "workers": workers,
            **g,
            "dead_letters": dead_by.get(bus.keys.group(r), 0),
            "throughput": None if rate is None else round(rate, 2),
        }
    return {
        "run": bus.keys.run,
        "at": time.time(),
        "supervisor": supervisor,
        "roles": out_roles,
        "episodes": {
            "live": await bus.store.count("live"),
            "finished": await bus.store.count("finished"),
        },
        "dead_letters": dead_total,
        "counters": counters,
    }


def _cell(v: Any) -> str:
    return "-" if v is None else str(v)


def format_status(s: dict[str, Any]) -> str:
    """A plain-text table of :func:`collect_status`'s result."""
    sup = s.get("supervisor")
    head = (
        f"run {s['run']}  episodes live {s['episodes']['live']} finished {s['episodes']['finished']}"
        f"  dead letters {s['dead_letters']}"
    )
    if sup:
        restarts = " ".join(f"{r}={n}" for r, n in sup.get("restarts", {}).items() if n)
        head += f"\nsupervisor pid {sup.get('pid')} on {sup.get('host')}  restarts: {restarts or 'none'}"
    else:
        head += "\nsupervisor: none (workers started alone, or no deploy running)"
    cols = ["ROLE", "WANTED", "LIVE", "STREAM", "LAG", "PENDING", "DEAD", "MSG/S"]
    rows = [
        [
            r,
            _cell(v["wanted"]),
            str(v["live"]),
            str(v["stream_length"]),
            _cell(v["lag"]),
            str(v["pending"]),
            str(v["dead_letters"]),
            _cell(v["throughput"]),
        ]
        for r, v in s["roles"].items()
    ]
    wcols = ["  WORKER", "PID", "AGE_S", "IN_FLIGHT", "HANDLED", "DUPS", "DEAD", "ERRORS"]
    wrows = [
        [
            f"  {w['worker']}",
            _cell(w["pid"]),
            _cell(w["age_s"]),
            _cell(w["in_flight"]),
            _cell(w["handled"]),
            _cell(w["duplicates"]),
            _cell(w["dead_lettered"]),
            _cell(w["errors"]),
        ]
        for v in s["roles"].values()
        for w in v["workers"]
    ]
    return "\n".join([head, "", _table(cols, rows)] + (["", _table(wcols, wrows)] if wrows else []))


def _table(cols: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip()]
    lines += ["  ".join(x.ljust(w) for x, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)
