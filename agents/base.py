"""The policy backend contract.

A policy worker reads a batch of :class:`GenRequest` from the ``policy`` stream and hands the
whole batch to its backend, which returns one :class:`GenResult` per request, in order.

Token-in/token-out: ``prompt_ids`` carries the token ids of the episode so far (the previous
prompt plus every generated and appended token), or ``None`` on the first turn. The backend
appends the new messages (``messages[n_seen:]``) as tokens through the chat template, checks
that the rendered conversation extends the previous prefix exactly, generates, and returns the
full prompt it used plus the generated ids and their logprobs. The learner never re-tokenizes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Sampling:
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 64
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")


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
