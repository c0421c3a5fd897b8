"""Policy backend for evaluating API models behind an OpenAI-compatible endpoint.

Not trainable: results carry text only (no token ids or logprobs) and ``load_weights`` raises.
With ``tools=True`` (``policy.tools``) the ``interact_with_env`` tool schema is sent; a native ``tool_calls``
answer is rewritten to the Hermes text form the common parser reads::

    <tool_call>
    {"name": "interact_with_env", "arguments": {"choice": "answer", "content": "42"}}
    </tool_call>

Arguments that are not valid JSON are passed on as a string, so the parser reports a format
error observation instead of the backend crashing.
"""

from __future__ import annotations

import json
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio

from userrl.agents.base import GenRequest, GenResult
from userrl.envs.actions import TOOL_SCHEMA
from userrl.errors import ConfigError, PolicyError, boundary
from userrl.openai_compat import ChatClient, OpenAIConfig

if TYPE_CHECKING:
    from userrl.config import DeployConfig

__all__ = ["OpenAIPolicyBackend", "from_deploy_config", "tool_calls_to_hermes"]

_ROLES = {"system", "user", "assistant"}


def tool_calls_to_hermes(tool_calls: list[dict[str, Any]]) -> str:
    """Native OpenAI ``tool_calls`` as Hermes ``<tool_call>`` blocks, one per call."""
    blocks = []
    for call in tool_calls:
        fn = call.get("function") or {}
        args: Any = fn.get("arguments", {})
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except ValueError:
                pass  # left as a string: the parser turns it into a format error
        payload = json.dumps({"name": fn.get("name", ""), "arguments": args}, ensure_ascii=False)
        blocks.append(f"<tool_call>\n{payload}\n</tool_call>")
    return "\n".join(blocks)


class OpenAIPolicyBackend:
    """``PolicyBackend`` that asks an API model; see the module docstring."""

    trainable = False

    def __init__(self, config: OpenAIConfig, tools: bool = False) -> None:
        self.config = config
        self.tools = tools
        self.version = 0
        self.client = ChatClient(config, error_cls=PolicyError)

    async def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        """One result per request, in order; the first failure is raised after all finish."""
        results: list[GenResult | None] = [None] * len(requests)
        errors: list[PolicyError] = []

        async def one(i: int, req: GenRequest) -> None:
            try:
                with boundary(PolicyError):
                    results[i] = await self._generate_one(req)
            except PolicyError as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            for i, req in enumerate(requests):
                tg.start_soon(one, i, req)
        if errors:
            raise errors[0]
        return [r for r in results if r is not None]

    async def _generate_one(self, req: GenRequest) -> GenResult:
        s = req.sampling
        body: dict[str, Any] = {"temperature": s.temperature, "top_p": s.top_p, "max_tokens": s.max_new_tokens}
        if s.seed is not None:
            body["seed"] = s.seed
        if self.tools:
            body["tools"] = [TOOL_SCHEMA]
        text, raw = await self.client.complete(_api_messages(req.messages), **body)
        choice = raw["choices"][0]
        calls = choice["message"].get("tool_calls") or []
        if calls:
            hermes = tool_calls_to_hermes(calls)
            text = f"{text}\n{hermes}" if text.strip() else hermes
        finish = "length" if choice.get("finish_reason") == "length" else "stop"
        return GenResult(text=text, version=self.version, finish_reason=finish)

    async def load_weights(self, path: str, version: int) -> float:
        raise PolicyError(
            f"the openai policy backend ({self.config.model}) has no weights to "
            f"load; use the hf or vllm backend for training"
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    async def __aenter__(self) -> OpenAIPolicyBackend:
        await self.client.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


def from_deploy_config(cfg: DeployConfig) -> OpenAIPolicyBackend:
    """The backend a deploy config's ``policy`` section names. ``tools`` is sent only with
    ``policy.tools`` on: servers such as ``transformers serve`` answer an empty ``content`` to a
    request with tools that the model's chat template cannot render."""
    p = cfg.policy
    if not p.base_url:
        raise ConfigError("policy.base_url is required for policy.backend: openai")
    conc = cfg.workers["policy"].concurrency if "policy" in getattr(cfg, "workers", {}) else 8
    oc = OpenAIConfig(
        base_url=p.base_url,
        model=p.model,
        api_key_env=p.api_key_env,
        temperature=p.temperature,
        max_tokens=p.max_new_tokens,
        timeout_s=p.timeout_s,
        max_retries=p.max_retries,
        concurrency=max(1, int(conc)),
        extra_body=dict(p.extra_body),
    )
    return OpenAIPolicyBackend(oc, tools=p.tools)


def _api_messages(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """Env observations may use other roles (``tool``); without tool-call ids the API only
    accepts them as user turns."""
    return [m if m.get("role") in _ROLES else {"role": "user", "content": m.get("content", "")} for m in messages]
