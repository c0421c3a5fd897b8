"""The Redis Streams transport.

One :class:`Bus` per process wraps a redis-py asyncio client. Work streams are read through
consumer groups (one per role) in batches (``COUNT``/``BLOCK``); each handled message is
committed by one atomic Lua script (:mod:`userrl.bus.scripts`): idempotency key ``SET NX`` on
``(kind, episode, seq, hop)``, the outgoing ``XADD``\\ s, an optional state snapshot, ``XACK``.
A batch's commits go out in one pipeline.

Recovery: a consumer first drains its own pending entries (a restart under the same name);
:meth:`Bus.reclaim` takes over entries idle past ``min_idle`` with ``XAUTOCLAIM``; an entry
delivered more than ``max_deliveries`` times, or whose payload cannot be decoded, goes to the
dead-letter stream with the error. ``NOGROUP`` (a Redis restart without persistence) recreates
the group and counts it; commits of work read before such a loss are refused (the epoch
token, :class:`EpochChanged`) so they cannot collide with re-dispatched episodes. Streams are
trimmed to the consumption point with ``XTRIM MINID``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from userrl.bus import budget, scripts
from userrl.bus.client import as_str, make_client
from userrl.bus.control import ControlPlane
from userrl.bus.effects import (
    PAYLOAD,
    BusSettings,
    Delivery,
    Effects,
    _KeyRef,
    dead_letter_fields,
    idempotency_identity,
)
from userrl.bus.groups import GroupStore
from userrl.bus.keys import Keys
from userrl.bus.messages import Message, decode
from userrl.bus.routing import PolicyRoutes, WeightsChannel
from userrl.bus.seat import SeatStore
from userrl.bus.store import EpisodeStore
from userrl.errors import MessageError

__all__ = [
    "PAYLOAD",
    "WAITER_STALE_MS",
    "Bus",
    "BusSettings",
    "Delivery",
    "Effects",
    "EpochChanged",
    "dead_letter_fields",
    "idempotency_identity",
]

log = structlog.get_logger(__name__)

#: a waiter group whose consumer has not read for this long belongs to a dead waiter
WAITER_STALE_MS = 600_000


def _group_lost(exc: ResponseError) -> bool:
    """The group is gone: ``NOGROUP``, or ``UNBLOCKED`` (a blocked read whose stream was deleted
    under it: the server lost its data, e.g. a FLUSHALL)."""
    return "NOGROUP" in str(exc) or "UNBLOCKED" in str(exc)


class EpochChanged(RuntimeError):
    """A commit was refused: the server lost its data since the work was read (see
    ``Keys.epoch``). Nothing was applied; the entries, if they still exist, stay pending."""


class Bus:
    """Transport over one Redis server. See the module docstring.

    The only door to Redis: roles and tools use its verbs, here (the streams) and in its
    parts: :attr:`store` (episode snapshots, logs, indexes), :attr:`routes` (policy routing and
    the replica registry), :attr:`weights` (the weights channel), :attr:`control` (heartbeats,
    wanted replicas, supervisor, counters, dead letters), :attr:`groups` (the reward workers'
    GRPO groups), :attr:`seat` (the user's seat). ``async with`` closes it."""

    def __init__(self, redis: Redis, keys: Keys, settings: BusSettings | None = None) -> None:
        self.redis = redis  #: the client, for the bus's own modules (and tests); nobody else
        self.keys = keys
        self.settings = settings or BusSettings()
        self.store = EpisodeStore(redis, keys)
        self.routes = PolicyRoutes(redis, keys)
        self.weights = WeightsChannel(redis, keys)
        self.control = ControlPlane(redis, keys)
        self.groups = GroupStore(redis, keys)
        self.seat = SeatStore(redis, keys)
        self._commit_many = redis.register_script(scripts.COMMIT_MANY)
        self._renew = redis.register_script(scripts.RENEW)
        self._dead = redis.register_script(scripts.DEAD_LETTER)
        self._cap_index = redis.register_script(scripts.CAP_INDEX)
        self._pop_oldest = redis.register_script(scripts.POP_OLDEST)
        self._groups_ready: set[tuple[str, str]] = set()
        self.epoch: bytes | None = None  #: the epoch token commits are made under (see Keys.epoch)
        self.nogroup_recreated = 0

    @classmethod
    def open(
        cls,
        url: str,
        run: str | Keys,
        settings: BusSettings | None = None,
        *,
        max_connections: int = 32,
        client_name: str | None = None,
        tls: Mapping[str, Any] | None = None,
        cluster: bool = False,
    ) -> Bus:
        """A bus on a new client for ``url`` (see :func:`userrl.bus.client.make_client`) for the
        run ``run`` (a name, or its :class:`Keys`); close it with :meth:`close` or ``async with``."""
        settings = settings or BusSettings()
        client = make_client(
            url,
            block_ms=settings.block_ms,
            max_connections=max_connections,
            client_name=client_name,
            tls=tls,
            cluster=cluster,
        )
        return cls(client, run if isinstance(run, Keys) else Keys(run), settings)

    async def close(self) -> None:
        """Close the client and its connections (the bus cannot be used after)."""
        await self.redis.aclose()

    async def __aenter__(self) -> Bus:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def ping(self) -> bool:
        """Whether the server answers (raises when it cannot be reached)."""
        return bool(await self.redis.ping())

    # -- groups ---------------------------------------------------------------------------------
    async def ensure_group(self, stream: str, group: str, start: str = "0") -> None:
        """Create the consumer group (and the stream) if missing; from the start of the stream,
        or ``start="$"``: only what comes next."""
        try:
            await self.redis.xgroup_create(stream, group, id=start, mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._groups_ready.add((stream, group))

    async def add_consumer(self, stream: str, group: str, consumer: str) -> None:
        """Create ``consumer`` in the group before its first read (so it shows as idle)."""
        await self.redis.xgroup_createconsumer(stream, group, consumer)

    async def drop_group(self, stream: str, group: str) -> None:
        """Destroy a consumer group (its pending entries with it)."""
        await self.redis.xgroup_destroy(stream, group)
        self._groups_ready.discard((stream, group))

    async def ack(self, stream: str, group: str, entry_ids: Sequence[str]) -> int:
        """XACK entries read outside a commit (readers that commit nothing, e.g. waiters)."""
        return int(await self.redis.xack(stream, group, *entry_ids)) if entry_ids else 0

    async def entries(self, stream: str) -> list[tuple[str, dict[bytes, bytes]]]:
        """Every entry of a stream, oldest first, as (entry id, fields)."""
        return [(as_str(i), f) for i, f in await self.redis.xrange(stream)]

    async def _recreate_group(self, stream: str, group: str, exc: Exception) -> None:
        self.nogroup_recreated += 1
        log.warning("bus.nogroup_recreated", stream=stream, group=group, error=str(exc))
        self._groups_ready.discard((stream, group))
        await self.ensure_group(stream, group)
        await self.redis.hincrby(self.keys.counters, "nogroup_recreated", 1)

    # -- sending --------------------------------------------------------------------------------
    async def send(self, stream: str, msg: Message, readable: dict[str, Any] | None = None) -> str:
        """XADD one message outside any commit (dispatchers, CLIs). Duplicates are harmless:
        the consumer's commit is idempotent on the message identity."""
        args = Effects().send(stream, msg, readable, max_bytes=self.settings.max_message_bytes).ops[0][2]
        fields = dict(zip(args[::2], args[1::2], strict=True))
        entry = await self.redis.xadd(stream, fields, maxlen=self.settings.stream_cap, approximate=True)
        return as_str(entry)

    async def send_many(self, stream: str, items: Sequence[tuple[Message, dict[str, Any] | None]]) -> list[str]:
        """:meth:`send` for many messages in one pipeline (one round trip); returns their entry
        ids. Not atomic: after a connection error some may have been added, so a retry must
        tolerate duplicates (resets do)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for msg, readable in items:
                args = Effects().send(stream, msg, readable, max_bytes=self.settings.max_message_bytes).ops[0][2]
                pipe.xadd(
                    stream,
                    dict(zip(args[::2], args[1::2], strict=True)),
                    maxlen=self.settings.stream_cap,
                    approximate=True,
                )
            ids = await pipe.execute()
        return [as_str(i) for i in ids]

    # -- reading --------------------------------------------------------------------------------
    async def read(
        self,
        stream: str,
        group: str,
        consumer: str,
        *,
        count: int | None = None,
        block_ms: int | None = None,
        pending: bool = False,
    ) -> list[Delivery]:
        """Read new entries (``pending=False``) or this consumer's own pending ones."""
        count = count or self.settings.read_count
        if (stream, group) not in self._groups_ready:
            await self.ensure_group(stream, group)
        await self.current_epoch()
        try:
            resp = await self.redis.xreadgroup(
                group,
                consumer,
                {stream: "0" if pending else ">"},
                count=count,
                block=None if pending else (block_ms if block_ms is not None else self.settings.block_ms),
            )
        except ResponseError as exc:
            if not _group_lost(exc):
                raise
            await self._recreate_group(stream, group, exc)
            return []
        entries = resp[0][1] if resp else []
        out = [self._delivery(stream, group, eid, fields) for eid, fields in entries if fields]
        if pending and out:
            await self._fill_delivery_counts(out, consumer)
        # An entry deleted by trimming while pending comes back with no fields: ack and forget it.
        gone = [eid for eid, fields in entries if not fields]
        if gone:
            await self.redis.xack(stream, group, *gone)
        return out

    async def read_many(
        self, streams: Sequence[str], group: str, consumer: str, *, count: int | None = None, block: bool = True
    ) -> list[Delivery]:
        """New entries of several streams in one XREADGROUP (the same group on each)."""
        if len(streams) == 1 and block:
            return await self.read(streams[0], group, consumer, count=count)
        for s in streams:
            if (s, group) not in self._groups_ready:
                await self.ensure_group(s, group)
        await self.current_epoch()
        try:
            resp = await self.redis.xreadgroup(
                group,
                consumer,
                {s: ">" for s in streams},
                count=count or self.settings.read_count,
                block=self.settings.block_ms if block else None,
            )
        except ResponseError as exc:
            if not _group_lost(exc):
                raise
            for s in streams:
                await self._recreate_group(s, group, exc)
            return []
        out: list[Delivery] = []
        for stream, entries in resp or []:
            name = as_str(stream)
            out += [self._delivery(name, group, eid, f) for eid, f in entries if f]
        return out

    def _delivery(self, stream: str, group: str, eid: bytes | str, fields: dict[bytes, bytes]) -> Delivery:
        entry_id = eid.decode() if isinstance(eid, bytes) else eid
        d = Delivery(stream, group, entry_id, fields, epoch=self.epoch or b"")
        raw = fields.get(PAYLOAD)
        if raw is None:
            d.error = "entry has no payload field 'p'"
            return d
        try:
            d.msg = decode(raw, max_bytes=self.settings.max_message_bytes)
        except MessageError as exc:
            d.error = str(exc)
        return d

    async def _fill_delivery_counts(self, ds: Sequence[Delivery], consumer: str) -> None:
        ids = sorted(ds, key=lambda d: tuple(int(x) for x in d.entry_id.split("-")))
        rows = await self.redis.xpending_range(
            ds[0].stream,
            ds[0].group,
            min=ids[0].entry_id,
            max=ids[-1].entry_id,
            count=len(ds) * 4 + 16,
            consumername=consumer,
        )
        counts = {
            (r["message_id"].decode() if isinstance(r["message_id"], bytes) else r["message_id"]): int(
                r["times_delivered"]
            )
            for r in rows
        }
        for d in ds:
            d.deliveries = counts.get(d.entry_id, d.deliveries)

    async def reclaim(
        self, stream: str, group: str, consumer: str, *, count: int | None = None, min_idle_ms: int | None = None
    ) -> list[Delivery]:
        """XAUTOCLAIM entries idle past ``min_idle`` (crashed or stopped peers, or ourselves)."""
        count = count or self.settings.read_count
        idle = min_idle_ms if min_idle_ms is not None else self.settings.min_idle_ms
        out: list[Delivery] = []
        start = "0-0"
        await self.current_epoch()
        try:
            while True:
                resp = await self.redis.xautoclaim(stream, group, consumer, idle, start_id=start, count=count)
                nxt, entries = resp[0], resp[1]
                out += [self._delivery(stream, group, eid, f) for eid, f in entries if f]
                nxt = nxt.decode() if isinstance(nxt, bytes) else nxt
                if nxt == "0-0" or len(out) >= count:
                    break
                start = nxt
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self._recreate_group(stream, group, exc)
            return []
        if out:
            await self._fill_delivery_counts(out, consumer)
            log.info("bus.reclaimed", stream=stream, group=group, consumer=consumer, n=len(out))
        return out

    async def renew(self, stream: str, group: str, consumer: str, entry_ids: Sequence[str]) -> list[str]:
        """Reset the idle time of entries this consumer still owns (long handlers)."""
        if not entry_ids:
            return []
        got = await self._renew(keys=[stream], args=[group, consumer, *entry_ids])
        return [g.decode() if isinstance(g, bytes) else g for g in got]

    # -- committing -----------------------------------------------------------------------------
    async def _commit_call(
        self,
        group: str,
        items: Sequence[tuple[tuple[str, str, int, int], str, str, Effects]],
        epoch: bytes | None = None,
    ) -> list[bool]:
        """One COMMIT_MANY call for items of (identity, input stream, entry id or '', effects),
        read under ``epoch`` (default: the current one)."""
        keys: list[str] = []
        index: dict[str, int] = {}

        def ref(k: str) -> int:
            if k not in index:
                keys.append(k)
                index[k] = len(keys)
            return index[k]

        epoch = epoch or await self.current_epoch()
        ref(self.keys.epoch)
        argv: list[Any] = [group, self.settings.idempotency_window_ms, self.settings.stream_cap, epoch]
        for (kind, ep, seq, hop), stream, entry_id, effects in items:
            argv += [ref(self.keys.done(group, kind, ep, seq, hop)), ref(stream), entry_id, len(effects.ops)]
            for op, key, args in effects.ops:
                resolved = [ref(a.key) if isinstance(a, _KeyRef) else a for a in args]
                argv += [op, ref(key), len(resolved), *resolved]
        try:
            res = await self._commit_many(keys=keys, args=argv)
        except ResponseError as exc:
            if "USERRL_EPOCH" not in str(exc):
                raise
            self.epoch = None
            log.warning("bus.epoch_changed", group=group, n=len(items))
            raise EpochChanged(str(exc)) from exc
        return [bool(r) for r in res]

    async def current_epoch(self) -> bytes:
        """The run's epoch token (created if the server has none: a fresh or emptied server)."""
        if self.epoch is None:
            await self.redis.set(self.keys.epoch, uuid.uuid4().hex.encode(), nx=True)
            self.epoch = await self.redis.get(self.keys.epoch)
        return self.epoch or b""

    async def commit(self, items: Sequence[tuple[Delivery, Effects]]) -> list[bool]:
        """Apply each delivery's effects and ack it, atomically per delivery, in one script call
        per batch. Returns, per item, whether its effects were applied (False: already committed
        before, e.g. by a peer that reclaimed the message, or read before the server lost its
        data: refused by the epoch check)."""
        if not items:
            return []
        if len({d.group for d, _ in items}) > 1:
            raise ValueError("one commit call covers deliveries of one consumer group")
        by_epoch: dict[bytes, list[int]] = {}
        for i, (d, _) in enumerate(items):
            assert d.msg is not None, "only decoded deliveries can be committed"
            by_epoch.setdefault(d.epoch, []).append(i)
        out = [False] * len(items)
        for epoch, idx in by_epoch.items():
            calls = [
                (
                    idempotency_identity(items[i][0].msg),
                    items[i][0].stream,
                    items[i][0].entry_id,  # type: ignore[arg-type]
                    items[i][1],
                )
                for i in idx
            ]
            try:
                res = await self._commit_call(items[0][0].group, calls, epoch or None)
            except EpochChanged:
                continue  # read before the server lost its data: nothing applied, nothing acked
            for i, r in zip(idx, res, strict=True):
                out[i] = r
        return out

    async def commit_once(self, identity: tuple[str, str, int, int], group: str, effects: Effects) -> bool:
        """Apply effects exactly once per ``identity`` without acking anything (the reconciler's
        failure reports, :func:`~userrl.bus.reconcile.report_failed`)."""
        try:
            (applied,) = await self._commit_call(group, [(identity, self.keys.dead, "", effects)])
        except EpochChanged:  # nothing here was read under the old epoch: apply it under the new
            (applied,) = await self._commit_call(group, [(identity, self.keys.dead, "", effects)])
        return applied

    # -- dead letters ---------------------------------------------------------------------------
    async def dead_letter(self, d: Delivery, error: str) -> str:
        """Move ``d`` to the dead-letter stream (capped at ``dead_cap``) with the error. A field
        over ``dead_payload_bytes`` keeps only its prefix, its size and sha256 (such a letter
        is not replayable), so a 20 MB poison message costs kilobytes, not its size."""
        fields: list[Any] = [
            b"stream",
            d.stream,
            b"group",
            d.group,
            b"entry",
            d.entry_id,
            b"error",
            error[:2000],
            b"deliveries",
            str(d.deliveries),
            b"at",
            f"{time.time():.3f}",
        ]
        if d.msg is not None:
            fields += [b"kind", d.msg.KIND, b"episode", d.msg.episode_id]
        fields += dead_letter_fields(d.fields, self.settings.dead_payload_bytes)
        eid = await self._dead(
            keys=[d.stream, self.keys.dead], args=[d.group, d.entry_id, self.settings.dead_cap, *fields]
        )
        await self.redis.hincrby(self.keys.counters, "dead_lettered", 1)
        log.warning(
            "bus.dead_lettered",
            stream=d.stream,
            entry=d.entry_id,
            error=error,
            deliveries=d.deliveries,
            episode_id=d.msg.episode_id if d.msg else None,
        )
        return as_str(eid)

    async def dead_letters(self, count: int = 100) -> list[dict[str, Any]]:
        rows = await self.redis.xrange(self.keys.dead, count=count)
        out = []
        for eid, f in rows:
            item: dict[str, Any] = {"id": eid.decode()}
            for k, v in f.items():
                key = k.decode()
                if key.startswith("f:"):
                    continue
                item[key] = v.decode(errors="replace")
            out.append(item)
        return out

    async def replay_dead(self, ids: Sequence[str] | None = None) -> int:
        """Put dead letters back on their source stream (all of them when ``ids`` is None)."""
        rows = await self.redis.xrange(self.keys.dead)
        n = 0
        for eid, f in rows:
            eid_s = eid.decode()
            if ids is not None and eid_s not in ids:
                continue
            if b"truncated" in f:
                log.warning("bus.replay_skipped", entry=eid_s, reason="payload was truncated (oversized)")
                continue
            original = {k[2:]: v for k, v in f.items() if k.startswith(b"f:")}
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.xadd(f[b"stream"], original, maxlen=self.settings.stream_cap, approximate=True)
                pipe.xdel(self.keys.dead, eid_s)
                await pipe.execute()
            n += 1
        return n

    # -- trimming and introspection -------------------------------------------------------------
    async def trim(self, stream: str, *, approximate: bool = True) -> int:
        """XTRIM MINID to the oldest entry some group still needs (pending or undelivered).
        ``approximate`` trims whole stream nodes only (cheap); never past the floor either way."""
        try:
            groups = await self.redis.xinfo_groups(stream)
        except ResponseError:
            return 0
        if not groups:
            return 0
        floor: tuple[int, int] | None = None
        for g in groups:
            name = g["name"]
            try:
                if await self._drop_stale_waiter(stream, name):
                    continue
                summary = await self.redis.xpending(stream, name)
            except ResponseError as exc:  # destroyed since XINFO (a waiter that ended): not a floor
                if "NOGROUP" not in str(exc):
                    raise
                continue
            cand = summary["min"] if summary["pending"] else None
            if cand is None:
                last = g["last-delivered-id"]
                last = last.decode() if isinstance(last, bytes) else last
                ms, sq = (int(x) for x in last.split("-"))
                cand_t = (ms, sq + 1)
            else:
                cand = cand.decode() if isinstance(cand, bytes) else cand
                cand_t = tuple(int(x) for x in cand.split("-"))  # type: ignore[assignment]
            floor = cand_t if floor is None or cand_t < floor else floor
        if floor is None:
            return 0
        return int(await self.redis.xtrim(stream, minid=f"{floor[0]}-{floor[1]}", approximate=approximate))

    async def _drop_stale_waiter(self, stream: str, group: bytes | str) -> bool:
        """Destroy a waiter's group (``wait:*``) whose reader went silent: a waiter killed before
        it could close must not hold back trimming forever."""
        name = group.decode() if isinstance(group, bytes) else group
        if not name.startswith("wait:"):
            return False
        consumers = await self.redis.xinfo_consumers(stream, name)
        if not consumers or min(int(c["idle"]) for c in consumers) < WAITER_STALE_MS:
            return False
        await self.redis.xgroup_destroy(stream, name)
        log.warning("bus.stale_waiter_dropped", stream=stream, group=name)
        return True

    async def cap_finished(self) -> int:
        """Keep the newest ``finished_cap`` members of episodes:finished (the logs of those
        removed are deleted) and groups:done; with ``finished_cap`` auto, the cap follows the
        memory budget at the measured size of recent logs (:mod:`userrl.bus.budget`)."""
        s, k = self.settings, self.keys
        cap = await budget.measured_finished_cap(self.redis, k, s.memory_mb) if s.finished_auto else s.finished_cap
        n = await budget.cap_episode_logs(self.redis, k, cap, self._pop_oldest)
        n += int(await self._cap_index(keys=[k.groups_done_at, k.groups_done], args=[cap]))
        await budget.check_budget(self.redis, s.memory_mb)
        return n

    async def group_info(self, stream: str) -> list[dict[str, Any]]:
        try:
            rows = await self.redis.xinfo_groups(stream)
        except ResponseError:
            return []
        return [{k: (v.decode() if isinstance(v, bytes) else v) for k, v in r.items()} for r in rows]
