"""TauGym on τ-bench's databases: the shipped data, tricky tools against hand-computed
results, the reward (gold replay scores 1, a wrong change 0), ``[action]`` as speech only,
and every imported UserRL Tau task replayed by the expert (when ../shared is present)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.test_gyms import play, rewards
from userrl.envs.actions import parse_prefixed
from userrl.envs.check import check_tasks
from userrl.envs.data_tools.importer.converters import convert_tau
from userrl.envs.gyms import _taubench_db
from userrl.envs.gyms._tau_domains import DOMAINS
from userrl.envs.gyms._tau_user import customer_reply, outputs_said
from userrl.envs.gyms._taubench_airline import TOOLS as AIRLINE
from userrl.envs.gyms._taubench_db import EpisodeDB, load
from userrl.envs.gyms._taubench_retail import TOOLS as RETAIL
from userrl.envs.gyms._taubench_tools import ToolError
from userrl.envs.registry import get_env_class, make
from userrl.envs.users import InProcessUser
from userrl.errors import DataError
from userrl.sim_users.base import UserQuery

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"
TAU_DATA = Path(os.environ.get("USERRL_REFERENCE_DATA") or SHARED / "userrl-data") / "TauGym"
needs_shared = pytest.mark.skipif(not TAU_DATA.is_dir(), reason="../shared/userrl-data absent")


def _run(db: EpisodeDB, tools: dict[str, Any], name: str, **args: Any) -> Any:
    out = tools[name](db, args)
    return json.loads(out) if out[:1] in "{[" else out


def _retail(pred: Any) -> tuple[str, Any]:
    return next((k, o) for k, o in load("tau-bench-retail")["tables"]["orders"].items() if pred(o))


def _other_variant(product_id: str, item_id: str) -> tuple[str, float]:
    """The cheapest other available variant of the product."""
    variants = load("tau-bench-retail")["tables"]["products"][product_id]["variants"]
    return min(
        ((v["item_id"], v["price"]) for v in variants.values() if v["available"] and v["item_id"] != item_id),
        key=lambda v: v[1],
    )


def _methods(db: EpisodeDB, user_id: str) -> dict[str, Any]:
    return db.get("users", user_id)["payment_methods"]


# -- shipped data and the copy-on-write database -----------------------------------------------
@pytest.mark.skipif(not (SHARED / "tau-bench-retail").is_dir(), reason="../shared absent")
@pytest.mark.parametrize("db", ["tau-bench-retail", "tau-bench-airline"])
def test_shipped_databases_equal_tau_bench(db: str) -> None:
    src = SHARED / db
    data = load(db)
    for table in _taubench_db.TABLES[db]:
        assert data["tables"][table] == json.loads((src / f"{table}.json").read_text())
    assert data["wiki"] == (src / "wiki.md").read_text()


def test_episode_copies_never_parse_or_touch_the_template(monkeypatch: pytest.MonkeyPatch) -> None:
    load("tau-bench-airline")
    monkeypatch.setattr(json, "load", lambda *a, **k: pytest.fail("parsed per episode"))
    a, b = EpisodeDB("tau-bench-airline"), EpisodeDB("tau-bench-airline")
    base = a.fingerprint()
    _run(a, AIRLINE, "cancel_reservation", reservation_id="4WQ150")
    assert b.get("reservations", "4WQ150").get("status") is None
    assert load("tau-bench-airline")["tables"]["reservations"]["4WQ150"].get("status") is None
    assert a.fingerprint() != base == b.fingerprint()
    b.edit("reservations", "4WQ150")  # copied but unchanged: still the same database
    assert b.fingerprint() == base
    with pytest.raises(DataError, match="unknown"):
        EpisodeDB("tau-bench-telecom")


# -- retail tools ------------------------------------------------------------------------------
def test_exchange_and_return_of_delivered_items() -> None:
    oid, order = _retail(
        lambda o: (
            o["status"] == "delivered"
            and len(o["items"]) >= 2
            and "gift_card" not in o["payment_history"][0]["payment_method_id"]
        )
    )
    first = order["items"][0]
    new, price = _other_variant(first["product_id"], first["item_id"])
    pay = order["payment_history"][0]["payment_method_id"]
    db = EpisodeDB("tau-bench-retail")
    with pytest.raises(ToolError, match="not found"):  # more copies than the order holds
        _run(
            db,
            RETAIL,
            "exchange_delivered_order_items",
            order_id=oid,
            item_ids=[first["item_id"]] * 2,
            new_item_ids=[new] * 2,
            payment_method_id=pay,
        )
    with pytest.raises(ToolError, match="should match"):
        _run(
            db,
            RETAIL,
            "exchange_delivered_order_items",
            order_id=oid,
            item_ids=[first["item_id"]],
            new_item_ids=[],
            payment_method_id=pay,
        )
    out = _run(
        db,
        RETAIL,
        "exchange_delivered_order_items",
        order_id=oid,
        item_ids=[first["item_id"]],
        new_item_ids=[new],
        payment_method_id=pay,
    )
    assert out["status"] == "exchange requested" and out["exchange_new_items"] == [new]
    assert out["exchange_price_difference"] == round(price - first["price"], 2)
    assert out["items"] == order["items"]  # the items change when the exchange is processed
    with pytest.raises(ToolError, match="non-delivered order cannot be returned"):
        _run(
            db, RETAIL, "return_delivered_order_items", order_id=oid, item_ids=[first["item_id"]], payment_method_id=pay
        )
    fresh = EpisodeDB("tau-bench-retail")
    other = next((m for m in _methods(fresh, order["user_id"]) if m != pay and "gift_card" not in m), None)
    if other is not None:
        with pytest.raises(ToolError, match="original payment method or a gift card"):
            _run(
                fresh,
                RETAIL,
                "return_delivered_order_items",
                order_id=oid,
                item_ids=[first["item_id"]],
                payment_method_id=other,
            )
    ids = [it["item_id"] for it in order["items"]][::-1]
    out = _run(fresh, RETAIL, "return_delivered_order_items", order_id=oid, item_ids=ids, payment_method_id=pay)
    assert (out["status"], out["return_items"]) == ("return requested", sorted(ids))


def test_modify_pending_items_pays_the_difference_from_a_gift_card() -> None:
    def fits(o: dict[str, Any]) -> bool:  # a gift card that covers the cheapest swap
        user = load("tau-bench-retail")["tables"]["users"][o["user_id"]]
        diff = _other_variant(o["items"][0]["product_id"], o["items"][0]["item_id"])[1] - o["items"][0]["price"]
        return o["status"] == "pending" and any(
            m["source"] == "gift_card" and m["balance"] >= diff for m in user["payment_methods"].values()
        )

    oid, order = _retail(fits)
    item = order["items"][0]
    new, price = _other_variant(item["product_id"], item["item_id"])
    db = EpisodeDB("tau-bench-retail")
    card = next(
        k
        for k, m in _methods(db, order["user_id"]).items()
        if m["source"] == "gift_card" and m["balance"] >= price - item["price"]
    )
    before = _methods(db, order["user_id"])[card]["balance"]
    out = _run(
        db,
        RETAIL,
        "modify_pending_order_items",
        order_id=oid,
        item_ids=[item["item_id"]],
        new_item_ids=[new],
        payment_method_id=card,
    )
    diff = price - item["price"]
    assert out["status"] == "pending (item modified)" and out["items"][0]["item_id"] == new
    assert out["payment_history"][-1] == {
        "transaction_type": "payment" if diff > 0 else "refund",
        "amount": abs(diff),
        "payment_method_id": card,
    }
    assert _methods(db, order["user_id"])[card]["balance"] == round(before - diff, 2)
    with pytest.raises(ToolError, match="non-pending order cannot be modified"):
        _run(
            db,
            RETAIL,
            "modify_pending_order_items",
            order_id=oid,
            item_ids=[new],
            new_item_ids=[item["item_id"]],
            payment_method_id=card,
        )


def test_payment_change_and_cancellation_refund_gift_cards() -> None:
    oid, order = _retail(
        lambda o: (
            o["status"] == "pending"
            and len(o["payment_history"]) == 1
            and "gift_card" in o["payment_history"][0]["payment_method_id"]
        )
    )
    card, amount = order["payment_history"][0]["payment_method_id"], order["payment_history"][0]["amount"]
    db = EpisodeDB("tau-bench-retail")
    balance = _methods(db, order["user_id"])[card]["balance"]
    out = _run(db, RETAIL, "cancel_pending_order", order_id=oid, reason="ordered by mistake")
    assert (out["status"], out["cancel_reason"]) == ("cancelled", "ordered by mistake")
    assert out["payment_history"][-1] == {"transaction_type": "refund", "amount": amount, "payment_method_id": card}
    assert _methods(db, order["user_id"])[card]["balance"] == round(balance + amount, 2)
    db = EpisodeDB("tau-bench-retail")
    with pytest.raises(ToolError, match="invalid reason"):
        _run(db, RETAIL, "cancel_pending_order", order_id=oid, reason="too slow")
    other = next((m for m, v in _methods(db, order["user_id"]).items() if v["source"] != "gift_card"), None)
    if other is not None:
        out = _run(db, RETAIL, "modify_pending_order_payment", order_id=oid, payment_method_id=other)
        assert [p["transaction_type"] for p in out["payment_history"]] == ["payment", "payment", "refund"]
        assert _methods(db, order["user_id"])[card]["balance"] == round(balance + amount, 2)
        with pytest.raises(ToolError, match="exactly one payment"):
            _run(db, RETAIL, "modify_pending_order_payment", order_id=oid, payment_method_id=card)


def test_argument_checks_and_calculate() -> None:
    db = EpisodeDB("tau-bench-retail")
    with pytest.raises(ToolError, match="takes the arguments"):
        RETAIL["cancel_pending_order"](db, {"order_id": "#W0"})
    with pytest.raises(ToolError, match="type strings"):
        RETAIL["return_delivered_order_items"](db, {"order_id": "#W0", "item_ids": "1", "payment_method_id": "x"})
    assert RETAIL["calculate"](db, {"expression": "(2 + 3) * 4 / 3"}) == "6.67"
    for bad in ("__import__('os')", "2 ** 3", "1 / 0"):
        with pytest.raises(ToolError):
            RETAIL["calculate"](db, {"expression": bad})


# -- airline tools -----------------------------------------------------------------------------
def test_booking_with_a_certificate_and_a_gift_card() -> None:
    db = EpisodeDB("tau-bench-airline")
    found = json.loads(
        AIRLINE["search_direct_flight"](db, {"origin": "JFK", "destination": "SEA", "date": "2024-05-20"})
    )
    users = load("tau-bench-airline")["tables"]["users"]
    uid = next(
        u
        for u, p in users.items()
        if {m["source"] for m in p["payment_methods"].values()} >= {"certificate", "gift_card"}
    )
    methods = users[uid]["payment_methods"]
    cert = next(k for k, m in methods.items() if m["source"] == "certificate")
    card = next(k for k, m in methods.items() if m["source"] == "gift_card")
    flight = found[0] if found else pytest.skip("no direct JFK-SEA flight")
    seats = 1
    price = flight["prices"]["economy"] * seats + 30 + 50
    cert_part = min(methods[cert]["amount"], price)
    args = {
        "user_id": uid,
        "origin": "JFK",
        "destination": "SEA",
        "flight_type": "one_way",
        "cabin": "economy",
        "flights": [{"flight_number": flight["flight_number"], "date": "2024-05-20"}],
        "passengers": [{"first_name": "A", "last_name": "B", "dob": "1990-01-01"}],
        "total_baggages": 2,
        "nonfree_baggages": 1,
        "insurance": "yes",
    }
    with pytest.raises(ToolError, match=f"total price is {price}"):
        _run(db, AIRLINE, "book_reservation", **args, payment_methods=[{"payment_id": cert, "amount": 1}])
    if price - cert_part > methods[card]["amount"]:
        pytest.skip("gift card too small for this fare")
    pays = [{"payment_id": cert, "amount": cert_part}, {"payment_id": card, "amount": price - cert_part}]
    out = _run(db, AIRLINE, "book_reservation", **args, payment_methods=pays)
    assert out["reservation_id"] == "HATHAT" and out["flights"][0]["price"] == flight["prices"]["economy"]
    user = db.get("users", uid)
    assert cert not in user["payment_methods"] and user["reservations"][-1] == "HATHAT"
    assert user["payment_methods"][card]["amount"] == methods[card]["amount"] - (price - cert_part)
    again = (
        _run(
            db,
            AIRLINE,
            "book_reservation",
            **args,
            payment_methods=[
                {"payment_id": next(k for k, m in methods.items() if m["source"] == "credit_card"), "amount": price}
            ],
        )
        if any(m["source"] == "credit_card" for m in methods.values())
        else {"reservation_id": "HATHAU"}
    )
    assert again["reservation_id"] == "HATHAU"


def test_airline_changes_and_cancellation() -> None:
    db = EpisodeDB("tau-bench-airline")
    res = load("tau-bench-airline")["tables"]["reservations"]["4WQ150"]
    methods = db.get("users", res["user_id"])["payment_methods"]
    with pytest.raises(ToolError, match="payment method not found"):
        _run(
            db,
            AIRLINE,
            "update_reservation_baggages",
            reservation_id="4WQ150",
            total_baggages=9,
            nonfree_baggages=res["nonfree_baggages"] + 2,
            payment_id="certificate_0",
        )
    pay = next(iter(methods))
    if methods[pay]["source"] == "certificate":
        pytest.skip("the first method is a certificate")
    out = _run(
        db,
        AIRLINE,
        "update_reservation_baggages",
        reservation_id="4WQ150",
        total_baggages=9,
        nonfree_baggages=res["nonfree_baggages"] + 2,
        payment_id=pay,
    )
    assert out["payment_history"][-1] == {"payment_id": pay, "amount": 100}
    with pytest.raises(ToolError, match="number of passengers"):
        _run(db, AIRLINE, "update_reservation_passengers", reservation_id="4WQ150", passengers=[])
    out = _run(db, AIRLINE, "cancel_reservation", reservation_id="4WQ150")
    paid = res["payment_history"] + [{"payment_id": pay, "amount": 100}]
    assert out["status"] == "cancelled"
    assert out["payment_history"] == paid + [{"payment_id": p["payment_id"], "amount": -p["amount"]} for p in paid]
    msg = AIRLINE["send_certificate"](db, {"user_id": res["user_id"], "amount": 150})
    assert "certificate_3221322" in msg
    assert db.get("users", res["user_id"])["payment_methods"]["certificate_3221322"]["amount"] == 150


def test_scripted_customer_of_a_tau_bench_task() -> None:
    task = {
        "id": "retail-x",
        "db": "tau-bench-retail",
        "opening": "Hi",
        "actions": [],
        "instruction": "Your name is Ann Lee and your zip is 10001. You want to cancel #W1.",
    }
    said = "My name is Ann Lee and my zip is 10001. I want to cancel #W1."
    assert customer_reply(task, "Anything else?", 0) == {"reply": said, "stated": 1, "done": False}
    assert customer_reply(task, "What is your name and zip code?", 1)["reply"] == said
    assert customer_reply(task, "Shall I proceed?", 1)["reply"].startswith("Yes")
    # the call ends at "anything else?" once the goal is met, or after the customer asked again
    assert customer_reply(task, "Is there anything else?", 1, goal_met=True)["done"] is True
    again = customer_reply(task, "Is there anything else?", 1)
    assert again["done"] is False and again["asked_again"] == 1 and "not done yet" in again["reply"]
    assert customer_reply(task, "Is there anything else?", 1, asked_again=1)["done"] is True
    # a proposal is agreed to only when it is the change the customer wants
    wants = {**task, "actions": [{"name": "cancel_pending_order", "arguments": {"order_id": "#W1"}}]}
    assert customer_reply(wants, "Shall I cancel order #W1?", 1)["reply"].startswith("Yes")
    assert customer_reply(wants, "Shall I cancel order #W2?", 1)["reply"].startswith("No")
    assert customer_reply(wants, "Shall I return the items of order #W1?", 1)["reply"].startswith("No")
    assert outputs_said({**task, "outputs": ["1,000.5", "Camera"]}, "It is 1,000.5 for the CAMERA") == [1]
    spec = get_env_class("userrl/Tau-v0").user_spec
    query = UserQuery(
        "userrl/Tau-v0", "respond", "reply", {"message": "Hi", "stated": 0}, {**task, "db": "tau-bench-airline"}, []
    )
    system = spec.llm_messages(query)[0]["content"]  # type: ignore[attr-defined]
    assert "an airline" in system and task["instruction"] in system


# -- the gym on imported tasks -----------------------------------------------------------------
def _imported(split: str) -> list[dict[str, Any]]:
    return convert_tau(TAU_DATA / f"tau_{split}.json")


def _first(pred: Any) -> dict[str, Any]:
    return next(t for t in _imported("test") if pred(t))


@needs_shared
def test_action_is_always_speech_never_a_tool_call() -> None:
    task = _first(
        lambda t: t["db"] == "tau-bench-retail" and any(a["name"] == "cancel_pending_order" for a in t["actions"])
    )
    cancel = next(a for a in task["actions"] if a["name"] == "cancel_pending_order")
    text = f"{cancel['name']} {json.dumps(cancel['arguments'])}"
    res = play(
        "userrl/Tau-v0",
        task,
        [f"[action] {text}", "[action] " + json.dumps({"name": cancel["name"], "arguments": cancel["arguments"]})],
    )
    assert all(r.observation.startswith("Customer:") for r in res)
    assert all(r.state["writes"] == [] for r in res)
    done = play("userrl/Tau-v0", task, [f"[answer] {text}"])
    assert done[0].state["writes"] == [{"name": cancel["name"], "arguments": cancel["arguments"]}]


@needs_shared
def test_wrong_or_missing_change_scores_zero() -> None:
    task = _first(lambda t: any(a["name"] == "cancel_pending_order" for a in t["actions"]) and not t["outputs"])
    cancel = next(a for a in task["actions"] if a["name"] == "cancel_pending_order")["arguments"]
    wrong = {**cancel, "reason": "no longer needed" if cancel["reason"] != "no longer needed" else "ordered by mistake"}
    res = play(
        "userrl/Tau-v0",
        task,
        ["[action] Hi!", f"[answer] cancel_pending_order {json.dumps(wrong)}", *["[action] Anything else?"] * 2],
    )
    # the goal is not met: the customer asks again, then ends the call
    assert res[1].state["writes"] and rewards(res) == [0.0] * 4 and res[-1].terminated and not res[2].terminated
    assert res[-1].info == {"db_match": False, "outputs_match": True, "score": 0.0}
    nothing = play("userrl/Tau-v0", task, ["[action] Hi!", *["[action] Anything else?"] * 2])
    assert [r.terminated for r in nothing] == [False, False, True] and nothing[-1].reward == 0.0


@needs_shared
def test_outputs_must_be_said_and_transfer_ends_the_episode() -> None:
    task = _first(lambda t: t["outputs"] and t["db"] == "tau-bench-airline")
    writes = [a for a in task["actions"] if a["name"] in AIRLINE and AIRLINE[a["name"]].write]
    calls = [f"[answer] {a['name']} {json.dumps(a['arguments'])}" for a in writes]
    quiet = play("userrl/Tau-v0", task, ["[action] Hi!", *calls, *["[action] Anything else?"] * 2])
    assert quiet[-1].info["outputs_match"] is False and quiet[-1].reward == 0.0
    said = "[action] " + ", ".join(task["outputs"]) + ". Anything else?"
    told = play("userrl/Tau-v0", task, ["[action] Hi!", *calls, said])
    assert told[-1].reward == 1.0
    moved = play("userrl/Tau-v0", task, ["[action] Hi!", *calls, '[answer] transfer_to_human_agents {"summary": "x"}'])
    assert moved[-1].terminated and moved[-1].info["db_match"] is True


@needs_shared
def test_concurrent_episodes_of_one_task_keep_their_own_database() -> None:
    task = _first(
        lambda t: t["db"] == "tau-bench-airline" and any(a["name"] == "cancel_reservation" for a in t["actions"])
    )
    rid = next(a for a in task["actions"] if a["name"] == "cancel_reservation")["arguments"]
    before = json.dumps(load("tau-bench-airline")["tables"]["reservations"][rid["reservation_id"]])

    async def episode(i: int) -> Any:
        env, user = make("userrl/Tau-v0"), InProcessUser()
        state, _, _ = await env.reset(task, i)
        for text in [
            "[action] Hi!",
            f"[answer] cancel_reservation {json.dumps(rid)}" if i % 2 else "[action] One moment.",
            "[action] Anything else?",
        ]:
            await asyncio.sleep(0)  # interleave the episodes
            res = await env.step(state, parse_prefixed(text), user)
            state = res.state
        return res

    async def run() -> list[Any]:
        return await asyncio.gather(*(episode(i) for i in range(16)))

    domain = DOMAINS[task["db"]]
    prints: dict[int, set[str]] = {0: set(), 1: set()}
    for i, res in enumerate(asyncio.run(run())):
        assert [w["name"] for w in res.state["writes"]] == (["cancel_reservation"] if i % 2 else [])
        prints[i % 2].add(domain.fingerprint(res.state["writes"]))
    assert prints[0] == {domain.fingerprint([])} and len(prints[1]) == 1 and prints[0] != prints[1]
    assert json.dumps(load("tau-bench-airline")["tables"]["reservations"][rid["reservation_id"]]) == before


@needs_shared
def test_every_imported_task_replays_its_gold_actions_to_reward_one() -> None:
    """The expert replays each task's gold calls (asking before writes, saying the outputs):
    1.0 on all 665 tasks, each ending by itself; the first tasks also replay every step from
    its msgpack snapshot and check determinism (``check_tasks``). About 2 s on one core."""
    tasks = _imported("train") + _imported("test")
    assert (len(tasks), sum(t["db"] == "tau-bench-airline" for t in tasks)) == (665, 50)
    cls = get_env_class("userrl/Tau-v0")
    for task in tasks:
        cls.validate_task(task)  # type: ignore[attr-defined]
    airline_first = sorted(tasks, key=lambda t: t["db"] != "tau-bench-airline")
    check_tasks("userrl/Tau-v0", airline_first[:2] + tasks)
