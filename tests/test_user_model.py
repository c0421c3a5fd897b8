"""Issue 22: the user model's data, its measurement, the user.sft settings, and identical greedy
prompts generated once (the judge calls of a group). No model is trained here (that is
``tests/test_user_model_served.py``)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import jsonschema
import pytest

from tests.openai_server import FakeOpenAIServer
from userrl.config import load_config
from userrl.envs.datasets import load_tasks
from userrl.envs.registry import user_spec
from userrl.envs.users import ScriptedBackend
from userrl.errors import ConfigError, UserMalformedError
from userrl.learner.sim_health import simulator_metrics
from userrl.learner.user_sft import (
    Example,
    collect_examples,
    decision_fields,
    decisions,
    format_measure,
    measure,
    oversample,
    reply_text,
)
from userrl.openai_compat import OpenAIConfig
from userrl.sim_users.base import UserQuery
from userrl.sim_users.openai_backend import OpenAIUserBackend
from userrl.sim_users.shared import SharedGenerations
from userrl.sim_users.stamp import recording

pytestmark = pytest.mark.anyio

CI = Path(__file__).resolve().parents[1] / "deploy" / "ci.yaml"
LLM_USER = Path(__file__).resolve().parents[1] / "deploy" / "llm-user.yaml"
#: every gym with a simulated user or judge (FunctionGym has none)
USER_GYMS = [
    "userrl/Telepathy-v0",
    "userrl/Turtle-v0",
    "userrl/Intention-v0",
    "userrl/Travel-v0",
    "userrl/Persuade-v0",
    "userrl/Search-v0",
    "userrl/Tau-v0",
]


@pytest.fixture(scope="module")
def examples() -> list[Example]:
    out, _ = anyio.run(lambda: collect_examples(USER_GYMS, "train", episodes_per_task=4, tasks_per_gym=4))
    return out


def test_every_gym_gives_examples_the_llm_can_write_and_the_gym_parses_back(examples: list[Example]) -> None:
    by_gym = Counter(e.query.env_id for e in examples)
    assert set(by_gym) == set(USER_GYMS), "every gym's user or judge was asked"
    for e in examples:
        spec = user_spec(e.query.env_id)
        obj = json.loads(e.text)
        jsonschema.validate(obj, spec.reply_schema(e.query))  # what structured output allows
        assert list(obj) == list(spec.reply_schema(e.query)["properties"]), "the schema's key order"
        assert e.text == json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
        assert decisions(e.query, spec.parse_llm(e.query, e.text)) == decisions(e.query, e.reply)
        msgs = e.messages()
        assert msgs[:-1] == spec.llm_messages(e.query) and msgs[-1] == {"role": "assistant", "content": e.text}
    keys = [json.dumps([e.query.to_dict(), e.text], sort_keys=True) for e in examples]
    assert len(keys) == len(set(keys)), "each query once"


def test_the_examples_hold_both_sides_of_each_decision(examples: list[Example]) -> None:
    """The mixed episodes put questions the user must turn down next to the expert's."""

    def seen(gym: str, name: str, field: str) -> set[str]:
        return {
            json.dumps(decisions(e.query, e.reply)[field])
            for e in examples
            if e.query.env_id == gym and e.query.name == name
        }

    assert seen("userrl/Telepathy-v0", "judge_guess", "correct") == {"true", "false"}
    assert {"Yes", "No"} <= {json.loads(v) for v in seen("userrl/Telepathy-v0", "yes_no", "answer")}
    assert "[]" in seen("userrl/Intention-v0", "clarify", "uncovered")
    assert len(seen("userrl/Intention-v0", "clarify", "uncovered")) > 2
    assert seen("userrl/Search-v0", "judge_answer", "correct") == {"true", "false"}


