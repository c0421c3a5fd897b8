"""The four UserRL gyms: env checks, reward rules on hand-written transcripts, determinism."""

from __future__ import annotations

import asyncio
from typing import Any

import gymnasium
import pytest

from userrl.envs.actions import Action, parse_prefixed
from userrl.envs.base import Env, StepResult
from userrl.envs.check import check_env, check_tasks
from userrl.envs.datasets import load_tasks
from userrl.envs.registry import get_env_class, list_envs, make
from userrl.envs.users import InProcessUser
from userrl.errors import UnknownEnvError
from userrl.sim_users.base import UserQuery

GYMS = ["userrl/Function-v0", "userrl/Telepathy-v0", "userrl/Turtle-v0", "userrl/Intention-v0"]


def play(env_id: str, task: dict[str, Any], actions: list[str], seed: int = 0, **env_kwargs: Any) -> list[StepResult]:
    """Run ``actions`` against ``task`` with the scripted user; stops at the episode's end."""

    async def run() -> list[StepResult]:
        env = make(env_id, **env_kwargs)
        state, _, _ = await env.reset(task, seed)
        out = []
        for text in actions:
            res = await env.step(state, parse_prefixed(text), InProcessUser())
            out.append(res)
            state = res.state
            if res.terminated or res.truncated:
                break
        return out

    return asyncio.run(run())


def rewards(results: list[StepResult]) -> list[float]:
    return [r.reward for r in results]


# -- registry and env checks -------------------------------------------------------------------
def test_registry_lists_the_four_gyms() -> None:
    assert set(GYMS) <= set(list_envs())
    assert make("userrl/Turtle-v0", max_turns=3).max_turns == 3


def test_unknown_env_id_lists_known_ids() -> None:
    with pytest.raises(UnknownEnvError, match="userrl/Telepathy-v0"):
        get_env_class("userrl/Nope-v0")


@pytest.mark.parametrize("env_id", GYMS)
def test_check_env_passes(env_id: str) -> None:
    check_env(env_id)


@pytest.mark.parametrize("env_id", GYMS)
def test_expert_scores_max_on_train_split(env_id: str) -> None:
    check_tasks(env_id, load_tasks(env_id, "train"))


@pytest.mark.parametrize("env_id", GYMS)
def test_shared_rules_format_error_finish_and_turn_cap(env_id: str) -> None:
    task = load_tasks(env_id, "test")[0]
    bad = play(env_id, task, ["no prefix here"])[0]
    assert (bad.reward, bad.terminated, bad.truncated) == (0.0, False, False)
    assert "format_error" in bad.info
    fin = play(env_id, task, ["[finish]"])[0]
    assert (fin.reward, fin.terminated) == (0.0, True)
    capped = play(env_id, task, ["oops", "oops", "oops"], max_turns=2)
    assert len(capped) == 2 and capped[-1].truncated and not capped[-1].terminated


@pytest.mark.parametrize("env_id", GYMS)
def test_gymnasium_make_and_custom_user_and_parser(env_id: str) -> None:
    import userrl.envs.gymnasium_adapter  # noqa: F401

    calls: list[UserQuery] = []

    class Spy(InProcessUser):
        async def ask(self, query: UserQuery) -> dict[str, Any]:
            calls.append(query)
            return await super().ask(query)

    def shouting_parser(text: str) -> Action:
        return parse_prefixed(text.lower())

    env = gymnasium.make(env_id, user=Spy(), split="train", parse_action=shouting_parser)
    try:
        task = load_tasks(env_id, "train")[2]
        obs, info = env.reset(seed=3, options={"task_id": task["id"]})
        assert info["task_id"] == task["id"] and isinstance(obs, str)
        cls = get_env_class(env_id)
        messages = [{"role": "user", "content": obs}]
        total, done = 0.0, False
        while not done:
            text = cls.expert_action(task, messages)
            obs, r, term, trunc, _ = env.step(text.upper() if text.startswith("[") else text)
            messages += [{"role": "assistant", "content": text}, {"role": "user", "content": obs}]
            total, done = total + r, term or trunc
        assert total == pytest.approx(cls.max_return(task))
        assert all(q.env_id == env_id for q in calls)
        assert bool(calls) == (env_id != "userrl/Function-v0")
    finally:
        env.close()


