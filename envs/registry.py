"""The registry of gym classes, by versioned id (``userrl/Telepathy-v0``).

Gyms are registered lazily, as Gymnasium does: the registry holds each id's entry point, a
``"module:Class"`` string, and imports the gym's module on the first lookup of its id
(:func:`get_env_class`, :func:`make`, :func:`user_spec`). So importing the registry (or a
contract such as :mod:`userrl.envs.actions`) imports no gym, and listing the ids
(:func:`list_envs`) imports none either. The built-in gyms are :data:`BUILTIN`; a gym module
never imports the registry. A gym of your own (or a new version of one) is added with
:func:`register_entry_point` (lazy) or the :func:`register` class decorator. Everything a gym
brings is found through its class: its simulated user and judge (``user_spec``, with the leak
guard's ``hidden_facts``), its score rule (``episode_score``) and maximum (``max_score``); so a
gym registered under another id keeps all of them.

Gymnasium registration lives in :mod:`userrl.envs` (``import userrl.envs`` makes the ids
available through ``gymnasium.make``), with :mod:`userrl.envs.gymnasium_adapter` as the entry
point it loads on the first ``gymnasium.make``.
"""

from __future__ import annotations

import importlib
import re
from typing import Any, TypeVar

from userrl.envs.base import Env
from userrl.errors import UnknownEnvError
from userrl.sim_users.base import UserSpec

_ID = re.compile(r"^[a-z][a-z0-9_]*/[A-Z][A-Za-z0-9]*-v\d+$")
_ENTRY_POINT = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
#: id -> the gym class, or its ``"module:Class"`` entry point until the first lookup loads it
_REGISTRY: dict[str, type[Env] | str] = {}

E = TypeVar("E", bound=type[Env])

#: the gyms that ship with userrl: id -> entry point (imported on first use)
BUILTIN: dict[str, str] = {
    "userrl/Function-v0": "userrl.envs.gyms.function:FunctionGym",
    "userrl/Telepathy-v0": "userrl.envs.gyms.telepathy:TelepathyGym",
    "userrl/Turtle-v0": "userrl.envs.gyms.turtle:TurtleGym",
    "userrl/Intention-v0": "userrl.envs.gyms.intention:IntentionGym",
    "userrl/Travel-v0": "userrl.envs.gyms.travel:TravelGym",
    "userrl/Persuade-v0": "userrl.envs.gyms.persuade:PersuadeGym",
    "userrl/Search-v0": "userrl.envs.gyms.search:SearchGym",
    "userrl/Tau-v0": "userrl.envs.gyms.tau:TauGym",
}


def _check_id(env_id: object, what: str) -> str:
    if not isinstance(env_id, str) or not _ID.match(env_id):
        raise ValueError(f"{what} must look like 'userrl/Name-v0', got {env_id!r}")
    return env_id


def _qualname(entry: type[Env] | str) -> str:
    return entry.__qualname__ if isinstance(entry, type) else entry.rpartition(":")[2]


def register(cls: E) -> E:
    """Class decorator: register a gym under its ``id``.

    Re-registering the same class (a module reload, or the class an entry point names) is
    allowed; a different class under a taken id is an error, since ids are versioned and a
    changed gym must get a new version.
    """
    env_id = _check_id(getattr(cls, "id", None), f"{cls.__name__}.id")
    known = _REGISTRY.get(env_id)
    if known is not None and _qualname(known) != cls.__qualname__:
        raise ValueError(f"env id {env_id!r} is already registered to {_qualname(known)}")
    _REGISTRY[env_id] = cls
    return cls


def register_entry_point(env_id: str, entry_point: str) -> None:
    """Register the gym ``entry_point`` (``"package.module:Class"``) under ``env_id`` without
    importing it; the module is imported on the first lookup of ``env_id``.

    Registering the same entry point again is allowed; another one under a taken id is an error.
    """
    _check_id(env_id, "an env id")
    if not isinstance(entry_point, str) or not _ENTRY_POINT.match(entry_point):
        raise ValueError(f"entry point of {env_id!r} must look like 'package.module:Class', got {entry_point!r}")
    known = _REGISTRY.get(env_id)
    if known is None:
        _REGISTRY[env_id] = entry_point
    elif isinstance(known, str) and known != entry_point:
        raise ValueError(f"env id {env_id!r} is already registered to {known}")
    elif isinstance(known, type) and f"{known.__module__}:{known.__qualname__}" != entry_point:
        raise ValueError(f"env id {env_id!r} is already registered to {known.__qualname__}")


def _load(env_id: str, entry_point: str) -> type[Env]:
    """Import the class ``entry_point`` names, check it is the gym ``env_id``, and keep it."""
    module_name, _, class_name = entry_point.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Env)):
        raise TypeError(f"entry point {entry_point!r} of env id {env_id!r} is not an Env subclass: {cls!r}")
    if getattr(cls, "id", None) != env_id:
        raise ValueError(f"entry point {entry_point!r} is registered as {env_id!r} but its id is {cls.id!r}")
    _REGISTRY[env_id] = cls
    return cls


def get_env_class(env_id: str) -> type[Env]:
    """The gym class registered under ``env_id`` (its module is imported on the first call);
    :class:`UnknownEnvError` lists the known ids."""
    try:
        entry = _REGISTRY[env_id]
    except KeyError:
        known = ", ".join(list_envs()) or "(none)"
        raise UnknownEnvError(f"unknown env id {env_id!r}; known ids: {known}") from None
    return entry if isinstance(entry, type) else _load(env_id, entry)


def make(env_id: str, **kwargs: Any) -> Env:
    """Instantiate the gym ``env_id`` (kwargs go to its constructor, e.g. ``max_turns``)."""
    return get_env_class(env_id)(**kwargs)


def list_envs() -> list[str]:
    """Registered env ids, sorted (imports no gym)."""
    return sorted(_REGISTRY)


def user_spec(env_id: str) -> UserSpec:
    """The simulated user and judge of the gym registered under ``env_id``."""
    return get_env_class(env_id).user_spec


for _id, _entry in BUILTIN.items():
    register_entry_point(_id, _entry)