def test_verdict_repeats_put_the_uncommon_verdicts_in_the_sft_data_that_many_times(examples: list[Example]) -> None:
    """user.sft.verdict_repeats: a question that uncovers a detail (IntentionGym's uncommon
    verdict) appears that many times; the common verdict once; 1 leaves the data as collected."""
    intention = [e for e in examples if e.query.env_id == "userrl/Intention-v0"]
    nothing = [e for e in intention if not e.reply["uncovered"]]
    something = [e for e in intention if e.reply["uncovered"]]
    assert len(nothing) > len(something) / 4 and something, "both verdicts collected"
    assert len(nothing) > max(Counter(json.dumps(e.reply["uncovered"]) for e in something).values()), (
        "'uncover nothing' is the most common verdict (the one oversample leaves single)"
    )
    assert oversample(intention, 1) == intention
    data = oversample(intention, 3)
    assert len(data) == len(nothing) + 3 * len(something)
    count = Counter(id(e) for e in data)
    assert all(count[id(e)] == 1 for e in nothing) and all(count[id(e)] == 3 for e in something)
    assert [e for i, e in enumerate(data) if i == 0 or data[i - 1] is not e] == intention, "in the original order"
    with pytest.raises(ConfigError, match=r"user\.sft\.verdict_repeats must be >= 1"):
        oversample(intention, 0)


def test_the_intention_verdict_prompt_holds_the_words_that_ask_about_each_detail() -> None:
    """The scripted verdict turns on each detail's keywords, minus those the agent was shown:
    the LLM user's prompt lists exactly those, so a model can learn the verdict from it."""
    task = load_tasks("userrl/Intention-v0", "train")[0]
    shown_kw = task["missing_details"][0]["keywords"][0]
    history = [{"role": "user", "content": f"{task['task']} And about the {shown_kw}: no idea."}]
    q = UserQuery("userrl/Intention-v0", "respond", "clarify", {"question": "Hm?", "remaining": [0, 1]}, task, history)
    system = user_spec(q.env_id).llm_messages(q)[0]["content"]
    listed = json.loads(system[system.index("[{") : system.index("}]") + 2])
    assert [d["index"] for d in listed] == [0, 1]
    assert shown_kw not in listed[0]["asked_with"] and set(listed[0]["asked_with"]) < set(
        task["missing_details"][0]["keywords"]
    )
    assert listed[1]["asked_with"] == task["missing_details"][1]["keywords"]


def test_persuade_reply_is_written_without_the_stance_the_parser_appends() -> None:
    task = load_tasks("userrl/Persuade-v0", "train")[0]
    q = UserQuery("userrl/Persuade-v0", "respond", "react", {"argument": "It costs too much.", "stance": "Agree"}, task)
    reply = user_spec(q.env_id).scripted(q)
    text = reply_text(q, reply)
    assert text is not None and "My stance" not in json.loads(text)["reply"]
    assert user_spec(q.env_id).parse_llm(q, text)["reply"].count("My stance") == 1


def test_decision_fields_leave_out_free_text() -> None:
    assert decision_fields({"properties": {"answer": {"type": "string", "enum": ["Yes"]}}}) == ["answer"]
    schema = {"properties": {"uncovered": {"type": "array"}, "reply": {"type": "string"}, "done": {"type": "boolean"}}}
    assert decision_fields(schema) == ["uncovered", "done"]
    assert decision_fields(None) == []


class _Constant:
    """A user that always answers the same verdict."""

    def __init__(self, reply: dict[str, Any]) -> None:
        self.reply = reply

    async def ask(self, query: UserQuery) -> dict[str, Any]:
        return dict(self.reply)


class _Broken:
    async def ask(self, query: UserQuery) -> dict[str, Any]:
        raise UserMalformedError("malformed reply after 1 attempts")


async def test_measure_counts_parses_agreement_and_the_majority_floor(examples: list[Example]) -> None:
    judge = [e for e in examples if e.query.name == "judge_guess"]
    n_true = sum(e.reply["correct"] for e in judge)
    exact = await measure(ScriptedBackend(), judge, judge)
    assert exact["rows"]["overall"] == {
        "n": len(judge),
        "parsed": 1.0,
        "agree": 1.0,
        "majority": round(max(n_true, len(judge) - n_true) / len(judge), 4),
    }
    no = await measure(_Constant({"correct": False}), judge)
    assert no["rows"]["Telepathy-v0 judge_guess"]["agree"] == round((len(judge) - n_true) / len(judge), 4)
    broken = await measure(_Broken(), judge)
    assert broken["rows"]["overall"]["parsed"] == 0.0 and broken["rows"]["overall"]["agree"] == 0.0
    assert broken["failures"] == {"UserMalformedError": len(judge)}
    table = format_measure(exact, "title")
    assert table.splitlines()[0] == "title" and "overall" in table.splitlines()[-1]


# ---- identical greedy prompts generated once -------------------------------------------------------