# -- FunctionGym --------------------------------------------------------------------------------
FN = {"id": "t-fn", "rule": "a * b + c - d", "test_case": [2, 3, 4, 5], "expected_result": 5.0}


def test_function_right_answer_after_search_and_probe() -> None:
    res = play("userrl/Function-v0", FN, ["[search] test", "[action] 1 1 1 1", "[answer] 5"])
    assert rewards(res) == [0.0, 0.0, 1.0] and res[-1].terminated
    assert "2 3 4 5" in res[0].observation and res[1].observation == "f(1, 1, 1, 1) = 1.0"


def test_function_answers_within_1e6_and_only_numbers() -> None:
    res = play(
        "userrl/Function-v0",
        FN,
        ["[answer] 5.001", "[answer] The result is 5", "[answer] 5 or 6", "[answer] 5.0000004"],
    )
    assert rewards(res) == [0.0, 0.0, 0.0, 1.0] and res[-1].terminated
    assert all("single number" in r.observation for r in res[1:3])
    third = {"id": "t3", "rule": "a / b", "test_case": [1, 3, 1, 1]}  # 0.333333...
    assert rewards(play("userrl/Function-v0", third, ["[answer] 0.333", "[answer] 0.3333"])) == [0.0, 1.0]
    assert rewards(play("userrl/Function-v0", third, ["[answer] 0.33333333"])) == [1.0]


def test_function_third_wrong_answer_ends_the_episode_unless_unlimited() -> None:
    wrong = ["[answer] 1", "[answer] 2", "[answer] 3", "[answer] 5"]
    res = play("userrl/Function-v0", FN, wrong)
    assert len(res) == 3 and res[-1].terminated and "last answer" in res[-1].observation
    assert rewards(play("userrl/Function-v0", FN, wrong, max_answers=None)) == [0.0, 0.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="max_answers"):
        make("userrl/Function-v0", max_answers=0)


def test_function_refusals_bad_inputs_and_decimal_probes() -> None:
    res = play(
        "userrl/Function-v0",
        FN,
        [
            "[action] 2 3 4 5",
            "[action] 1 2 3",
            "[search] rule",
            "[answer] five",
            "[action] 2.0 3 4 5.0",
            "[action] 1.5 2 3 4",
        ],
    )
    assert rewards(res) == [0.0] * 6 and not any(r.terminated for r in res)
    assert "test case" in res[0].observation and "four numbers" in res[1].observation
    assert "test case" in res[4].observation and res[5].observation == "f(1.5, 2, 3, 4) = 2.0"
    zero = {"id": "z", "rule": "a / (c - d)", "test_case": [1, 1, 2, 1]}
    assert "undefined" in play("userrl/Function-v0", zero, ["[action] 1 2 3 3"])[0].observation


def test_function_rejects_unsafe_rules() -> None:
    cls = get_env_class("userrl/Function-v0")
    with pytest.raises(ValueError):
        cls.validate_task({"id": "x", "rule": "__import__('os')", "test_case": [1, 2, 3, 4]})  # type: ignore[attr-defined]


# -- TelepathyGym -------------------------------------------------------------------------------
TEL = {
    "id": "t-tel",
    "title": "Lighthouse",
    "category": "building",
    "synonyms": ["light house"],
    "description": "I am thinking of a building.",
    "tags": ["sea", "coast", "tower", "ships"],
    "attributes": {"man_made": True, "alive": False, "big": True, "place": True},
}


def test_telepathy_yes_no_maybe_answers() -> None:
    res = play(
        "userrl/Telepathy-v0",
        TEL,
        [
            "[action] Is it near the sea?",
            "[action] Is it alive?",
            "[action] Is it red?",
            "[action] Is it a person?",
            "[action] Is it man-made and bigger than a car?",
        ],
    )
    assert [r.observation for r in res] == ["Yes.", "No.", "No.", "Maybe.", "Yes."]
    assert rewards(res) == [0.0] * 5


