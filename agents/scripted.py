"""The ``scripted`` policy backend: each gym's hand-written expert, for tests and SFT data.

For every request it asks the request's gym for ``expert_action(task, messages)``. The result
has text only (no token ids or logprobs), so it is not trainable with GRPO; its dialogues are
the cold-start demonstrations that the SFT learner tokenizes.
"""

from __future__ import annotations

from typing import Any

import structlog

from userrl.agents.base import GenRequest, GenResult
from userrl.envs.registry import get_env_class
from userrl.errors import PolicyError, UnknownEnvError

log = structlog.get_logger(__name__)

__all__ = ["ScriptedExpertBackend"]


class ScriptedExpertBackend:
    """Plays every gym with its scripted expert (needs the hidden ``task`` on each request)."""

    trainable = False

    def __init__(self, **_: Any) -> None:
        self.version = 0

    async def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        results = []
        for req in requests:
            try:
                text = get_env_class(req.env_id).expert_action(req.task or {}, req.messages)
            except UnknownEnvError:
                raise
            except Exception as exc:
                raise PolicyError(
                    f"episode {req.episode_id}: scripted expert for {req.env_id} failed: {type(exc).__name__}: {exc}"
                ) from exc
            results.append(GenResult(text=str(text), version=0))
        return results

    async def load_weights(self, path: str, version: int) -> float:
        """A scripted expert has no weights; the announcement is ignored."""
        log.debug("scripted_ignores_weights", path=path, version=version)
        return 0.0
