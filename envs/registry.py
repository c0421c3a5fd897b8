"""The registry of gym classes, by versioned id (``userrl/Telepathy-v0``).

Gym modules register themselves with the :func:`register` decorator. Importing this module
registers the built-in gyms (they are imported at the bottom, after :func:`register` exists,
so a gym module may import this one without a cycle).

Gymnasium registration lives in :mod:`userrl.envs.gymnasium_adapter`; import it (or use
``gymnasium.make("userrl.envs.gymnasium_adapter:userrl/Telepathy-v0")``) to make the gyms
available through ``gymnasium.make``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, TypeVar

from userrl.errors import UnknownEnvError

if TYPE_CHECKING:
    from userrl.envs.base import Env

_ID = re.compile(r"^[a-z][a-z0-9_]*/[A-Z][A-Za-z0-9]*-v\d+$")
_REGISTRY: dict[str, type[Env]] = {}

E = TypeVar("E", bound="type[Env]")


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


# Imported last so the gym modules find ``register`` defined (see module docstring).
from userrl.envs.gyms import (  # noqa: E402,F401
    function,
    intention,
    persuade,
    search,
    tau,
    telepathy,
    travel,
    turtle,
)