def test_telepathy_guesses() -> None:
    res = play(
        "userrl/Telepathy-v0",
        TEL,
        [
            "[answer] a castle",
            "[answer] lighthouse or castle",
            "[answer] castle lighthouse windmill",
            "[answer] Eiffel Tower, Lighthouse",
            "[answer] I think it is a light house",
        ],
    )
    assert rewards(res) == [0.0, 0.0, 0.0, 0.0, 1.0] and res[-1].terminated
    assert "Lighthouse" not in "".join(r.observation for r in res[:4])
    assert rewards(play("userrl/Telepathy-v0", TEL, ["[answer] The lighthouse building"])) == [1.0]


# -- TurtleGym ----------------------------------------------------------------------------------
TURTLE = {
    "id": "t-tur",
    "title": "Dry",
    "surface": "A man dived into a pool and came out dry.",
    "bottom": "The pool was empty; he was a workman fixing its tiles.",
    "key_points": [
        {"statement": "The pool was empty.", "weight": 0.6, "keywords": [["empty", "drained"]]},
        {
            "statement": "He was a workman repairing tiles.",
            "weight": 0.4,
            "keywords": [["workman", "worker"], ["tile", "tiles"]],
        },
    ],
    "facts": [{"question": "Was there water?", "answer": "No", "keywords": [["water"]]}],
}


def test_turtle_partial_then_full_answer_gains_and_shows_covered_points() -> None:
    res = play(
        "userrl/Turtle-v0",
        TURTLE,
        [
            "[answer] The pool had been drained and was completely empty.",  # 0.6
            "[answer] A worker was repairing the tiles there.",  # 0.4 < best: no gain
            "[answer] The pool was empty and a worker was fixing tiles.",
        ],
    )  # 1.0
    assert rewards(res) == [0.6, 0.0, 0.4]
    assert [r.info["score"] for r in res] == [0.6, 0.4, 1.0] and res[-1].terminated
    assert res[1].info["judgments"] == [0.0, 1.0]
    # UserRL shows the covered checklist points, not a number
    assert "The pool was empty: Covered" in res[0].observation
    assert "workman" not in res[0].observation and "0.6" not in res[0].observation
    assert "of the 2" not in res[0].observation and "partly" not in res[0].observation  # nothing on the rest
    assert "You uncovered it!" in res[2].observation
    assert play("userrl/Turtle-v0", TURTLE, ["[answer] A ghost of a tiger dreamed it."])[0].observation == (
        "Your answer does not effectively cover any evaluation points."
    )


def test_turtle_threshold_is_1_and_yes_no() -> None:
    res = play(
        "userrl/Turtle-v0",
        TURTLE,
        [
            "[action] Was there water in it?",
            "[action] Was the pool empty?",
            "[action] Was he a ghost?",
            "[answer] The pool was empty, drained of all water.",
        ],
    )
    assert [r.observation for r in res[:3]] == ["No.", "Yes.", "No."]
    assert res[3].reward == 0.6 and not res[3].terminated
    nearly = {
        **TURTLE,
        "key_points": [{**TURTLE["key_points"][0], "weight": 0.95}, {**TURTLE["key_points"][1], "weight": 0.05}],
    }
    story = ["[answer] The pool was empty, drained of all water."]
    assert [(r.reward, r.terminated) for r in play("userrl/Turtle-v0", nearly, story)] == [(0.95, False)]
    lenient = play("userrl/Turtle-v0", nearly, story, success_threshold=0.9)
    assert lenient[0].terminated


def test_turtle_judge_rejects_surface_echo_keyword_lists_and_single_words() -> None:
    res = play(
        "userrl/Turtle-v0",
        TURTLE,
        [
            "[answer] A man dived into a pool and came out dry.",
            "[answer] empty",
            "[answer] empty workman tiles drained worker tile money wife ghost car dog rain snow",
            "[answer] The pool was empty. The pool was full. He was a ghost, a fish, a bird, a "
            "dancer, a singer, a pilot, a doctor.",
        ],
    )
    assert rewards(res) == [0.0] * 4


# -- IntentionGym -------------------------------------------------------------------------------
INT = {
    "id": "t-int",
    "task": "Plan my trip.",
    "missing_details": [
        {"description": "Budget", "importance": 3, "keywords": ["budget", "cost"], "answer": "cheap"},
        {"description": "Dates", "importance": 2, "keywords": ["when", "dates"], "answer": "May"},
        {"description": "Food", "importance": 1, "keywords": ["food", "eat"], "answer": "vegan"},
    ],
}


