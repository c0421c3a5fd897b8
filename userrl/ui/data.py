"""What the web view shows, read from Redis and the run directory (never written).

Episodes come from the ``live``/``finished`` sorted sets and each episode's readable stream
(``deploy/episodes.py``); the gym and task of an episode from its env-state snapshot while it
exists, else from the episode id (``{prefix}{Gym}:{task}/{i}``, see ``rollouts.make_resets``).
The system page is ``deploy/status.py``'s snapshot plus the dead letters with their reasons;
the learning page tails the learner's ``metrics.jsonl``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from userrl.bus.store import snapshot_fields
from userrl.bus.transport import Bus
from userrl.deploy.episodes import summarize
from userrl.deploy.status import collect_status

#: episode statuses the list can be filtered by
STATUSES = ("live", "finished", "failed")


def gym_task_from_id(episode_id: str) -> tuple[str, str]:
    """``run:Function-v0:f12/3`` -> ("Function-v0", "f12"); ("", "") when it has no such shape."""
    head = episode_id.rsplit("/", 1)[0]
    parts = head.split(":")
    if len(parts) < 2:
        return "", ""
    return parts[-2], parts[-1]


def _gym_task_from_snapshot(raw: bytes | None) -> tuple[str, str] | None:
    snap = snapshot_fields(raw)
    if "env_id" not in snap or "task_id" not in snap:  # a snapshot of another layout: use the id
        return None
    return str(snap["env_id"]).split("/")[-1], str(snap["task_id"])


def episode_row(
    eid: str, state: str, since: float, entries: list[dict[str, str]], gym_task: tuple[str, str], now: float
) -> dict[str, Any]:
    """One line of the episodes list."""
    s = summarize(entries)
    last_policy = next((e for e in reversed(entries) if e.get("role") == "assistant"), {})
    status = state
    if state == "finished" and (s["end"] or "").startswith("failed"):
        status = "failed"
    version = last_policy.get("version")
    return {
        "episode": eid,
        "gym": gym_task[0],
        "task": gym_task[1],
        "status": status,
        "turn": s["turns"],
        "last_reward": s["last_reward"],
        "return": s["return"],  # the sum of the turn rewards (not the gym's episode score)
        "score": s["return"],  # deprecated name of ``return`` (one release)
        "end": s["end"],
        "version": int(version) if version not in (None, "") else None,
        "worker": last_policy.get("worker", ""),
        "age_s": round(max(0.0, now - since), 1),
        "expired": not entries,
    }


class EpisodeReader:
    """Reads episode rows; remembers each episode's gym and task (they never change)."""

    def __init__(self, bus: Bus, cache_size: int = 10_000) -> None:
        self.bus = bus
        self._gym_task: dict[str, tuple[str, str]] = {}
        self._cache_size = cache_size

    async def rows(self, limit: int = 50, gym: str = "", status: str = "") -> list[dict[str, Any]]:
        """The newest ``limit`` live and finished episodes, filtered by gym and status."""
        sets = ["live", "finished"]
        if status == "live":
            sets = sets[:1]
        elif status in ("finished", "failed"):
            sets = sets[1:]
        # a gym filter looks further back so a gym with few recent episodes still shows some
        scan = max(limit, 5000) if gym else limit
        members: list[tuple[str, str, float]] = []
        for state in sets:
            got = [(eid, state, since) for eid, since in await self.bus.store.newest(state, scan)]
            await self._learn_gym_tasks([eid for eid, _, _ in got])
            members += [m for m in got if not gym or self._gym_task[m[0]][0] == gym][:limit]
        if not members:
            return []
        logs = await self.bus.store.logs([eid for eid, _, _ in members])
        now = time.time()
        rows = [
            episode_row(eid, state, since, entries, self._gym_task[eid], now)
            for (eid, state, since), entries in zip(members, logs, strict=True)
        ]
        return [row for row in rows if not status or row["status"] == status]

    async def _learn_gym_tasks(self, ids: list[str]) -> None:
        unknown = list(dict.fromkeys(eid for eid in ids if eid not in self._gym_task))
        if not unknown:
            return
        if len(self._gym_task) + len(unknown) > self._cache_size:
            self._gym_task.clear()  # crude, and rare: ids of one call are learned again below
            unknown = list(dict.fromkeys(ids))
        snaps = await self.bus.store.snapshots(unknown)
        for eid, raw in zip(unknown, snaps, strict=True):
            self._gym_task[eid] = _gym_task_from_snapshot(raw) or gym_task_from_id(eid)

    def gyms(self) -> set[str]:
        """Every gym seen so far."""
        return {g for g, _ in self._gym_task.values() if g}

    async def gym_task(self, eid: str) -> tuple[str, str]:
        await self._learn_gym_tasks([eid])
        return self._gym_task[eid]


async def newest_dead_letters(bus: Bus, count: int = 50) -> list[dict[str, Any]]:
    """The newest dead letters first, as ``Bus.dead_letters`` shows them (reason in ``error``)."""
    return await bus.control.newest_dead(count)


async def system_snapshot(bus: Bus, sample_s: float = 1.0, dead_count: int = 50) -> dict[str, Any]:
    """``userrl status``'s snapshot plus the newest dead letters with their reasons."""
    s = await collect_status(bus, sample_s=sample_s)
    s["dead"] = await newest_dead_letters(bus, dead_count)
    return s


class MetricsTail:
    """Reads the complete lines a growing ``metrics.jsonl`` gained since the last call."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.offset = 0

    def read_new(self) -> tuple[list[dict[str, Any]], bool]:
        """New rows, and whether the file was replaced (shorter than what was read: start over)."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return [], False
        reset = size < self.offset
        if reset:
            self.offset = 0
        if size == self.offset:
            return [], reset
        with self.path.open("rb") as f:
            f.seek(self.offset)
            chunk = f.read(size - self.offset)
        end = chunk.rfind(b"\n") + 1  # a half-written last line waits for the next call
        self.offset += end
        rows = []
        for line in chunk[:end].splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict):
                rows.append(row)
        return rows, reset
