"""The openai user and policy backends against a real local HTTP server."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import anyio
import pytest

from tests.openai_server import FakeOpenAIServer
from userrl.agents.base import GenRequest, Sampling
from userrl.agents.openai_backend import OpenAIPolicyBackend, tool_calls_to_hermes
from userrl.envs.actions import parse_action
from userrl.errors import ConfigError, PolicyError, UserError
from userrl.openai_compat import ChatClient, ClientState, OpenAIConfig
from userrl.sim_users.base import UserBackend, UserQuery
from userrl.sim_users.llm_user import CORRECTION
from userrl.sim_users.openai_backend import OpenAIUserBackend

pytestmark = pytest.mark.anyio


@pytest.fixture
def openai_server() -> Iterator[FakeOpenAIServer]:
    """A started test server with the echo reply; set ``.reply`` to change it."""
    with FakeOpenAIServer() as srv:
        yield srv


class FakeSpec:
    """A judge that must answer JSON ``{"score": float}``; a user that may say anything."""

    def scripted(self, query: UserQuery) -> dict[str, Any]:
        return {"text": "scripted"}

    def llm_messages(self, query: UserQuery) -> list[dict[str, str]]:
        role = "judge" if query.kind == "judge" else "user"
        return [
            {"role": "system", "content": f"You are the {role}."},
            {"role": "user", "content": json.dumps(query.payload)},
        ]

    def parse_llm(self, query: UserQuery, text: str) -> dict[str, Any]:
        if query.kind == "respond":
            return {"text": text}
        try:
            return {"score": float(json.loads(text)["score"])}
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"judge reply must be JSON with a score, got {text!r}") from exc


def reply(body: dict[str, Any]) -> str:
    if body["messages"][0]["content"] == "You are the judge.":
        return '{"score": 1.0}'
    return "I am thinking of an animal."


JUDGE = UserQuery(env_id="test/Fake-v0", kind="judge", name="grade", payload={"answer": "cat"})
RESPOND = UserQuery(env_id="test/Fake-v0", kind="respond", name="chat", payload={"q": "hi"})


def config(srv: FakeOpenAIServer, **kw: Any) -> OpenAIConfig:
    base: dict[str, Any] = dict(
        base_url=srv.base_url,
        model="fake-model",
        api_key_env="",
        timeout_s=1.0,
        max_retries=3,
        backoff_base_s=0.01,
        backoff_max_s=0.05,
    )
    return OpenAIConfig(**{**base, **kw})


def user_backend(srv: FakeOpenAIServer, **kw: Any) -> OpenAIUserBackend:
    srv.reply = reply
    return OpenAIUserBackend(config(srv, **kw), spec_lookup=lambda env_id: FakeSpec())


async def test_user_success(openai_server: FakeOpenAIServer) -> None:
    async with user_backend(openai_server) as ub:
        assert isinstance(ub, UserBackend)
        assert await ub.ask(JUDGE) == {"score": 1.0}
        assert await ub.ask(RESPOND) == {"text": "I am thinking of an animal."}
    body = openai_server.chat_requests[0].body
    assert body is not None and body["model"] == "fake-model" and body["temperature"] == 0.0
    assert body["messages"][1]["content"] == '{"answer": "cat"}'
    assert ub.client.state is ClientState.CLOSED


@pytest.mark.parametrize("status", [408, 429, 500, 503])
async def test_transient_status_then_success(openai_server: FakeOpenAIServer, status: int) -> None:
    openai_server.fail_next(2, status=status)
    async with user_backend(openai_server) as ub:
        assert await ub.ask(JUDGE) == {"score": 1.0}
    assert [r.fault for r in openai_server.chat_requests] == ["status", "status", None]


async def test_retry_after_honoured(openai_server: FakeOpenAIServer) -> None:
    openai_server.fail_next(1, status=429, retry_after=0.3)
    async with user_backend(openai_server, backoff_max_s=1.0) as ub:
        t0 = time.monotonic()
        assert await ub.ask(JUDGE) == {"score": 1.0}
        assert time.monotonic() - t0 >= 0.3


async def test_retry_after_capped(openai_server: FakeOpenAIServer) -> None:
    openai_server.fail_next(1, status=429, retry_after=30)
    async with user_backend(openai_server, backoff_max_s=0.1) as ub:
        t0 = time.monotonic()
        assert await ub.ask(JUDGE) == {"score": 1.0}
        assert time.monotonic() - t0 < 20  # the server asked for 30 s: capped means well under that


@pytest.mark.parametrize("fault", ["hang", "drop", "bad_json"])
async def test_timeout_connection_and_bad_body_then_success(openai_server: FakeOpenAIServer, fault: str) -> None:
    getattr(openai_server, f"{fault}_next")()
    async with user_backend(openai_server, timeout_s=0.3) as ub:
        assert await ub.ask(JUDGE) == {"score": 1.0}
    assert [r.fault for r in openai_server.chat_requests] == [fault, None]


async def test_persistent_500_is_transient_user_error(openai_server: FakeOpenAIServer) -> None:
    openai_server.fail_next(100, status=500)
    async with user_backend(openai_server, max_retries=2) as ub:
        with pytest.raises(UserError, match="gave up after 3 attempts") as info:
            await ub.ask(JUDGE)
    assert info.value.transient is True
    assert len(openai_server.chat_requests) == 3


@pytest.mark.parametrize("status", [400, 401, 404])
async def test_client_error_fails_at_once(openai_server: FakeOpenAIServer, status: int) -> None:
    openai_server.fail_next(5, status=status)
    async with user_backend(openai_server) as ub:
        with pytest.raises(UserError, match=f"HTTP {status}") as info:
            await ub.ask(JUDGE)
    assert info.value.transient is False
    assert len(openai_server.chat_requests) == 1


async def test_malformed_judge_is_reasked(openai_server: FakeOpenAIServer) -> None:
    openai_server.content_next("The answer looks right to me!")
    async with user_backend(openai_server) as ub:
        assert await ub.ask(JUDGE) == {"score": 1.0}
    first, second = (r.body for r in openai_server.chat_requests)
    assert first is not None and second is not None
    assert second["messages"][:2] == first["messages"]
    assert second["messages"][2] == {"role": "assistant", "content": "The answer looks right to me!"}
    assert second["messages"][3]["role"] == "user"
    assert second["messages"][3]["content"].startswith(CORRECTION.split("(")[0])


async def test_malformed_forever_is_user_error(openai_server: FakeOpenAIServer) -> None:
    openai_server.content_next("no JSON here", n=10)
    async with user_backend(openai_server) as ub:
        with pytest.raises(UserError, match="malformed reply after 3 attempts") as info:
            await ub.ask(JUDGE)
    assert info.value.transient is False
    assert len(openai_server.chat_requests) == 3


async def test_missing_choices_is_clear_error(openai_server: FakeOpenAIServer) -> None:
    async with ChatClient(config(openai_server), error_cls=UserError) as client:
        openai_server.reply = lambda body: {"role": "assistant"}
        with pytest.raises(UserError, match="no text content"):
            await client.complete([{"role": "user", "content": "hi"}])
    assert len(openai_server.chat_requests) == 1


async def test_concurrency_limit(openai_server: FakeOpenAIServer) -> None:
    openai_server.delay_s = 0.1
    results: list[dict[str, Any]] = []
    async with user_backend(openai_server, concurrency=2) as ub:

        async def one(i: int) -> None:  # distinct prompts: identical greedy ones are sent once
            results.append(await ub.ask(replace(RESPOND, payload={"q": f"hi {i}"})))

        async with anyio.create_task_group() as tg:
            for i in range(6):
                tg.start_soon(one, i)
    assert len(results) == 6
    assert openai_server.max_in_flight == 2


async def test_api_key_from_environment(openai_server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USERRL_TEST_KEY", "sk-test")
    async with user_backend(openai_server, api_key_env="USERRL_TEST_KEY") as ub:
        await ub.ask(RESPOND)
    assert openai_server.chat_requests[0].headers["Authorization"] == "Bearer sk-test"


async def test_closed_client_refuses(openai_server: FakeOpenAIServer) -> None:
    client = ChatClient(config(openai_server))
    await client.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await client.complete([{"role": "user", "content": "hi"}])


@pytest.mark.parametrize(
    "field,value",
    [
        ("timeout_s", 0),
        ("concurrency", 0),
        ("max_retries", -1),
        ("base_url", "localhost:8000"),
        ("backoff_max_s", 0.001),
    ],
)
def test_config_validation(field: str, value: Any) -> None:
    kw: dict[str, Any] = dict(base_url="http://x/v1", model="m", backoff_base_s=0.5)
    with pytest.raises(ConfigError, match=field):
        OpenAIConfig(**{**kw, field: value})


# ---- policy backend --------------------------------------------------------------------------


def policy_request(text: str, **sampling: Any) -> GenRequest:
    return GenRequest(
        episode_id="e1",
        env_id="test/Fake-v0",
        messages=[
            {"role": "system", "content": "Be helpful."},
            {"role": "user", "content": text},
            {"role": "tool", "content": "observation"},
        ],
        sampling=Sampling(**sampling),
    )


async def test_policy_text(openai_server: FakeOpenAIServer) -> None:
    openai_server.reply = lambda body: "[answer] 42"
    async with OpenAIPolicyBackend(config(openai_server), tools=False) as pb:
        assert pb.trainable is False
        [res] = await pb.generate([policy_request("q", temperature=0.7, max_new_tokens=32, seed=3)])
    assert res.text == "[answer] 42" and res.token_ids == [] and res.version == 0
    assert res.finish_reason == "stop"
    body = openai_server.chat_requests[0].body
    assert body is not None and "tools" not in body
    assert (body["temperature"], body["max_tokens"], body["seed"]) == (0.7, 32, 3)
    assert body["messages"][2] == {"role": "user", "content": "observation"}


async def test_policy_native_tool_calls(openai_server: FakeOpenAIServer) -> None:
    def tool_reply(body: dict[str, Any]) -> dict[str, Any]:
        args = json.dumps({"choice": "answer", "content": body["messages"][1]["content"]})
        return {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "interact_with_env", "arguments": args}}
            ],
        }

    openai_server.reply = tool_reply
    async with OpenAIPolicyBackend(config(openai_server), tools=True) as pb:
        results = await pb.generate([policy_request("cat"), policy_request("dog")])
    texts = [r.text for r in results]
    for text, animal in zip(texts, ["cat", "dog"], strict=True):
        assert text.startswith("<tool_call>\n") and text.endswith("\n</tool_call>")
        inner = json.loads(text.removeprefix("<tool_call>").removesuffix("</tool_call>"))
        assert inner == {"name": "interact_with_env", "arguments": {"choice": "answer", "content": animal}}
        action = parse_action(text)
        assert (action.choice, action.content, action.via_tool) == ("answer", animal, True)
    tools = openai_server.chat_requests[0].body["tools"]  # type: ignore[index]
    assert tools[0]["function"]["name"] == "interact_with_env"


def test_tool_calls_bad_arguments_stay_text() -> None:
    text = tool_calls_to_hermes([{"function": {"name": "interact_with_env", "arguments": "{not json"}}])
    assert json.loads(text.split("\n")[1]) == {"name": "interact_with_env", "arguments": "{not json"}
    assert parse_action(text).choice == "invalid"


async def test_policy_errors_and_weights(openai_server: FakeOpenAIServer) -> None:
    openai_server.fail_next(1, status=400)
    async with OpenAIPolicyBackend(config(openai_server)) as pb:
        with pytest.raises(PolicyError, match="HTTP 400"):
            await pb.generate([policy_request("q")])
        with pytest.raises(PolicyError, match="no weights"):
            await pb.load_weights("/tmp/x", 1)


def test_server_lists_models(openai_server: FakeOpenAIServer) -> None:
    import httpx

    data = httpx.get(f"{openai_server.base_url}/models").json()
    assert data["data"][0]["id"] == "fake-model"


# ---- real servers: settings from the deploy config, error classification -----------------------


def deploy_config(srv: FakeOpenAIServer, *overrides: str) -> Any:
    from userrl.config import load_config

    return load_config(
        None, ["policy.backend=openai", f"policy.base_url={srv.base_url}", "policy.model=fake-model", *overrides]
    )


@pytest.mark.parametrize("tools", [False, True])
async def test_policy_sends_tools_only_when_configured(
    openai_server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch, tools: bool
) -> None:
    from userrl.agents.worker import make_policy_backend

    monkeypatch.setenv("MY_POLICY_KEY", "sk-test")
    cfg = deploy_config(
        openai_server,
        f"policy.tools={str(tools).lower()}",
        "policy.api_key_env=MY_POLICY_KEY",
        "policy.timeout_s=7",
        "policy.max_retries=1",
        "policy.extra_body={chat_template_kwargs: {enable_thinking: false}, top_k: 5}",
    )
    backend = make_policy_backend(cfg)
    assert isinstance(backend, OpenAIPolicyBackend)
    assert (backend.config.timeout_s, backend.config.max_retries) == (7.0, 1)
    async with backend as pb:
        [res] = await pb.generate([policy_request("q", temperature=0.5)])
    assert res.text == "echo: observation"
    req = openai_server.chat_requests[0]
    assert req.body is not None and ("tools" in req.body) is tools
    assert req.body["chat_template_kwargs"] == {"enable_thinking": False} and req.body["top_k"] == 5
    assert req.body["temperature"] == 0.5  # the request's sampling wins over extra fields
    assert req.headers.get("Authorization") == "Bearer sk-test"


async def test_404_without_v1_says_to_add_it(openai_server: FakeOpenAIServer) -> None:
    root = openai_server.base_url.removesuffix("/v1")
    async with OpenAIPolicyBackend(config(openai_server, base_url=root)) as pb:
        with pytest.raises(PolicyError) as info:
            await pb.generate([policy_request("q")])
    msg = str(info.value)
    assert "HTTP 404" in msg and f"try {root}/v1" in msg and "not found" in msg
    assert info.value.transient is False and len(openai_server.requests) == 1


async def test_404_with_v1_has_no_v1_hint(openai_server: FakeOpenAIServer) -> None:
    openai_server.fail_next(1, status=404, message="The model `fake-model` does not exist.")
    async with OpenAIPolicyBackend(config(openai_server)) as pb:
        with pytest.raises(PolicyError) as info:
            await pb.generate([policy_request("q")])
    assert "/v1)" not in str(info.value) and "does not exist" in str(info.value)
    assert "is the model name 'fake-model' right" in str(info.value)


async def test_500_naming_the_model_is_not_retried(openai_server: FakeOpenAIServer) -> None:
    """A server that cannot load the model answers 500 naming it: fail at once with its message
    (it used to be retried as temporary for half a minute)."""
    openai_server.fail_next(
        5, status=500, message="fake-model is not a local folder and is not a valid model identifier"
    )
    async with OpenAIPolicyBackend(config(openai_server, max_retries=4, backoff_base_s=1.0, backoff_max_s=2.0)) as pb:
        t0 = time.monotonic()
        with pytest.raises(PolicyError) as info:
            await pb.generate([policy_request("q")])
    assert time.monotonic() - t0 < 1.0 and len(openai_server.chat_requests) == 1
    assert info.value.transient is False and "HTTP 500" in str(info.value)
    assert "not a valid model identifier" in str(info.value)


async def test_500_naming_a_longer_word_is_retried(openai_server: FakeOpenAIServer) -> None:
    openai_server.fail_next(1, status=500, message="fake-model-loader crashed")
    async with OpenAIPolicyBackend(config(openai_server)) as pb:
        [res] = await pb.generate([policy_request("q")])
    assert res.text == "echo: observation" and len(openai_server.chat_requests) == 2


async def test_server_down_gives_up_with_connect_error() -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = OpenAIConfig(
        base_url=f"http://127.0.0.1:{port}/v1",
        model="m",
        api_key_env="",
        max_retries=2,
        backoff_base_s=0.01,
        backoff_max_s=0.02,
    )
    async with OpenAIPolicyBackend(cfg) as pb:
        with pytest.raises(PolicyError, match="gave up after 3 attempts: connection error") as info:
            await pb.generate([policy_request("q")])
    assert info.value.transient is True


async def test_500_for_a_model_the_server_does_not_list_fails_at_once(openai_server: FakeOpenAIServer) -> None:
    """transformers serve answers a bare 500 for a model it cannot load and lists only loaded
    models: before any success, a 500 for an unlisted model is a wrong name, not a hiccup."""
    openai_server.model = "served-model"
    openai_server.fail_next(5, status=500, message="Internal Server Error")
    async with OpenAIPolicyBackend(
        config(openai_server, model="wrong-model", backoff_base_s=1.0, backoff_max_s=2.0)
    ) as pb:
        t0 = time.monotonic()
        with pytest.raises(PolicyError) as info:
            await pb.generate([policy_request("q")])
    assert time.monotonic() - t0 < 1.0 and len(openai_server.chat_requests) == 1
    msg = str(info.value)
    assert info.value.transient is False and "'wrong-model', which the server does not list" in msg
    assert "served: ['served-model']" in msg and "Internal Server Error" in msg


async def test_500_after_a_success_is_retried(openai_server: FakeOpenAIServer) -> None:
    openai_server.model = "served-model"
    async with OpenAIPolicyBackend(config(openai_server, model="other-name")) as pb:
        await pb.generate([policy_request("q")])
        openai_server.fail_next(2, status=500, message="Internal Server Error")
        [res] = await pb.generate([policy_request("q")])
    assert res.text == "echo: observation" and len(openai_server.chat_requests) == 4
