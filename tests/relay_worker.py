"""A worker used by the bus fault tests: forwards each Probe to the ``sink`` stream.

Probe body options: ``sleep`` (seconds of work), ``poison`` (raise), ``fail_times`` (raise on
the first N deliveries, recorded in a Redis hash, then succeed).
"""

from __future__ import annotations

import anyio

from userrl.bus.messages import Probe
from userrl.bus.transport import Delivery, Effects
from userrl.bus.worker import Worker


class RelayWorker(Worker):
    role = "relay"

    async def handle(self, d: Delivery) -> Effects:
        msg = d.msg
        assert isinstance(msg, Probe)
        body = msg.body
        if body.get("poison"):
            raise RuntimeError(f"poison message {msg.episode_id}")
        if body.get("fail_times"):
            n = await self.bus.redis.hincrby(self.bus.keys.counters, f"fail:{msg.episode_id}", 1)
            if n <= int(body["fail_times"]):
                raise RuntimeError(f"transient failure {n} of {msg.episode_id}")
        if body.get("sleep"):
            await anyio.sleep(float(body["sleep"]))
        out = Probe(episode_id=msg.episode_id, seq=msg.seq, hop=msg.hop + 1, body={"by": self.name})
        return Effects().send(self.bus.keys.stream("sink"), out, {"episode": msg.episode_id, "by": self.name})
