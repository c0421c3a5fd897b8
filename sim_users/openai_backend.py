"""Simulated user/judge played by a model behind an OpenAI-compatible endpoint.

GPT-4o, or Qwen3-32B served by vLLM as in the paper. The gym's ``user_spec`` writes the prompt
and parses the reply (:mod:`userrl.sim_users.llm_user`); transport failures from
:class:`~userrl.openai_compat.ChatClient` arrive as :class:`~userrl.errors.UserError` with
``transient`` set for 429/5xx/timeouts.

Structured output (``structured_output``): each query is sent with the JSON schema its gym
declares for the reply, as ``response_format`` ``json_schema`` (strict). The server then decodes
under that schema, so even an untrained model answers in the judge's format; the OpenAI API and
vLLM both take it. ``auto`` (the default) sends it and, where a server refuses it (HTTP 400/422
about the schema or ``response_format``), asks that query again without it and stops sending
that schema; ``always`` fails the query instead; ``never`` sends none. Forbidding free whitespace
inside the JSON is a setting of the vLLM server, not of the request (``userrl serve`` sets it):
a small model left free to add whitespace fills ``max_tokens`` with it.

At temperature 0, identical requests are sent once (:class:`~userrl.sim_users.shared.SharedGenerations`):
the judge calls of a GRPO group that grade the same answer share one generation.
"""

from __future__ import annotations

from functools import partial
from types import TracebackType
from typing import Any, Literal, get_args

import structlog

from userrl.errors import ConfigError, UserError
from userrl.openai_compat import ChatClient, OpenAIConfig, json_schema_format, rejects_structured_output
from userrl.sim_users.base import UserQuery
from userrl.sim_users.llm_user import SpecLookup, ask_llm_user, default_spec_lookup, reply_schema, schema_name
from userrl.sim_users.shared import SharedGenerations, prompt_key

__all__ = ["OpenAIUserBackend", "StructuredOutput"]

log = structlog.get_logger(__name__)

#: not on/off: YAML reads those as booleans
StructuredOutput = Literal["auto", "always", "never"]


class OpenAIUserBackend:
    """``UserBackend`` over an OpenAI-compatible chat endpoint.

    Args:
        config: endpoint, model, sampling defaults, concurrency and retry policy.
        spec_lookup: ``env_id -> UserSpec``; defaults to the env registry.
        max_reasks: extra attempts after a reply the gym's ``parse_llm`` rejects.
        structured_output: ``auto``, ``always`` or ``never`` (see the module docstring).
        share_ttl_s: identical greedy requests within this many seconds are sent once (0: never).
    """

    def __init__(
        self,
        config: OpenAIConfig,
        spec_lookup: SpecLookup | None = None,
        *,
        max_reasks: int = 2,
        structured_output: StructuredOutput = "auto",
        share_ttl_s: float = 30.0,
    ) -> None:
        if max_reasks < 0:
            raise ConfigError(f"max_reasks must be >= 0, got {max_reasks}")
        if structured_output not in get_args(StructuredOutput):
            raise ConfigError(
                f"structured_output must be one of {get_args(StructuredOutput)}, got {structured_output!r}"
            )
        self.config = config
        self.client = ChatClient(config, error_cls=UserError)
        self.spec_lookup = spec_lookup or default_spec_lookup
        self.max_reasks = max_reasks
        self.structured_output = structured_output
        self.refused: set[str] = set()  #: schema names the server refused (``auto`` asks without them)
        #: identical greedy requests sent once; None when sampling (each caller gets its own sample)
        self.shared = SharedGenerations(share_ttl_s) if config.temperature == 0 and share_ttl_s > 0 else None

    async def ask(self, query: UserQuery) -> dict[str, Any]:
        generate = partial(self._generate, self._response_format(query))
        return await ask_llm_user(query, self.spec_lookup, generate, max_reasks=self.max_reasks)

    def _response_format(self, query: UserQuery) -> dict[str, Any] | None:
        if self.structured_output == "never":
            return None
        schema = reply_schema(query, self.spec_lookup)
        name = schema_name(query)
        if schema is None or name in self.refused:
            return None
        return json_schema_format(name, schema)

    async def _generate(self, response_format: dict[str, Any] | None, messages: list[dict[str, str]]) -> str:
        if self.shared is None:
            return await self._complete(response_format, messages)
        key = prompt_key(self.config.model, self.config.max_tokens, response_format, messages)
        return await self.shared.generate(key, partial(self._complete, response_format, messages))

    async def _complete(self, response_format: dict[str, Any] | None, messages: list[dict[str, str]]) -> str:
        if response_format is None:
            text, _ = await self.client.complete(messages)
            return text
        try:
            text, _ = await self.client.complete(messages, response_format=response_format)
        except UserError as exc:
            if self.structured_output != "auto" or not rejects_structured_output(exc):
                raise
            name = response_format["json_schema"]["name"]
            if name not in self.refused:
                self.refused.add(name)
                log.warning("user.structured_output_refused", schema=name, error=str(exc))
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
