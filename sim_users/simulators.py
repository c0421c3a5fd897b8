"""The simulators a user worker answers with, and pointing the user role at another one mid-run.

A simulator is a user/judge backend with its stamp (:mod:`userrl.sim_users.stamp`). A user
worker holds one default and optional per-gym ones (:class:`Simulators`), built from the deploy
config's ``user`` section.

**Swapping without stopping anything.** ``userrl users swap SPEC`` writes the run's *user target*
(``user:target``: the ``user`` fields to change, validated first); every user worker checks it
once per heartbeat, builds the new simulators and answers every request that starts afterwards
with them (requests already in flight finish on the old ones, which are closed once idle). Each
worker's heartbeat says which target it applied (or why it could not), and every user turn is
stamped with what answered it. ``userrl users swap --reset`` goes back to the config.

A SPEC names a simulator: ``scripted``, ``hf:PATH``, ``openai:MODEL@BASE_URL``, or ``user``
fields as ``key=value`` pairs (``backend=openai,model=m,base_url=http://h:8000/v1``); a
shorthand may be followed by pairs (``hf:PATH,model_version=step300``), and ``LABEL=SPEC`` names
it in reports (``llm=hf:PATH``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import yaml

from userrl.config import DeployConfig, UserConfig, build, check_deploy
from userrl.envs.users import ScriptedBackend
from userrl.errors import ConfigError
from userrl.sim_users.base import UserBackend
from userrl.sim_users.stamp import SCRIPTED, model_fingerprint, simulator_stamp

if TYPE_CHECKING:
    from userrl.bus.transport import Bus

__all__ = [
    "MakeBackend",
    "Simulators",
    "Target",
    "build_simulators",
    "clear_target",
    "parse_simulator",
    "read_target",
    "restore_target",
    "stamp_for",
    "targets_of",
    "user_workers",
    "wait_applied",
    "with_user",
    "write_target",
]

#: ``make(kind, cfg)``: the backend of ``kind`` from a deploy config (the user worker's
#: :func:`~userrl.sim_users.worker.make_user_backend`)
MakeBackend = Callable[[str, DeployConfig], UserBackend]
_FIELDS = {f.name for f in dataclasses.fields(UserConfig)}


def stamp_for(kind: str, u: UserConfig) -> str:
    """The stamp of backend ``kind`` built from the ``user`` section ``u``."""
    if kind == "scripted":
        return SCRIPTED
    if kind == "hf":
        name = Path(u.model).name or u.model
        return simulator_stamp("hf", name, u.model_version or model_fingerprint(u.model))
    return simulator_stamp(kind, u.model, u.model_version)


@dataclass
class Simulators:
    """A worker's backends: the default and per-gym overrides, each with its stamp."""

    default: UserBackend
    per_gym: dict[str, UserBackend] = dataclasses.field(default_factory=dict)
    #: ``id(backend)`` -> stamp; a backend not listed is stamped ``scripted`` if it is the
    #: scripted backend, else by its class name
    stamps: dict[int, str] = dataclasses.field(default_factory=dict)

    def pick(self, env_id: str) -> tuple[UserBackend, str]:
        b = self.per_gym.get(env_id, self.default)
        return b, self.stamp(b)

    def stamp(self, b: UserBackend) -> str:
        if id(b) in self.stamps:
            return self.stamps[id(b)]
        return SCRIPTED if isinstance(b, ScriptedBackend) else type(b).__name__

    def backends(self) -> list[UserBackend]:
        """Each backend once."""
        return list({id(b): b for b in [self.default, *self.per_gym.values()]}.values())


def build_simulators(cfg: DeployConfig, make: MakeBackend) -> Simulators:
    """The simulators of ``cfg.user`` (backends of one kind are shared by the gyms using it).
    An hf model named by a path must be a model folder here (a swap to a wrong path fails at
    once, in the worker's heartbeat, not in the first episode)."""
    u = cfg.user
    kinds = {u.backend, *u.per_gym.values()}
    folder = Path(u.model).expanduser()
    if "hf" in kinds and u.model.startswith(("/", ".", "~")) and not (folder / "config.json").is_file():
        raise ConfigError(f"user.model: {u.model!r} is not a model folder (no config.json in it)")
    by_kind: dict[str, UserBackend] = {u.backend: make(u.backend, cfg)}
    per_gym: dict[str, UserBackend] = {}
    for gym, kind in u.per_gym.items():
        if kind not in by_kind:
            by_kind[kind] = make(kind, cfg)
        per_gym[gym] = by_kind[kind]
    stamps = {id(b): stamp_for(kind, u) for kind, b in by_kind.items()}
    return Simulators(by_kind[u.backend], per_gym, stamps)


def with_user(cfg: DeployConfig, fields: dict[str, Any]) -> DeployConfig:
    """``cfg`` with its ``user`` section changed by ``fields``, validated like a config load."""
    unknown = set(fields) - _FIELDS
    if unknown:
        raise ConfigError(f"user: unknown key(s) {sorted(unknown)}; allowed: {sorted(_FIELDS)}")
    user = build(UserConfig, {**dataclasses.asdict(cfg.user), **fields}, "user")
    out = dataclasses.replace(cfg, user=user)
    check_deploy(out)
    return out


