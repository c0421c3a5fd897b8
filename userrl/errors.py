"""Every error userrl raises, in one tree.

::

    UserRLError
    ├── ConfigError            a deploy config or CLI override is wrong (names the field)
    ├── DataError              a dataset/task file is missing or malformed (names file:line)
    ├── UnknownEnvError        an env id is not registered (lists the known ids)
    ├── MessageError           a bus payload cannot be decoded/validated or is over the size cap
    └── RolloutError           a rollout failed; recorded on the episode as data, never trained on
        ├── PolicyError        the policy backend failed (model server down, bad weights)
        ├── UserError          the simulated user/judge backend failed
        │   ├── UserMalformedError  the user model's reply stayed malformed after the re-asks
        │   └── UserEmptyError      the user model's reply stayed empty after the re-asks
        ├── EnvError           the gym raised
        ├── RewardError        scoring failed
        └── BusError           the bus lost an episode (stalled, or its state vanished)

``RolloutError`` carries ``transient``: a transient failure (timeout, 429, 5xx) is retried with
backoff by the caller; a permanent one fails the episode (and its GRPO group) as an
infrastructure error. :func:`boundary` classifies whatever escapes a block of code.

On the bus a rollout error travels as an error record (``kind``, ``retryable`` = ``transient``,
``message``; :class:`userrl.bus.messages.ErrorRecord`): :func:`rollout_error` turns a ``kind``
back into its class, with :data:`ROLLOUT_ERRORS`, the one table of both directions.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class UserRLError(Exception):
    """Base of every userrl error."""


class ConfigError(UserRLError, ValueError):
    """A config value is wrong; the message names the field and what is allowed."""


class DataError(UserRLError, ValueError):
    """A data file is missing or malformed; the message names the file (and line)."""


class UnknownEnvError(UserRLError, KeyError):
    """An env id is not registered."""

    def __str__(self) -> str:  # KeyError quotes its argument; we want the plain message
        return str(self.args[0]) if self.args else ""


class MessageError(UserRLError, ValueError):
    """A bus message could not be decoded or validated."""


class RolloutError(UserRLError):
    """A rollout failed at one boundary. ``kind`` names the boundary."""

    kind = "rollout"

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class PolicyError(RolloutError):
    kind = "policy"


class UserError(RolloutError):
    kind = "user"


class UserMalformedError(UserError):
    """The user model kept answering in a form the gym cannot use (a verdict that is not the
    JSON the gym asked for), after the bounded re-asks."""

    kind = "user_malformed"


class UserEmptyError(UserError):
    """The user model kept answering nothing (an empty reply), after the bounded re-asks."""

    kind = "user_empty"


class EnvError(RolloutError):
    kind = "env"


class RewardError(RolloutError):
    kind = "reward"


class BusError(RolloutError):
    kind = "bus"


#: ``kind`` -> error class (each class's ``kind`` attribute is the other direction)
ROLLOUT_ERRORS: dict[str, type[RolloutError]] = {
    c.kind: c
    for c in (RolloutError, PolicyError, UserError, UserMalformedError, UserEmptyError, EnvError, RewardError, BusError)
}


def rollout_error(kind: str, message: str, *, transient: bool = False) -> RolloutError:
    """The error of class ``kind`` (:data:`ROLLOUT_ERRORS`); an unknown kind (a newer peer's)
    is a plain :class:`RolloutError` that keeps the kind."""
    cls = ROLLOUT_ERRORS.get(kind)
    if cls is not None:
        return cls(message, transient=transient)
    exc = RolloutError(message, transient=transient)
    exc.kind = kind
    return exc


@contextmanager
def boundary(cls: type[RolloutError]) -> Iterator[None]:
    """Re-raise anything that escapes the block as ``cls`` (RolloutErrors pass unchanged)."""
    try:
        yield
    except RolloutError:
        raise
    except (TimeoutError, ConnectionError) as exc:
        raise cls(f"{type(exc).__name__}: {exc}", transient=True) from exc
    except Exception as exc:
        raise cls(f"{type(exc).__name__}: {exc}") from exc
