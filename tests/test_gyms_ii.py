"""Travel, Persuade, Search and Tau gyms: env checks, reward rules on hand-written transcripts,
the search index's determinism, and isolation of concurrent Tau episodes."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.test_gyms import play, rewards
from userrl.envs.actions import parse_prefixed
from userrl.envs.base import Env, StepResult
from userrl.envs.check import check_env, check_tasks
from userrl.envs.datasets import load_tasks
from userrl.envs.gyms import _search_index
from userrl.envs.gyms._tau_db import base_db, episode_db, fingerprint
from userrl.envs.registry import get_env_class, list_envs, make
from userrl.envs.users import InProcessUser
from userrl.errors import EnvError
from userrl.sim_users.base import UserQuery
from userrl.sim_users.guards import reply_leaks

GYMS = ["userrl/Travel-v0", "userrl/Persuade-v0", "userrl/Search-v0", "userrl/Tau-v0"]


# -- shared ------------------------------------------------------------------------------------
@pytest.mark.parametrize("env_id", GYMS)
def test_check_env_passes(env_id: str) -> None:
    assert env_id in list_envs()
    check_env(env_id)


@pytest.mark.parametrize("env_id", GYMS)
def test_expert_scores_max_on_train_split(env_id: str) -> None:
    tasks = load_tasks(env_id, "train")
    assert len(tasks) >= 40 and len(load_tasks(env_id, "test")) >= 15
    check_tasks(env_id, tasks)


@pytest.mark.parametrize("env_id", GYMS)
def test_format_error_finish_and_turn_cap(env_id: str) -> None:
    task = load_tasks(env_id, "test")[0]
    bad = play(env_id, task, ["no prefix here"])[0]
    assert (bad.reward, bad.terminated, bad.truncated) == (0.0, False, False)
    assert "format_error" in bad.info
    fin = play(env_id, task, ["[finish]"])[0]
    assert (fin.reward, fin.terminated) == (0.0, True)
    capped = play(env_id, task, ["oops", "[search] zzz", "oops"], max_turns=2)
    assert len(capped) == 2 and capped[-1].truncated and not capped[-1].terminated


@pytest.mark.parametrize("env_id", GYMS)
def test_documented(env_id: str) -> None:
    doc = get_env_class(env_id).__doc__ or ""
    for section in ("Description:", "Actions:", "Observation:", "Reward:", "Episode end:", "Version history:"):
        assert section in doc
    assert issubclass(get_env_class(env_id), Env)


# -- TravelGym ---------------------------------------------------------------------------------
def _opt(i: str, price: int) -> dict[str, Any]:
    return {"id": i, "price": price, "features": {"stops": "nonstop"}}


TRAVEL = {
    "id": "t-tr",
    "request": "I need a flight and a hotel.",
    "aspects": ["flight", "hotel"],
    "preferences": [
        {"aspect": "flight", "statement": "Layovers wear me out.", "keywords": ["stop", "layover"]},
        {"aspect": "flight", "statement": "I'm bringing a big suitcase.", "keywords": ["luggage", "bag"]},
        {"aspect": "hotel", "statement": "My dog comes along.", "keywords": ["pet", "dog"]},
    ],
    "catalog": {
        "flight": {"options": [_opt("F1", 100), _opt("F2", 150), _opt("F3", 90)], "best": ["F1"], "acceptable": ["F2"]},
        "hotel": {"options": [_opt("H1", 80), _opt("H2", 95)], "best": ["H2"], "acceptable": []},
    },
}


def test_travel_elicit_search_and_best_answers() -> None:
    res = play(
        "userrl/Travel-v0",
        TRAVEL,
        [
            "[action] Do you mind layovers?",
            "[action] Any layover wishes again?",
            "[search] flight options",
            "[answer] F1",
            "[answer] F2",
            "[search] hotel",
            "[answer] I recommend H2",
        ],
    )
    assert rewards(res) == [0.8, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0]  # UserRL's training reward: 0.8
    assert res[0].observation == "Layovers wear me out." and res[1].observation.startswith("As I said")
    assert "F1 |" in res[2].observation and "H1" not in res[2].observation
    assert "already recommended" in res[4].observation
    assert res[-1].terminated and res[-1].info["score"] == 1.0
    evaluation = play("userrl/Travel-v0", TRAVEL, ["[action] Do you mind layovers?"], elicit_reward=0.6)
    assert rewards(evaluation) == [0.6]


def test_travel_one_preference_per_message_and_no_keyword_lists() -> None:
    res = play(
        "userrl/Travel-v0", TRAVEL, ["[action] Any wishes about layovers or luggage?", "[action] And about luggage?"]
    )
    assert [r.info["revealed"] for r in res] == [[0], [1]] and rewards(res) == [0.8, 0.8]
    dump = play("userrl/Travel-v0", TRAVEL, ["[action] stop layover luggage bag pet dog?"])
    assert rewards(dump) == [0.0] and "one thing at a time" in dump[0].observation


def test_travel_llm_user_may_say_one_preference_per_message() -> None:
    spec = get_env_class("userrl/Travel-v0").user_spec
    q = UserQuery(
        "userrl/Travel-v0", "respond", "talk", {"message": "Flight wishes?", "revealed": [], "off_topic": 0}, TRAVEL
    )
    both = {"reveal": [0], "reply": "Layovers wear me out. I'm bringing a big suitcase."}
    assert reply_leaks(q, both, spec) == ["I'm bringing a big suitcase."]
    with pytest.raises(ValueError, match="at most one"):
        spec.parse_llm(q, '{"reveal": [0, 1], "reply": "..."}')
    for message in ("Do you mind layovers?", "Any luggage?", "Nice weather?"):
        q = UserQuery(
            "userrl/Travel-v0", "respond", "talk", {"message": message, "revealed": [], "off_topic": 2}, TRAVEL
        )
        assert reply_leaks(q, spec.scripted(q), spec) == []


def test_travel_acceptable_wrong_and_bad_answers() -> None:
    res = play(
        "userrl/Travel-v0",
        TRAVEL,
        ["[answer] X9", "[answer] F2", "[answer] H1"],
        require_search=False,
    )
    assert rewards(res) == [0.0, 0.8, 0.0] and res[-1].terminated
    assert res[-1].info["aspect_scores"] == {"flight": 0.8, "hotel": 0.0}
    assert res[-1].info["score"] == 0.4


def test_travel_answers_list_ids_of_several_aspects_one_choice_each_as_userrl() -> None:
    both = play("userrl/Travel-v0", TRAVEL, ["[answer] F1, H2"], require_search=False)
    assert rewards(both) == [2.0] and both[0].terminated and both[0].info["score"] == 1.0
    # a second option of an aspect (a hedge) earns nothing and burns the aspects it names
    hedge = play("userrl/Travel-v0", TRAVEL, ["[answer] F1 or F2", "[answer] F1", "[answer] H2"], require_search=False)
    assert rewards(hedge) == [0.0, 0.0, 1.0] and "only one choice" in hedge[0].observation
    assert hedge[-1].info["aspect_scores"] == {"flight": 0.0, "hotel": 1.0}
    late = play("userrl/Travel-v0", TRAVEL, ["[answer] F2", "[answer] H2, F1"], require_search=False)
    assert rewards(late) == [0.8, 0.0] and late[-1].info["aspect_scores"] == {"flight": 0.8, "hotel": 0.0}


def test_travel_search_lists_an_aspect_once_and_pays_search_reward_once() -> None:
    res = play("userrl/Travel-v0", TRAVEL, ["[search] flight", "[search] flights again"], search_reward=0.2)
    assert rewards(res) == [0.2, 0.0] and "already have the search results" in res[1].observation
    assert rewards(play("userrl/Travel-v0", TRAVEL, ["[search] flight"])) == [0.0]  # the training default


def test_travel_blind_and_padded_answers_are_refused() -> None:
    res = play(
        "userrl/Travel-v0",
        TRAVEL,
        ["[answer] F1", "[search] flight", "[answer] F1 nonstop cheap great value", "[answer] F1"],
    )
    assert rewards(res) == [0.0, 0.0, 0.0, 1.0]
    assert "search the catalog first" in res[0].observation
    assert "option ids only" in res[2].observation


def test_travel_volunteers_on_the_fourth_off_topic_turn_at_random_and_every_fifth_search_fails() -> None:
    chat = ["[action] Nice weather?", "[action] Hello?", "[action] What is up?", "[action] And now?", "[action] Hm?"]
    res = play("userrl/Travel-v0", TRAVEL, chat)
    assert rewards(res) == [0.0] * 5
    assert [r.info["volunteered"] for r in res] == [False, False, False, True, False]  # UserRL: the 4th
    assert len(res[3].info["revealed"]) == 1 and res[4].info["revealed"] == []
    picked = {play("userrl/Travel-v0", TRAVEL, chat[:4], seed=s)[3].info["revealed"][0] for s in range(12)}
    assert len(picked) > 1  # a random preference, as UserRL's (from the episode's seed and turn)
    searches = play("userrl/Travel-v0", TRAVEL, ["[search] hotel", "[search] flight"] * 3 + ["[search] spaceship"])
    assert [("System error" in r.observation) for r in searches] == [False] * 4 + [True] + [False] * 2
    assert "Please name the travel aspect" in searches[-1].observation
    never = play("userrl/Travel-v0", TRAVEL, ["[search] hotel"] * 5, search_fail_every=0)
    assert not any("System error" in r.observation for r in never)
    travel = get_env_class("userrl/Travel-v0")
    assert (travel.max_return(TRAVEL), travel.max_return(TRAVEL, 0.6), travel.max_score(TRAVEL)) == (4.4, 3.8, 1.0)


# -- PersuadeGym -------------------------------------------------------------------------------
PERSUADE = {
    "id": "t-pe",
    "claim": "Zoos should be abolished",
    "argument": "Cages are cruel.",
    "counters": [
        {"argument": "Breeding saves species.", "keywords": [["breeding"]], "levels": 3},
        {"argument": "Zoos fund research.", "keywords": [["research"]], "levels": 2},
        {"argument": "Children learn.", "keywords": [["teach", "children"]], "levels": 1},
    ],
}


def test_persuade_moves_by_counter_levels_and_ends_at_strongly_disagree() -> None:
    res = play(
        "userrl/Persuade-v0",
        PERSUADE,
        [
            "[action] Zoo breeding programmes save many endangered species.",
            "[answer] Breeding programmes again save endangered species.",
            "[action] The weather is really nice and sunny today.",
            "[search] zoo facts",
            "[action] Zoos fund important research and teach children.",
            "[action] Visits teach children to love animals deeply.",
        ],
    )
    # one point per argument: the research-and-children argument counts as research only
    assert rewards(res) == [0.5, 0.0, 0.0, 0.0, 0.3333, 0.1667]
    assert res[0].observation.endswith("My stance: Neutral.")
    assert "already made that point" in res[1].observation
    assert "Cages are cruel" not in "".join(r.observation for r in res)
    assert res[-1].terminated and res[-1].info["stance"] == "Strongly Disagree"


def test_persuade_opening_hides_the_users_reasoning_and_echoes_do_not_move() -> None:
    async def opening() -> str:
        return (await make("userrl/Persuade-v0").reset(PERSUADE, 0))[1]

    obs = asyncio.run(opening())
    assert "Zoos should be abolished" in obs and "Cages are cruel" not in obs
    task = {
        **PERSUADE,
        "argument": "Keeping wild animals in small cages for our entertainment "
        "is cruel and breeding programmes never release them.",
    }
    res = play(
        "userrl/Persuade-v0",
        task,
        [
            f"[action] {task['argument']}",  # the user's reasoning, copied
            "[action] Zoos should be abolished, should they?",  # the claim, echoed
            "[action] breeding research teach children species save fund zoo animals",
        ],
    )
    assert rewards(res) == [0.0, 0.0, 0.0]


def test_persuade_backfire_and_reward_modes() -> None:
    acts = [
        "[action] Zoos fund serious scientific research worldwide.",
        "[action] That is stupid.",
        "[action] Breeding programmes rescue endangered species.",
    ]
    delta = play("userrl/Persuade-v0", PERSUADE, acts)
    assert [r.info["stance"] for r in delta] == ["Partly Agree", "Agree", "Partly Disagree"]  # UserRL's labels
    assert rewards(delta) == [0.3333, 0.0, 0.5]
    best = play("userrl/Persuade-v0", PERSUADE, acts, reward_mode="best")
    assert rewards(best) == [0.3333, 0.0, 0.3334]


# -- SearchGym ---------------------------------------------------------------------------------
SEARCH = {"id": "t-se", "question": "Who wrote it?", "answer": "Ada Lovelace", "aliases": ["Lovelace"]}


def test_search_answers_judged_by_normalized_match() -> None:
    res = play(
        "userrl/Search-v0",
        SEARCH,
        [
            "[answer] Charles Babbage",
            "[answer] Babbage, Lovelace, Turing, Hopper, Church, Knuth, Ritchie or Liskov",
            "[action] hello",
            "[answer] It was the Ada LOVELACE.",
        ],
        max_answers=None,  # UserRL's rule: any number of answers
    )
    assert rewards(res) == [0.0, 0.0, 0.0, 1.0] and res[-1].terminated
    assert not any(r.terminated for r in res[:3])
    once = play("userrl/Search-v0", SEARCH, ["[answer] Charles Babbage", "[answer] Ada Lovelace"])
    assert len(once) == 1 and once[0].terminated and "last answer" in once[0].observation  # default: one answer
    dates = {"id": "t-d", "question": "When?", "answer": "20 June 1837"}
    assert rewards(play("userrl/Search-v0", dates, ["[answer] June 20, 1837"])) == [1.0]
    hedges = ["Ada Lovelace Turing", "Turing, Ada Lovelace", "Ada Lovelace or Babbage"]
    assert rewards(play("userrl/Search-v0", SEARCH, [f"[answer] {h}" for h in hedges], max_answers=None)) == [0.0] * 3
    assert rewards(play("userrl/Search-v0", SEARCH, ["[answer] I think the answer is Ada Lovelace"])) == [1.0]


def test_search_results_and_limit() -> None:
    task = load_tasks("userrl/Search-v0", "test")[0]
    res = play("userrl/Search-v0", task, [f"[search] {task['queries'][0]}"] * 6)
    assert res[0].observation.startswith("1. [doc-") and "(4 searches left)" in res[0].observation
    assert res[0].observation.count("\n") == 5 and rewards(res) == [0.0] * 6
    assert "used all 5 searches" in res[5].observation


def test_search_index_is_deterministic_on_both_engines() -> None:
    docs = _search_index.load_corpus()
    fts = _search_index.SearchIndex(docs, "fts5") if _search_index.fts5_available() else None
    bm25 = _search_index.SearchIndex(docs, "bm25")
    for task in load_tasks("userrl/Search-v0", "test"):
        for index in filter(None, [fts, bm25]):
            found = ""
            for q in task["queries"]:
                first = index.search(q)
                assert [d.id for d in first] == [d.id for d in index.search(q)]
                assert 0 < len(first) <= 5
                found += " ".join(f"{d.title} {d.text}" for d in first)
            assert task["answer"] in found, (index.engine, task["id"])  # the expert's queries suffice
    assert bm25.search("!!! ???") == []
    if fts is not None:  # FTS5 query syntax in the text is never interpreted
        assert isinstance(fts.search('") OR * NEAR( AND "'), list)
        assert fts.search("!!! ???") == []


def test_search_web_backend_is_optional_and_needs_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="search_backend"):
        make("userrl/Search-v0", search_backend="bing")
    monkeypatch.delenv("SERPER_API_KEY", raising=False)
    with pytest.raises(EnvError, match="SERPER_API_KEY"):
        play("userrl/Search-v0", SEARCH, ["[search] x"], search_backend="serper")


# -- TauGym ------------------------------------------------------------------------------------
def _tau_task(kind: str = "cancel") -> dict[str, Any]:
    return next(t for t in load_tasks("userrl/Tau-v0", "train") if t["kind"] == kind and t["identify_by"] == "zip")


def _call(name: str, **args: Any) -> str:
    return f"[answer] {name} {json.dumps(args)}"


def test_tau_right_db_state_scores_one() -> None:
    task = _tau_task()
    cancel = next(a for a in task["actions"] if a["name"] == "cancel_pending_order")["arguments"]
    res = play(
        "userrl/Tau-v0",
        task,
        [
            "[action] Hi, what is your name and zip code?",
            "[action] How can I help?",
            "[search] tools",
            "[answer] " + json.dumps({"name": "get_order_details", "arguments": {"order_id": cancel["order_id"]}}),
            _call("cancel_pending_order", **cancel),
            "[action] Done. Anything else?",
        ],
    )
    assert "My name is" in res[0].observation and cancel["order_id"] in res[1].observation
    assert "cancel_pending_order(order_id, reason)" in res[2].observation
    assert json.loads(res[4].observation)["status"] == "cancelled"
    assert rewards(res) == [0.0] * 5 + [1.0] and res[-1].terminated
    assert res[-1].info == {"db_match": True, "outputs_match": True, "score": 1.0}


def test_tau_wrong_state_tool_errors_and_missing_outputs() -> None:
    task = _tau_task()
    cancel = next(a for a in task["actions"] if a["name"] == "cancel_pending_order")["arguments"]
    res = play(
        "userrl/Tau-v0",
        task,
        [
            _call("cancel_pending_order", order_id=cancel["order_id"], reason="too slow"),
            _call("cancel_pending_order", order_id="#W0"),
            _call("fly_away"),
            "[answer] {not json",
            f"[action] cancel_pending_order {json.dumps(cancel)}",  # speech, never a tool call
            "[action] How can I help?",
            "[action] Anything else?",
        ],
    )
    obs = [r.observation for r in res]
    assert "reason must be one of" in obs[0] and "takes the arguments" in obs[1]
    assert "unknown tool" in obs[2] and "write a tool call" in obs[3]
    assert obs[4].startswith("Customer:") and res[4].state["writes"] == []
    assert rewards(res) == [0.0] * 7 and res[-1].terminated and not res[-1].info["db_match"]
    total = _tau_task("total")
    quiet = play("userrl/Tau-v0", total, ["[action] How can I help?", "[action] Anything else?"] * 3)
    # the customer asks again the first time nothing is done, and hangs up the next
    assert [r.terminated for r in quiet] == [False, False, False, True]
    assert "not done yet" in quiet[1].observation
    assert quiet[-1].info["outputs_match"] is False and quiet[-1].reward == 0.0


def test_tau_unknown_database_is_refused() -> None:
    task = {"id": "telecom-x", "db": "tau-bench-telecom", "opening": "Hi", "actions": [], "instruction": "x"}
    with pytest.raises(ValueError, match="tau-bench-telecom"):
        get_env_class("userrl/Tau-v0").validate_task(task)  # type: ignore[attr-defined]
    with pytest.raises(EnvError, match="tau-bench-telecom"):
        play("userrl/Tau-v0", task, [])


class YieldingUser(InProcessUser):
    """Yields to the event loop on every query, so concurrent episodes interleave."""

    async def ask(self, query: UserQuery) -> dict[str, Any]:
        await asyncio.sleep(0)
        return await super().ask(query)


def test_tau_concurrent_episodes_never_see_each_others_writes() -> None:
    task = _tau_task()
    order = next(a for a in task["actions"] if a["name"] == "cancel_pending_order")["arguments"]["order_id"]
    base_fp = fingerprint(base_db())

    async def episode(i: int) -> tuple[int, StepResult]:
        env, user = make("userrl/Tau-v0"), YieldingUser()
        state, _, _ = await env.reset(task, i)
        address = f"{i} Conflict St, Springfield 62704"
        for text in [
            "[action] Hello?",
            _call("modify_pending_order_address", order_id=order, address=address),
            "[action] Still there?",
            _call("cancel_pending_order", order_id=order, reason=["no longer needed", "ordered by mistake"][i % 2])
            if i % 3 == 0
            else "[action] One moment.",
        ]:
            res = await env.step(state, parse_prefixed(text), user)
            state = res.state
        return i, res

    async def run() -> list[tuple[int, StepResult]]:
        return await asyncio.gather(*(episode(i) for i in range(48)))

    for i, res in asyncio.run(run()):
        writes = res.state["writes"]
        assert [w["name"] for w in writes] == (
            ["modify_pending_order_address"] + (["cancel_pending_order"] if i % 3 == 0 else [])
        )
        conn = episode_db(writes)
        row = conn.execute("SELECT address, status, cancel_reason FROM orders WHERE order_id=?", (order,)).fetchone()
        assert row["address"] == f"{i} Conflict St, Springfield 62704"
        assert row["status"] == ("cancelled" if i % 3 == 0 else "pending")
        if i % 3 == 0:
            assert row["cancel_reason"] == ["no longer needed", "ordered by mistake"][i % 2]
    assert fingerprint(base_db()) == base_fp  # the shared base is never written


# -- LLM specs ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("env_id", "task", "name", "payload", "good", "want"),
    [
        (
            "userrl/Travel-v0",
            TRAVEL,
            "talk",
            {"message": "m", "revealed": [0], "off_topic": 0},
            '{"reveal": [2], "reply": "I have a dog."}',
            {"reveal": [2], "volunteered": False, "reply": "I have a dog."},
        ),
        (
            "userrl/Persuade-v0",
            PERSUADE,
            "react",
            {"argument": "a", "stance": "Agree", "used": []},
            '{"stance": "neutral", "reply": "Fair."}',
            {"stance": "Neutral", "new_points": [], "reply": "Fair. My stance: Neutral."},
        ),
        ("userrl/Search-v0", SEARCH, "judge_answer", {"answer": "Ada"}, '{"correct": true}', {"correct": True}),
        (
            "userrl/Tau-v0",
            {"id": "x", "instruction": "Cancel #W1.", "requests": ["r"]},
            "reply",
            {"message": "Hi", "stated": 1},
            '{"reply": "Hello", "done": false}',
            {"reply": "Hello", "done": False, "stated": 1},
        ),
    ],
)
def test_llm_specs_prompt_and_parse(
    env_id: str, task: dict[str, Any], name: str, payload: dict[str, Any], good: str, want: dict[str, Any]
) -> None:
    spec = get_env_class(env_id).user_spec
    query = UserQuery(env_id, "respond", name, payload, task, [])
    msgs = spec.llm_messages(query)
    assert [m["role"] for m in msgs] == ["system", "user"] and "JSON" in msgs[0]["content"]
    assert spec.parse_llm(query, good) == want
    for bad in (
        "not json",
        "[1, 2]",
        '{"other": 1}',
        '{"reveal": [0], "reply": "x", "stance": "Maybe", "correct": "yes", "done": "no"}',
    ):
        with pytest.raises(ValueError):
            spec.parse_llm(query, bad)


def test_travel_llm_user_volunteers_by_rule_after_off_topic_turns() -> None:
    spec = get_env_class("userrl/Travel-v0").user_spec
    q = UserQuery("userrl/Travel-v0", "respond", "talk", {"message": "m", "revealed": [], "off_topic": 3}, TRAVEL, [])
    assert spec.parse_llm(q, '{"reveal": [], "reply": "Hm."}')["reveal"] in ([0], [1], [2])
    early = UserQuery("userrl/Travel-v0", "respond", "talk", {"message": "m", "revealed": [], "off_topic": 2}, TRAVEL)
    assert spec.parse_llm(early, '{"reveal": [], "reply": "Hm."}')["reveal"] == []
