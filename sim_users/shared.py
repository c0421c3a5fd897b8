"""Identical greedy prompts generated once: how a group's judge calls share one generation.

The G episodes of a GRPO group play the same task, so they often put the same question to the
judge (the same guess, the same explanation) at about the same time. Where a gym's judge prompt
holds only the task and the answer (TelepathyGym's guesses, TurtleGym's grades), those prompts
are identical, and at temperature 0 so are the replies: :class:`SharedGenerations` asks the
model once and gives every caller that reply, whether the calls overlap (one request in flight,
the others wait for it) or follow within ``ttl_s`` (a small cache, ``max_entries`` at most).
Where the prompt carries the dialogue (SearchGym's judge, every user reply after the first
turn), prompts differ and nothing is shared. Sampled replies (temperature > 0) are never
shared: each caller must get its own sample. A failed generation is not kept: the next caller
asks again.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from userrl.sim_users.stamp import current_record

__all__ = ["SharedGenerations", "prompt_key"]


def prompt_key(*parts: Any) -> str:
    """A digest of everything that decides a greedy generation (messages, response format...)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class _Flight:
    __slots__ = ("done", "error", "text")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.text: str | None = None
        self.error: BaseException | None = None


class SharedGenerations:
    """One generation per distinct greedy prompt within ``ttl_s`` (see the module docstring).

    ``shared`` counts the calls answered by another call's generation (the call's
    :class:`~userrl.sim_users.stamp.CallRecord` counts it too).
    """

    def __init__(self, ttl_s: float = 30.0, max_entries: int = 4096) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.shared = 0
        self._flights: dict[str, _Flight] = {}
        self._recent: OrderedDict[str, tuple[float, str]] = OrderedDict()

    async def generate(self, key: str, fn: Callable[[], Awaitable[str]]) -> str:
        """``fn()``'s text, generated once for all callers of ``key`` in flight or within the TTL."""
        hit = self._recent.get(key)
        if hit is not None and time.monotonic() - hit[0] <= self.ttl_s:
            self._count()
            return hit[1]
        flight = self._flights.get(key)
        if flight is not None:
            await flight.done.wait()
            if flight.error is None and flight.text is not None:
                self._count()
                return flight.text
            return await self.generate(key, fn)  # the leader failed: ask again (maybe as leader)
        flight = self._flights[key] = _Flight()
        try:
            flight.text = await fn()
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            del self._flights[key]
            flight.done.set()
        self._remember(key, flight.text)
        return flight.text

    def _count(self) -> None:
        self.shared += 1
        rec = current_record()
        if rec is not None:
            rec.shared += 1

    def _remember(self, key: str, text: str) -> None:
        self._recent[key] = (time.monotonic(), text)
        self._recent.move_to_end(key)
        while len(self._recent) > self.max_entries:
            self._recent.popitem(last=False)
