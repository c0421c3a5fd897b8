"""Simulated user/judge played by a model behind an OpenAI-compatible endpoint.

GPT-4o, or Qwen3-32B served by vLLM as in the paper. The gym's ``user_spec`` writes the prompt
and parses the reply (:mod:`userrl.sim_users.llm_user`); transport failures from
:class:`~userrl.openai_compat.ChatClient` arrive as :class:`~userrl.errors.UserError` with
``transient`` set for 429/5xx/timeouts.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from userrl.errors import ConfigError, UserError
from userrl.openai_compat import ChatClient, OpenAIConfig
from userrl.sim_users.base import UserQuery
from userrl.sim_users.llm_user import SpecLookup, ask_llm_user, default_spec_lookup

__all__ = ["OpenAIUserBackend"]


class OpenAIUserBackend:
    """``UserBackend`` over an OpenAI-compatible chat endpoint.

    Args:
        config: endpoint, model, sampling defaults, concurrency and retry policy.
        spec_lookup: ``env_id -> UserSpec``; defaults to the env registry.
        max_reasks: extra attempts after a reply the gym's ``parse_llm`` rejects.
    """

    def __init__(self, config: OpenAIConfig, spec_lookup: SpecLookup | None = None, *, max_reasks: int = 2) -> None:
        if max_reasks < 0:
            raise ConfigError(f"max_reasks must be >= 0, got {max_reasks}")
        self.config = config
        self.client = ChatClient(config, error_cls=UserError)
        self.spec_lookup = spec_lookup or default_spec_lookup
        self.max_reasks = max_reasks

    async def ask(self, query: UserQuery) -> dict[str, Any]:
        return await ask_llm_user(query, self.spec_lookup, self._generate, max_reasks=self.max_reasks)

    async def _generate(self, messages: list[dict[str, str]]) -> str:
        text, _ = await self.client.complete(messages)
        return text

    async def aclose(self) -> None:
        await self.client.aclose()

    async def __aenter__(self) -> OpenAIUserBackend:
        await self.client.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
