"""Every Redis name userrl uses, in one place.

All names live under ``userrl:{<run>}:`` so several runs share one server without touching each
other. The braces are a Redis Cluster hash tag: only ``<run>`` is hashed, so every key of a
run lives in one slot and a commit (one Lua script over the idempotency key, the outgoing
streams, the snapshot and the consumed stream) never spans slots (CROSSSLOT); different runs
land on different slots, so a cluster spreads runs over its nodes. Streams carry msgpack
payloads in the field ``p``; episode streams add plain readable fields next to it so
``redis-cli XRANGE`` shows a dialogue while it runs.
"""

from __future__ import annotations

from dataclasses import dataclass

#: roles that consume a stream, each with one consumer group named after the role
ROLES: tuple[str, ...] = ("env", "policy", "user", "reward", "learner")

#: characters a run name may not hold: key separators, glob characters (SCAN patterns) and the
#: braces of the hash tag (a '}' in the name would end the tag early and split the run's slots)
RESERVED: tuple[str, ...] = (" ", ":", "*", "?", "[", "]", "{", "}")


@dataclass(frozen=True, slots=True)
class Keys:
    run: str = "default"

    def __post_init__(self) -> None:
        if not self.run or any(c in self.run for c in RESERVED):
            raise ValueError(f"run name {self.run!r} must be non-empty without {' '.join(RESERVED)}")

    @property
    def prefix(self) -> str:
        """``userrl:{<run>}:``: the braces make the run name the key's cluster hash tag."""
        return f"userrl:{{{self.run}}}:"

    # -- work streams (one consumer group per role) ------------------------------------------
    def stream(self, role: str) -> str:
        """Input stream of a role: env (reset/action/user reply), policy, user, reward, learner."""
        return f"{self.prefix}stream:{role}"

    def group(self, role: str) -> str:
        """Consumer group name of a role on its input stream."""
        return role

    def replica_stream(self, replica: str) -> str:
        """The own input stream of policy replica ``replica`` (read with the ``policy`` group next
        to the shared stream): an episode's later turns go there while the replica lives."""
        return f"{self.stream('policy')}:{replica}"

    @property
    def policy_replicas(self) -> str:
        """Set of policy replica names that have an own stream (scanned for dead replicas)."""
        return f"{self.prefix}policy:replicas"

    @property
    def weights(self) -> str:
        """Stream of weight-version announcements from the learner (read without a group)."""
        return f"{self.prefix}stream:weights"

    @property
    def dead(self) -> str:
        """Dead-letter stream: poison entries with their source stream, group and error."""
        return f"{self.prefix}stream:dead"

    @property
    def results(self) -> str:
        """Stream of scored groups / finished episodes for evaluation and metrics readers."""
        return f"{self.prefix}stream:results"

    # -- exactly-once bookkeeping --------------------------------------------------------------
    def done(self, group: str, kind: str, episode: str, seq: int, hop: int) -> str:
        """Idempotency key: set (NX) in the commit of the message (kind, episode, seq, hop)."""
        return f"{self.prefix}done:{group}:{kind}:{episode}:{seq}:{hop}"

    def replies(self, episode: str) -> str:
        """Hash of stored replies of an episode, field ``{seq}:{hop}`` (re-executed steps replay them)."""
        return f"{self.prefix}replies:{episode}"

    def state(self, episode: str) -> str:
        """Hash with the episode's snapshot, written in each env step's commit: ``episode`` (the
        msgpack-packed episode: env state, dialogue so far, turn records), ``seq`` (its step)
        and ``at`` (unix time of the write, the reconciler's progress clock)."""
        return f"{self.prefix}state:{episode}"

    # -- GRPO groups (reward worker) -----------------------------------------------------------
    def group_members(self, group_id: str) -> str:
        """Hash episode_id -> encoded trajectory of a group still being collected."""
        return f"{self.prefix}group:{group_id}"

    @property
    def groups_open(self) -> str:
        """Sorted set of groups being collected, score = first member's arrival (deadline sweep)."""
        return f"{self.prefix}groups:open"

    @property
    def groups_done(self) -> str:
        """Hash group_id -> 'scored' | 'dropped:<reason>'; late members of these are discarded."""
        return f"{self.prefix}groups:done"

    @property
    def groups_done_at(self) -> str:
        """Sorted set group_id -> time it was done: caps ``groups_done`` (oldest dropped first)."""
        return f"{self.prefix}groups:done:at"

    # -- live inspection ----------------------------------------------------------------------
    def episode(self, episode: str) -> str:
        """Readable per-episode stream: one entry per turn (role, turn, text, reward, ...)."""
        return f"{self.prefix}episode:{episode}"

    @property
    def live(self) -> str:
        """Sorted set of live episodes, score = start time (unix seconds)."""
        return f"{self.prefix}episodes:live"

    @property
    def finished(self) -> str:
        """Sorted set of finished episodes, score = end time (unix seconds)."""
        return f"{self.prefix}episodes:finished"

    # -- waiters -------------------------------------------------------------------------------
    @staticmethod
    def waiter_group(waiter: str) -> str:
        """Consumer group of one waiter on the reward stream (``dispatch --wait``, eval): it keeps
        the entries it has not read from being trimmed; dropped when the waiter ends or goes stale."""
        return f"wait:{waiter}"

    def waiter_marker(self, waiter: str) -> str:
        """A key a waiter sets when it starts: gone means the server lost its data (restart
        without persistence), so the waiter's in-flight episodes are reconciled at once."""
        return f"{self.prefix}waiter:{waiter}"

    @property
    def epoch(self) -> str:
        """A random token created once per server lifetime of the run's data: a commit carries the
        token it read under, and a different one (the server restarted without its data) rejects
        it, so work read before the loss can never collide with its re-dispatched twin."""
        return f"{self.prefix}epoch"

    # -- health and counters ------------------------------------------------------------------
    def heartbeat(self, role: str, worker: str) -> str:
        """Heartbeat of one worker (JSON, expires after the configured TTL)."""
        return f"{self.prefix}hb:{role}:{worker}"

    def heartbeat_pattern(self, role: str = "*") -> str:
        """SCAN pattern matching heartbeats of a role."""
        return f"{self.prefix}hb:{role}:*"

    @property
    def replicas(self) -> str:
        """Hash role -> wanted replica count of a running deploy (``userrl scale`` writes it)."""
        return f"{self.prefix}deploy:replicas"

    @property
    def supervisor(self) -> str:
        """Heartbeat of the local launcher supervising this run (JSON, with a TTL)."""
        return f"{self.prefix}deploy:supervisor"

    @property
    def failure(self) -> str:
        """Why the launcher gave up on this run (JSON, with a TTL): ``dispatch --wait`` reads it."""
        return f"{self.prefix}deploy:failure"

    @property
    def counters(self) -> str:
        """Hash of run-wide counters (processed, dead_lettered, nogroup_recreated, ...)."""
        return f"{self.prefix}counters"
