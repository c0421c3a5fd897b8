"""Structured output of the ``openai`` user backend, against a real local HTTP server.

Every gym's reply schema (``UserSpec.reply_schema``) is checked three ways while its scripted
expert plays episodes with an LLM user: the schema stays within what OpenAI's strict mode and
vLLM's grammars both take, the server is sent it with every query, and any reply the schema
allows (what a constrained decoder may produce) is one the gym's ``parse_llm`` accepts. Then the
``structured_output`` setting: ``auto`` (sent; asked again without it where the server refuses
it), ``always`` (a refusal fails the query) and ``never``.
"""

from __future__ import annotations

import json
from itertools import count
from typing import Any

import jsonschema
import pytest
from structlog.testing import capture_logs

from tests.openai_server import FakeOpenAIServer
from userrl.config import load_config
from userrl.envs.datasets import load_tasks
from userrl.envs.episode import play_episode
from userrl.envs.registry import get_env_class, list_envs, user_spec
from userrl.envs.users import InProcessUser
from userrl.errors import ConfigError, UserError
from userrl.openai_compat import OpenAIConfig
from userrl.sim_users.base import UserQuery
from userrl.sim_users.openai_backend import OpenAIUserBackend
from userrl.sim_users.worker import make_user_backend

pytestmark = pytest.mark.anyio

#: the keywords OpenAI's strict structured outputs and vLLM's xgrammar both accept (reply_object)
STRICT_KEYWORDS = {"type", "enum", "properties", "required", "additionalProperties", "items", "minItems", "maxItems"}


def check_strict(schema: dict[str, Any], path: str = "$") -> None:
    assert set(schema) <= STRICT_KEYWORDS, f"{path}: keywords {sorted(set(schema) - STRICT_KEYWORDS)}"
    if schema.get("type") == "object":
        assert schema["additionalProperties"] is False, path
        assert sorted(schema["required"]) == sorted(schema["properties"]), f"{path}: every property required"
        for key, sub in schema["properties"].items():
            check_strict(sub, f"{path}.{key}")
    if schema.get("type") == "array":
        check_strict(schema["items"], f"{path}[]")


def instance(schema: dict[str, Any], last: bool) -> Any:
    """A value the schema allows: the first or the last choice everywhere (fewest or most items)."""
    if "enum" in schema:
        return schema["enum"][-1 if last else 0]
    kind = schema["type"]
    if kind == "object":
        return {k: instance(v, last) for k, v in schema["properties"].items()}
    if kind == "array":
        n = schema.get("maxItems", schema.get("minItems", 0) + 2) if last else schema.get("minItems", 0)
        return [instance(schema["items"], last) for _ in range(n)]
    return {"boolean": last, "string": "I see.", "integer": 0, "number": 0}[kind]


class SchemaLLM:
    """``reply(body)`` for the test server: a compact JSON value of the request's schema,
    alternating the first and the last choices (two constrained decoders' extremes)."""

    def __init__(self) -> None:
        self.n = count()
        self.schemas: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, body: dict[str, Any]) -> str:
        fmt = body["response_format"]
        assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
        name, schema = fmt["json_schema"]["name"], fmt["json_schema"]["schema"]
        self.schemas.append((name, schema))
        value = instance(schema, last=next(self.n) % 2 == 1)
        jsonschema.validate(value, schema)  # the instance is one the schema allows
        return json.dumps(value, separators=(",", ":"))


def config(srv: FakeOpenAIServer, **kw: Any) -> OpenAIConfig:
    base: dict[str, Any] = dict(base_url=srv.base_url, model="fake-model", api_key_env="", timeout_s=5.0, max_retries=0)
    return OpenAIConfig(**{**base, **kw})


@pytest.mark.parametrize("env_id", [e for e in list_envs() if e != "userrl/Function-v0"])
async def test_every_gym_schema_is_strict_sent_and_parsed(env_id: str) -> None:
    llm = SchemaLLM()
    cls = get_env_class(env_id)
    with FakeOpenAIServer(llm) as srv:
        # share_ttl_s=0: every query its own request (an expert repeats its questions across tasks)
        async with OpenAIUserBackend(config(srv), max_reasks=0, share_ttl_s=0) as backend:
            user = InProcessUser(backend)
            for task in load_tasks(env_id, "test")[:3]:
                # max_reasks=0: a reply the gym cannot parse would fail the episode here
                await play_episode(cls(max_turns=6), task, cls.expert_action, user=user)
        assert user.calls > 0 and len(srv.chat_requests) == user.calls, "one request per query, none re-asked"
    prefix = env_id.split("/")[-1] + "_"
    for name, schema in llm.schemas:
        assert name.startswith(prefix), name
        jsonschema.Draft202012Validator.check_schema(schema)
        check_strict(schema)


