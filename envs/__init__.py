"""Gyms, datasets and the env worker. Importing this package registers the gyms' ids with
Gymnasium, so ``gymnasium.make("userrl/Telepathy-v0")`` works after ``import userrl.envs``.

The registration is by entry-point strings (as Gymnasium's own envs are): it imports neither
the adapter nor any gym; the first ``gymnasium.make`` of an id loads them.
"""

import gymnasium as _gymnasium

from userrl.envs import registry as _registry

#: what ``gymnasium.make`` of a userrl id instantiates (with ``env_id`` as a keyword)
GYMNASIUM_ENTRY_POINT = "userrl.envs.gymnasium_adapter:UserRLGymnasiumEnv"


def register_with_gymnasium() -> list[str]:
    """Register every userrl gym id with Gymnasium (idempotent; imports no gym); returns the ids."""
    ids = _registry.list_envs()
    for env_id in ids:
        if env_id not in _gymnasium.registry:
            _gymnasium.register(id=env_id, entry_point=GYMNASIUM_ENTRY_POINT, kwargs={"env_id": env_id})
    return ids


register_with_gymnasium()
