"""Read dialogues out of Redis while they run (``userrl episodes ls|show|watch``).

Every episode has a readable stream (``Keys.episode``) whose entries carry plain fields
``role`` (system, user, assistant, env, end), ``turn``, ``text``, ``reward``, ``version``,
``worker``, ``by`` (an ``env`` entry: who answered the turn's user questions) and ``error``
(an ``end`` entry: the kind of a failure); the ``live`` and ``finished`` sorted sets index episodes by start and end time.
Finished episodes' streams expire after the env worker's episode TTL.

A finished episode's ``return`` is the sum of its turn rewards (the ``end`` entry's ``reward``),
not the gym's episode score (at most 1 in most gyms; see :mod:`userrl.learner.metrics`); rows
also carry it as ``score``, its deprecated name, for one release.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio

from userrl.bus.store import Entry
from userrl.bus.transport import Bus


async def read_episode(bus: Bus, episode_id: str) -> list[Entry]:
    """Every entry of an episode's stream, oldest first (``[]`` when unknown or expired)."""
    return await bus.store.log(episode_id)


def summarize(entries: list[Entry]) -> dict[str, Any]:
    """Turn count (completed env steps), last reward, the return (sum of the turn rewards, once
    the episode ended) and how the episode ended (if it did)."""
    turns = sum(1 for e in entries if e.get("role") == "env")
    rewards = [float(e["reward"]) for e in entries if e.get("role") == "env" and "reward" in e]
    end = next((e for e in reversed(entries) if e.get("role") == "end"), None)
    ret = float(end["reward"]) if end and "reward" in end else None
    return {
        "turns": turns,
        "last_reward": rewards[-1] if rewards else None,
        "return": ret,
        "score": ret,  # deprecated name of ``return`` (one release)
        "end": end["text"] if end else None,
    }


async def list_episodes(bus: Bus, limit: int = 20) -> list[dict[str, Any]]:
    """The newest ``limit`` live episodes and the ``limit`` most recently finished ones."""
    live = await bus.store.newest("live", limit)
    done = await bus.store.newest("finished", limit)
    rows: list[dict[str, Any]] = []
    for state, items in (("live", live), ("finished", done)):
        for eid, score in items:
            entries = await read_episode(bus, eid)
            rows.append(
                {"episode": eid, "state": state, "since": float(score), **summarize(entries), "expired": not entries}
            )
    return rows


def format_episodes(rows: list[dict[str, Any]], now: float | None = None) -> str:
    now = time.time() if now is None else now
    if not rows:
        return "no episodes"
    width = max(len("EPISODE"), *(len(r["episode"]) for r in rows))
    lines = [f"{'EPISODE'.ljust(width)}  STATE     AGE_S  TURNS  LAST_R  RETURN  END"]
    for r in rows:
        last = "-" if r["last_reward"] is None else f"{r['last_reward']:g}"
        ret = "-" if r["return"] is None else f"{r['return']:g}"
        end = "(log expired)" if r["expired"] else (r["end"] or "")
        lines.append(
            f"{r['episode'].ljust(width)}  {r['state']:<8}  {now - r['since']:>5.0f}  "
            f"{r['turns']:>5}  {last:>6}  {ret:>6}  {end[:60]}"
        )
    return "\n".join(lines)


def format_entry(e: Entry, episode_id: str | None = None) -> str:
    """One readable line (text lines indented under it) for an episode stream entry."""
    role = e.get("role", "?")
    tag = f"[{episode_id}] " if episode_id else ""
    meta = []
    if "reward" in e:
        meta.append(f"reward={float(e['reward']):g}")
    if "version" in e:
        meta.append(f"v{e['version']}")
    if role == "assistant" and e.get("worker"):
        meta.append(e["worker"])
    if e.get("by"):  # who answered this turn's user questions (scripted, a model, a person)
        meta.append(f"user: {e['by']}")
    if e.get("error"):  # the typed kind of a failure (user_malformed, user_empty, policy, ...)
        meta.append(f"error: {e['error']}")
    head = f"{tag}t{e.get('turn', '?')} {role}" + (f" ({', '.join(meta)})" if meta else "") + ":"
    text = e.get("text", "").rstrip()
    if "\n" not in text and len(head) + len(text) < 120:
        return f"{head} {text}"
    return head + "\n" + "\n".join("    " + line for line in text.splitlines())


def format_dialogue(episode_id: str, entries: list[Entry]) -> str:
    if not entries:
        return f"episode {episode_id}: no log (unknown id, or finished and expired)"
    s = summarize(entries)
    head = f"episode {episode_id}: {s['turns']} turn(s)" + (f", ended {s['end']}" if s["end"] else ", live")
    return "\n".join([head, *(format_entry(e) for e in entries)])


@dataclass
class Watch:
    """Follow episode streams with ``XREAD BLOCK`` and hand each entry, formatted, to ``out``.

    With an id, follow that episode from its first entry. Without, follow the newest live
    episode and, when it ends, the newest live one after it (waiting for one to start).
    ``limit`` stops after that many entries; ``exit_when_done`` after the first followed
    episode ends; ``idle_timeout_s`` when nothing arrives for that long.
    """

    bus: Bus
    out: Callable[[str], None]
    episode_id: str | None = None
    limit: int | None = None
    exit_when_done: bool = False
    block_ms: int = 1000
    idle_timeout_s: float | None = None

    async def run(self) -> int:
        """Returns the number of entries shown."""
        shown, idle_since = 0, time.monotonic()
        seen: set[str] = set()
        current = self.episode_id
        last_id = "0-0"
        while self.limit is None or shown < self.limit:
            if current is None:
                current = await self._newest_live(seen)
                last_id = "0-0"
                if current is None:
                    if self._idle(idle_since):
                        break
                    continue
                seen.add(current)
                self.out(f"--- following episode {current}")
            got = await self.bus.store.tail(current, last_id, count=64, block_ms=self.block_ms)
            if not got:
                if self._idle(idle_since):
                    break
                continue
            idle_since = time.monotonic()
            ended = False
            for entry_id, e in got:
                last_id = entry_id
                self.out(format_entry(e, None if self.episode_id else current))
                shown += 1
                ended = ended or e.get("role") == "end"
                if self.limit is not None and shown >= self.limit:
                    return shown
            if ended:
                if self.exit_when_done or self.episode_id:
                    break
                current = None
        return shown

    def _idle(self, since: float) -> bool:
        return self.idle_timeout_s is not None and time.monotonic() - since > self.idle_timeout_s

    async def _newest_live(self, seen: set[str]) -> str | None:
        for eid, _ in await self.bus.store.newest("live", 32):
            if eid not in seen:
                return eid
        # nothing new is live: poll again shortly (bounded by block_ms so Ctrl-C stays quick)
        await anyio.sleep(min(0.2, self.block_ms / 1000))
        return None
