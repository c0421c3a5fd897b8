"""The registry of gym classes, by versioned id (``userrl/Telepathy-v0``).

The built-in gyms are imported here and registered in :data:`BUILTIN` order; a gym module
never imports the registry. A gym of your own (or a new version of one) is added with
:func:`register`. Everything a gym brings is found through its class: its simulated user and
judge (``user_spec``, with the leak guard's ``hidden_facts``), its score rule
(``episode_score``) and maximum (``max_score``); so a gym registered under another id keeps all
of them.

Gymnasium registration lives in :mod:`userrl.envs.gymnasium_adapter`; import it (or use
``gymnasium.make("userrl.envs.gymnasium_adapter:userrl/Telepathy-v0")``) to make the gyms
available through ``gymnasium.make``.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

from userrl.envs.base import Env
from userrl.envs.gyms.function import FunctionGym
from userrl.envs.gyms.intention import IntentionGym
from userrl.envs.gyms.persuade import PersuadeGym
from userrl.envs.gyms.search import SearchGym
from userrl.envs.gyms.tau import TauGym
from userrl.envs.gyms.telepathy import TelepathyGym
from userrl.envs.gyms.travel import TravelGym
from userrl.envs.gyms.turtle import TurtleGym
from userrl.errors import UnknownEnvError
from userrl.sim_users.base import UserSpec

_ID = re.compile(r"^[a-z][a-z0-9_]*/[A-Z][A-Za-z0-9]*-v\d+$")
_REGISTRY: dict[str, type[Env]] = {}

E = TypeVar("E", bound=type[Env])


def register(cls: E) -> E:
    """Class decorator: register a gym under its ``id``.

    Re-registering the same class (a module reload) is allowed; a different class under a
    taken id is an error, since ids are versioned and a changed gym must get a new version.
    """
    env_id = getattr(cls, "id", None)
    if not isinstance(env_id, str) or not _ID.match(env_id):
        raise ValueError(f"{cls.__name__}.id must look like 'userrl/Name-v0', got {env_id!r}")
    known = _REGISTRY.get(env_id)
    if known is not None and known.__qualname__ != cls.__qualname__:
        raise ValueError(f"env id {env_id!r} is already registered to {known.__qualname__}")
    _REGISTRY[env_id] = cls
    return cls


def get_env_class(env_id: str) -> type[Env]:
    """The gym class registered under ``env_id``; :class:`UnknownEnvError` lists known ids."""
    try:
        return _REGISTRY[env_id]
    except KeyError:
        known = ", ".join(list_envs()) or "(none)"
        raise UnknownEnvError(f"unknown env id {env_id!r}; known ids: {known}") from None


def make(env_id: str, **kwargs: Any) -> Env:
    """Instantiate the gym ``env_id`` (kwargs go to its constructor, e.g. ``max_turns``)."""
    return get_env_class(env_id)(**kwargs)


def list_envs() -> list[str]:
    """Registered env ids, sorted."""
    return sorted(_REGISTRY)


def user_spec(env_id: str) -> UserSpec:
    """The simulated user and judge of the gym registered under ``env_id``."""
    return get_env_class(env_id).user_spec


#: the gyms that ship with userrl
BUILTIN: tuple[type[Env], ...] = (
    FunctionGym,
    TelepathyGym,
    TurtleGym,
    IntentionGym,
    TravelGym,
    PersuadeGym,
    SearchGym,
    TauGym,
)
for _cls in BUILTIN:
    register(_cls)