def test_intention_focused_questions_score_by_importance() -> None:
    res = play(
        "userrl/Intention-v0",
        INT,
        ["[action] What's your budget?", "[action] When do you travel?", "[action] What do you like to eat?"],
    )
    assert rewards(res) == [1.0, 0.7, 0.4] and res[-1].terminated
    assert res[0].observation == "Budget: cheap." and "May" not in res[0].observation
    assert get_env_class("userrl/Intention-v0").max_score(INT) == 2.1


def test_intention_broad_repeated_and_irrelevant_questions() -> None:
    res = play(
        "userrl/Intention-v0",
        INT,
        [
            "[action] What budget and dates?",
            "[action] Budget again?",
            "[action] Any pets?",
            "[answer] Here is your plan.",
        ],
    )
    assert rewards(res) == [0.8, 0.0, 0.0, 0.0]
    assert res[1].observation.startswith("As I said") and not res[-1].terminated
    # a question about every detail at once is a keyword list: it uncovers nothing
    three = play("userrl/Intention-v0", INT, ["[action] Budget, dates and food?"])
    assert three[0].reward == 0.0 and not three[0].terminated
    assert "one thing at a time" in three[0].observation


def test_intention_judge_ignores_shown_words_and_long_lists() -> None:
    task = {**INT, "task": "Plan my trip; what will it cost?"}  # the request says "cost"
    res = play("userrl/Intention-v0", task, ["[action] What will it cost?", "[action] What is your budget?"])
    assert rewards(res) == [0.0, 1.0]
    dump = " ".join(f"word{i}" for i in range(20)) + " budget?"
    assert rewards(play("userrl/Intention-v0", INT, [f"[action] {dump}"])) == [0.0]
    # a user reply's words are shown too: echoing "Budget: cheap." asks about nothing new
    echo = play("userrl/Intention-v0", INT, ["[action] What's your budget?", "[action] Budget: cheap. Food?"])
    assert rewards(echo) == [1.0, 0.4]


# -- user specs ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("env_id", "name", "payload", "good", "want"),
    [
        (
            "userrl/Telepathy-v0",
            "yes_no",
            {"question": "Is it big?"},
            '```json\n{"answer": "yes"}\n```',
            {"answer": "Yes"},
        ),
        ("userrl/Telepathy-v0", "judge_guess", {"guess": "x"}, '{"correct": true}', {"correct": True}),
        ("userrl/Turtle-v0", "yes_no", {"question": "q"}, '{"answer": "No"}', {"answer": "No"}),
        (
            "userrl/Turtle-v0",
            "grade",
            {"story": "s"},
            '{"judgments": [1, 0.5]}',
            {"score": 0.8, "judgments": [1.0, 0.5]},
        ),
        (
            "userrl/Intention-v0",
            "clarify",
            {"question": "q", "remaining": [0, 2]},
            '{"uncovered": [2], "reply": "vegan"}',
            {"uncovered": [2], "reply": "vegan"},
        ),
    ],
)
def test_llm_specs_prompt_and_parse(
    env_id: str, name: str, payload: dict[str, Any], good: str, want: dict[str, Any]
) -> None:
    task = {"userrl/Telepathy-v0": TEL, "userrl/Turtle-v0": TURTLE, "userrl/Intention-v0": INT}[env_id]
    spec = get_env_class(env_id).user_spec
    query = UserQuery(env_id, "respond", name, payload, task, [])
    msgs = spec.llm_messages(query)
    assert [m["role"] for m in msgs] == ["system", "user"] and "JSON" in msgs[0]["content"]
    assert spec.parse_llm(query, good) == want
    for bad in (
        "not json",
        "[1, 2]",
        '{"other": 1}',
        '{"answer": "Perhaps", "correct": 3, "judgments": [2], "uncovered": [1], "reply": 5}',
    ):
        with pytest.raises(ValueError):
            spec.parse_llm(query, bad)


def test_env_classes_are_documented() -> None:
    for env_id in GYMS:
        doc = get_env_class(env_id).__doc__ or ""
        for section in ("Description:", "Actions:", "Observation:", "Reward:", "Episode end:", "Version history:"):
            assert section in doc, f"{env_id} docstring lacks {section}"
        assert issubclass(get_env_class(env_id), Env)