def test_function_gym_has_no_user_schema() -> None:
    """FunctionGym has no simulated user: its queries would go without a schema."""
    assert not hasattr(user_spec("userrl/Function-v0"), "reply_schema")


TASK = load_tasks("userrl/Telepathy-v0", "test")[0]
JUDGE = UserQuery("userrl/Telepathy-v0", "judge", "judge_guess", {"guess": "a cat"}, TASK)
YES_NO = UserQuery("userrl/Telepathy-v0", "respond", "yes_no", {"question": "Is it alive?"}, TASK)


def verdict(body: dict[str, Any]) -> str:
    return '{"answer":"No"}' if "Question:" in body["messages"][-1]["content"] else '{"correct":true}'


async def test_auto_sends_the_gym_schema() -> None:
    with FakeOpenAIServer(verdict) as srv:
        async with OpenAIUserBackend(config(srv)) as ub:
            assert await ub.ask(JUDGE) == {"correct": True}
        body = srv.chat_requests[0].body
    assert body is not None
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {
            "name": "Telepathy-v0_judge_guess",
            "schema": user_spec(JUDGE.env_id).reply_schema(JUDGE),
            "strict": True,
        },
    }


async def test_never_sends_no_schema() -> None:
    with FakeOpenAIServer(verdict) as srv:
        async with OpenAIUserBackend(config(srv), structured_output="never") as ub:
            assert await ub.ask(JUDGE) == {"correct": True}
        body = srv.chat_requests[0].body
    assert body is not None and "response_format" not in body


VLLM_REFUSAL = 'Failed to transform json schema into a grammar: Unsupported type "bogus"'


async def test_auto_asks_again_without_a_refused_schema() -> None:
    with FakeOpenAIServer(verdict) as srv:
        srv.fail_next(1, status=400, message=VLLM_REFUSAL)
        async with OpenAIUserBackend(config(srv)) as ub:
            with capture_logs() as logs:
                assert await ub.ask(JUDGE) == {"correct": True}
                assert await ub.ask(JUDGE) == {"correct": True}  # the same kind again: no schema
            assert await ub.ask(YES_NO) == {"answer": "No"}  # another schema is still sent
        bodies = [r.body or {} for r in srv.chat_requests]
    assert ["response_format" in b for b in bodies] == [True, False, False, True]
    refused = [e for e in logs if e["event"] == "user.structured_output_refused"]
    assert len(refused) == 1 and refused[0]["schema"] == "Telepathy-v0_judge_guess"


async def test_always_fails_a_refused_schema_at_once() -> None:
    with FakeOpenAIServer(verdict) as srv:
        srv.fail_next(1, status=400, message=VLLM_REFUSAL)
        async with OpenAIUserBackend(config(srv), structured_output="always") as ub:
            with pytest.raises(UserError, match="HTTP 400.*json schema") as info:
                await ub.ask(JUDGE)
        assert len(srv.chat_requests) == 1
    assert info.value.transient is False


async def test_auto_does_not_hide_other_client_errors() -> None:
    with FakeOpenAIServer(verdict) as srv:
        srv.fail_next(1, status=400, message="max_tokens is too large: 9999")
        async with OpenAIUserBackend(config(srv)) as ub:
            with pytest.raises(UserError, match="max_tokens is too large"):
                await ub.ask(JUDGE)
        assert len(srv.chat_requests) == 1


async def test_auto_accepts_a_reply_cut_by_the_schema_only_if_it_parses() -> None:
    """A schema does not make ``parse_llm`` redundant: a reply it allows that the gym cannot use
    (here a JSON cut at max_tokens) is still re-asked."""
    with FakeOpenAIServer(verdict) as srv:
        srv.content_next('{"correct":')
        async with OpenAIUserBackend(config(srv)) as ub:
            assert await ub.ask(JUDGE) == {"correct": True}
        assert len(srv.chat_requests) == 2


def test_structured_output_setting_from_the_deploy_config() -> None:
    def backend(*sets: str) -> OpenAIUserBackend:
        cfg = load_config(None, ["user.backend=openai", "user.base_url=http://h:1/v1", "user.model=m", *sets])
        b = make_user_backend("openai", cfg)
        assert isinstance(b, OpenAIUserBackend)
        return b

    assert backend().structured_output == "auto"
    assert backend("user.structured_output=never").structured_output == "never"
    with pytest.raises(ConfigError, match="structured_output"):
        backend("user.structured_output=off")  # YAML's false: not a value, to keep it unambiguous
    with pytest.raises(ConfigError, match="structured_output"):
        OpenAIUserBackend(OpenAIConfig(base_url="http://h:1/v1", model="m"), structured_output="sometimes")  # type: ignore[arg-type]