def parse_simulator(spec: str) -> tuple[str, dict[str, Any]]:
    """``(label, user fields)`` of a SPEC (module docstring); the label defaults to the spec."""
    spec = spec.strip()
    label = ""
    head = spec.split("=", 1)[0]
    if "=" in spec and head not in _FIELDS and "," not in head and ":" not in head:
        label, spec = head, spec.split("=", 1)[1]
    if not spec:
        raise ConfigError("a simulator spec is empty; e.g. scripted, hf:PATH or openai:MODEL@http://HOST:PORT/v1")
    first, *rest = spec.split(",")
    fields: dict[str, Any] = {}
    if first == "scripted":
        fields["backend"] = "scripted"
    elif first.startswith("hf:") and len(first) > 3:
        fields.update(backend="hf", model=first[3:])
    elif first.startswith("openai:"):
        model, _, url = first[7:].rpartition("@")
        if not model or not url.startswith(("http://", "https://")):
            raise ConfigError(f"simulator {spec!r}: write openai:MODEL@http://HOST:PORT/v1")
        fields.update(backend="openai", model=model, base_url=url)
    else:
        rest = [first, *rest]
    for pair in rest:
        key, eq, raw = pair.partition("=")
        if not eq or key.strip() not in _FIELDS:
            raise ConfigError(
                f"simulator {spec!r}: {pair!r} is not key=value with a user field ({', '.join(sorted(_FIELDS))}); "
                "or use scripted, hf:PATH, openai:MODEL@URL"
            )
        fields[key.strip()] = yaml.safe_load(raw) if raw else ""
    if "backend" not in fields:
        raise ConfigError(f"simulator {spec!r}: say which backend (scripted, hf:PATH, openai:MODEL@URL, backend=...)")
    return label or spec, fields


# ---- the run's user target --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """The ``user`` fields the run's user workers should answer with (over their config)."""

    fields: dict[str, Any]
    id: str  #: a digest of ``fields``: heartbeats name the target they applied by it
    at: float = 0.0


def _target_id(fields: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]


async def write_target(bus: Bus, cfg: DeployConfig, fields: dict[str, Any]) -> Target:
    """Point the run's user role at ``fields`` (checked against ``cfg`` first: a bad spec fails
    here, not in the workers). Secrets never go in: only ``api_key_env``, a variable's name."""
    with_user(cfg, fields)
    t = Target(dict(fields), _target_id(fields), time.time())
    await bus.control.set_user_target(json.dumps({"fields": t.fields, "id": t.id, "at": t.at}))
    return t


async def clear_target(bus: Bus) -> None:
    """Back to each worker's own config."""
    await bus.control.clear_user_target()


async def restore_target(bus: Bus, target: Target | None) -> None:
    """Put back a target read earlier with :func:`read_target` (None: clear it)."""
    if target is None:
        await clear_target(bus)
        return
    await bus.control.set_user_target(json.dumps({"fields": target.fields, "id": target.id, "at": target.at}))


async def read_target(bus: Bus) -> Target | None:
    raw = await bus.control.user_target()
    if not raw:
        return None
    try:
        d = json.loads(raw)
        return Target(dict(d["fields"]), str(d["id"]), float(d.get("at", 0.0)))
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"{bus.control.user_target_key} holds no user target ({exc}); `userrl users swap --reset` clears it"
        ) from exc


def targets_of(specs: Sequence[str]) -> list[tuple[str, dict[str, Any]]]:
    """Each SPEC parsed; labels must be distinct."""
    out = [parse_simulator(s) for s in specs]
    labels = [lbl for lbl, _ in out]
    dup = {lbl for lbl in labels if labels.count(lbl) > 1}
    if dup:
        raise ConfigError(f"simulators need distinct labels; repeated: {sorted(dup)} (name them LABEL=SPEC)")
    return out


async def user_workers(bus: Bus) -> list[dict[str, Any]]:
    """The live user workers' heartbeats (each says its stamp, ``target`` and ``target_error``)."""
    out = await bus.control.heartbeats("user")
    return sorted(out, key=lambda hb: str(hb.get("worker", "")))


async def wait_applied(bus: Bus, target_id: str, timeout_s: float) -> list[dict[str, Any]]:
    """Wait until every live user worker (at least one) applied ``target_id`` ("" = the
    config's own); :class:`ConfigError` when one could not (its reason) or time runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        hbs = await user_workers(bus)
        failed = [hb for hb in hbs if hb.get("target") == target_id and hb.get("target_error")]
        if failed:
            raise ConfigError(f"user worker {failed[0].get('worker')} could not switch: {failed[0]['target_error']}")
        if hbs and all(hb.get("target") == target_id for hb in hbs):
            return hbs
        if time.monotonic() > deadline:
            seen = {str(hb.get("worker")): hb.get("target") for hb in hbs} or "no user worker is alive"
            raise ConfigError(f"the user workers did not switch to target {target_id!r} in {timeout_s:g}s: {seen}")
        await anyio.sleep(0.2)