async def test_overlapping_identical_prompts_are_generated_once() -> None:
    shared = SharedGenerations()
    calls: list[str] = []
    gate = anyio.Event()

    async def gen(text: str) -> str:
        calls.append(text)
        await gate.wait()
        return text.upper()

    got: dict[int, str] = {}
    records = []

    async def ask(i: int, key: str) -> None:
        with recording() as rec:
            got[i] = await shared.generate(key, lambda: gen(key))
        records.append(rec)

    async with anyio.create_task_group() as tg:
        for i in range(4):
            tg.start_soon(ask, i, "a")
        tg.start_soon(ask, 9, "b")
        await anyio.sleep(0.05)
        gate.set()
    assert sorted(calls) == ["a", "b"], "one generation per distinct prompt"
    assert got == {0: "A", 1: "A", 2: "A", 3: "A", 9: "B"}
    assert shared.shared == 3 and sum(r.shared for r in records) == 3
    assert await shared.generate("a", lambda: gen("a")) == "A" and calls == ["a", "b"], "kept for the TTL"


async def test_a_failed_generation_is_not_shared_and_expired_ones_are_asked_again() -> None:
    shared = SharedGenerations(ttl_s=0.0)
    n = 0

    async def flaky() -> str:
        nonlocal n
        n += 1
        if n == 1:
            raise RuntimeError("server down")
        return "ok"

    with pytest.raises(RuntimeError):
        await shared.generate("k", flaky)
    assert await shared.generate("k", flaky) == "ok" and n == 2
    await anyio.sleep(0.01)
    assert await shared.generate("k", flaky) == "ok" and n == 3, "expired after ttl_s"


def _verdict(body: dict[str, Any]) -> str:
    return '{"correct":false}'


@pytest.mark.parametrize(("temperature", "posts"), [(0.0, 1), (0.7, 4)])
async def test_a_groups_judge_calls_on_one_answer_share_a_generation_only_when_greedy(
    temperature: float, posts: int
) -> None:
    task = load_tasks("userrl/Telepathy-v0", "test")[0]
    history = [{"role": "user", "content": "Guess!"}]
    # the G episodes of a group guess the same entity: the judge's prompt holds no dialogue
    queries = [
        UserQuery("userrl/Telepathy-v0", "judge", "judge_guess", {"guess": "a cat"}, task, history * (i + 1))
        for i in range(4)
    ]
    with FakeOpenAIServer(_verdict) as srv:
        cfg = OpenAIConfig(base_url=srv.base_url, model="fake-model", api_key_env="", temperature=temperature)
        async with OpenAIUserBackend(cfg) as b:
            replies = []

            async def one(q: UserQuery) -> None:
                replies.append(await b.ask(q))

            async with anyio.create_task_group() as tg:
                for q in queries:
                    tg.start_soon(one, q)
        assert replies == [{"correct": False}] * 4
        assert len(srv.chat_requests) == posts


def test_health_metrics_count_shared_generations() -> None:
    call = {"by": "openai:u", "ms": 5.0, "attempts": 1, "malformed": 0, "empty": 0, "leaks": 0, "shared": 1}
    m = simulator_metrics([{"items": [{"meta": {"end": "terminated"}, "turns": [{"users": [call, call]}]}]}])
    assert m["sim/shared_generations"] == 2


# ---- config --------------------------------------------------------------------------------------


def test_the_llm_user_deploy_config_loads() -> None:
    cfg = load_config(LLM_USER)
    assert cfg.user.backend == "openai" and cfg.user.sft.serve and cfg.user.model == "user-model"
    assert cfg.user.sft.verdict_repeats == 3
    assert cfg.user.base_url.startswith("http://127.0.0.1:")


@pytest.mark.parametrize(
    ("sets", "match"),
    [
        (["user.sft.gyms=[userrl/Nope-v0]"], r"user\.sft\.gyms: unknown gym"),
        (["user.sft.mix=1.5"], r"user\.sft\.mix must be in \[0, 1\]"),
        (["user.sft.epochs=0"], r"user\.sft\.epochs must be >= 1"),
        (["user.sft.verdict_repeats=0"], r"user\.sft\.verdict_repeats must be >= 1"),
        (["user.sft.serve=true"], r"user\.sft\.serve: serves the user model for user\.backend: openai"),
        (["user.sft.nope=1"], r"user\.sft: unknown key"),
    ],
)
def test_user_sft_settings_are_checked_at_load(sets: list[str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(CI, sets)
