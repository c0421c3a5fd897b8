"""The policy backend contract.

A policy worker reads a batch of :class:`GenRequest` from the ``policy`` stream and hands the
whole batch to its backend, which returns one :class:`GenResult` per request, in order.

Token-in/token-out: ``prompt_ids`` carries the token ids of the episode so far (the previous
prompt plus every generated and appended token), or ``None`` on the first turn. The backend
appends the new messages (``messages[n_seen:]``) as tokens through the chat template, checks
that the rendered conversation extends the previous prefix exactly, generates, and returns the
full prompt it used plus the generated ids and their logprobs. The learner never re-tokenizes.

Per-request errors: ``generate`` may fail the whole call with :class:`~userrl.errors.PolicyError`.
A backend that can tell which request is at fault (a prefix mismatch, a context overflow) also
offers ``generate_each``, which returns a failed :class:`GenResult` (``error`` set) for each bad
request and generates the rest; the policy worker prefers it, and otherwise isolates a bad
request by splitting the batch (:func:`userrl.agents.worker.generate_isolated`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

from userrl.bus.records import Sampling
from userrl.errors import PolicyError


@dataclass(frozen=True, slots=True)
class GenRequest:
    episode_id: str
    env_id: str
    messages: list[dict[str, str]]
    prompt_ids: list[int] | None = None
    n_seen: int = 0  #: how many of ``messages`` are already in ``prompt_ids``
    sampling: Sampling = field(default_factory=Sampling)
    task: dict[str, Any] | None = None  #: hidden task, only for the scripted expert backend


@dataclass(frozen=True, slots=True)
class GenResult:
    text: str
    prompt_ids: list[int] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    version: int = 0
    finish_reason: str = "stop"
    error: str | None = None  #: why this request failed (then there is no generation)
    error_transient: bool = False  #: whether retrying the request may succeed

    @classmethod
    def failed(cls, exc: BaseException, version: int = 0) -> GenResult:
        """The result of a request that failed with ``exc`` (no text, no tokens)."""
        transient = bool(getattr(exc, "transient", False))
        message = str(exc) if isinstance(exc, PolicyError) else f"{type(exc).__name__}: {exc}"
        return cls(text="", version=version, finish_reason="error", error=message, error_transient=transient)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class PolicyBackend(Protocol):
    """Generation backend (hf, vllm, openai, scripted)."""

    version: int
    #: whether results carry token ids/logprobs usable for training
    trainable: bool

    async def generate(self, requests: list[GenRequest]) -> list[GenResult]: ...

    async def load_weights(self, path: str, version: int) -> float:
        """Load new weights between batches; return the swap time in seconds."""
        ...


@runtime_checkable
class IsolatingBackend(Protocol):
    """A backend that fails single requests instead of whole batches."""

    async def generate_each(self, requests: list[GenRequest]) -> list[GenResult]:
        """One result per request, in order; a bad request gets ``GenResult.failed(...)``."""
        ...
