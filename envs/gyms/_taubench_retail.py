"""τ-bench's retail tools, our implementation of their documented behaviour.

Tables: ``users`` (name, address, email, payment_methods by id, order ids), ``orders``
(status, address, items, fulfillments, payment_history) and ``products`` (variants by item
id). Every check runs before the first change, in τ-bench's order, with its error messages.
Refund rules as in τ-bench: a cancelled order refunds every payment, to a gift card at once
(its balance grows), otherwise later (only recorded); a modification's price difference is
paid or refunded on the given method; a return or exchange is only requested (status and the
items are recorded; the money moves later).
"""

from __future__ import annotations

import copy
import json
from typing import Any

from userrl.envs.gyms._taubench_db import EpisodeDB
from userrl.envs.gyms._taubench_tools import COMMON, Tool, ToolError

ADDRESS = ("address1", "address2", "city", "state", "country", "zip")
CANCEL_REASONS = ("no longer needed", "ordered by mistake")


def _need(db: EpisodeDB, table: str, key: str, what: str) -> Any:
    record = db.get(table, key)
    if record is None:
        raise ToolError(f"{what} not found")
    return record


def _order(db: EpisodeDB, order_id: str, status: str, verb: str) -> Any:
    order = _need(db, "orders", order_id, "order")
    if order["status"] != status:
        raise ToolError(f"non-{status} order cannot be {verb}")
    return order


def _method(db: EpisodeDB, order: Any, payment_method_id: str) -> Any:
    method = db.get("users", order["user_id"])["payment_methods"].get(payment_method_id)
    if method is None:
        raise ToolError("payment method not found")
    return method


def _check_items(order: Any, item_ids: list[str], message: str | None = None) -> None:
    """Each id at most as often as the order holds it (lists may repeat an id)."""
    held = [it["item_id"] for it in order["items"]]
    for it in item_ids:
        if item_ids.count(it) > held.count(it):
            raise ToolError(message or f"{it} not found")


def _price_difference(db: EpisodeDB, order: Any, item_ids: list[str], new_item_ids: list[str]) -> float:
    if len(item_ids) != len(new_item_ids):
        raise ToolError("the number of items to be exchanged should match")
    diff = 0.0
    for old, new in zip(item_ids, new_item_ids, strict=True):
        item = next(it for it in order["items"] if it["item_id"] == old)
        product = db.get("products", item["product_id"]) or {"variants": {}}
        variant = product["variants"].get(new)
        if variant is None or not variant["available"]:
            raise ToolError(f"new item {new} not found or available")
        diff += variant["price"] - item["price"]
    return diff


# -- read tools --------------------------------------------------------------------------------
def find_user_id_by_email(db: EpisodeDB, email: str) -> str:
    for user_id, user in db.items("users"):
        if user["email"].lower() == email.lower():
            return str(user_id)
    raise ToolError("user not found")


def find_user_id_by_name_zip(db: EpisodeDB, first_name: str, last_name: str, zip: str) -> str:  # noqa: A002
    for user_id, user in db.items("users"):
        if (
            user["name"]["first_name"].lower() == first_name.lower()
            and user["name"]["last_name"].lower() == last_name.lower()
            and user["address"]["zip"] == zip
        ):
            return str(user_id)
    raise ToolError("user not found")


def get_user_details(db: EpisodeDB, user_id: str) -> str:
    return json.dumps(_need(db, "users", user_id, "user"))


def get_order_details(db: EpisodeDB, order_id: str) -> str:
    return json.dumps(_need(db, "orders", order_id, "order"))


def get_product_details(db: EpisodeDB, product_id: str) -> str:
    return json.dumps(_need(db, "products", product_id, "product"))


def list_all_product_types(db: EpisodeDB) -> str:
    names = {p["name"]: p["product_id"] for _, p in db.items("products")}
    return json.dumps(dict(sorted(names.items())))


# -- write tools -------------------------------------------------------------------------------
def cancel_pending_order(db: EpisodeDB, order_id: str, reason: str) -> str:
    order = _order(db, order_id, "pending", "cancelled")
    if reason not in CANCEL_REASONS:
        raise ToolError("invalid reason")
    for p in order["payment_history"]:
        if "gift_card" in p["payment_method_id"]:
            _method(db, order, p["payment_method_id"])
    order = db.edit("orders", order_id)
    refunds = [
        {"transaction_type": "refund", "amount": p["amount"], "payment_method_id": p["payment_method_id"]}
        for p in order["payment_history"]
    ]
    for r in refunds:  # a gift card is refunded at once; other methods take days (not modelled)
        if "gift_card" in r["payment_method_id"]:
            card = db.edit("users", order["user_id"])["payment_methods"][r["payment_method_id"]]
            card["balance"] = round(card["balance"] + r["amount"], 2)
    order["status"], order["cancel_reason"] = "cancelled", reason
    order["payment_history"].extend(refunds)
    return json.dumps(order)


def modify_pending_order_address(
    db: EpisodeDB, order_id: str, address1: str, address2: str, city: str, state: str, country: str, zip: str
) -> str:  # noqa: A002
    _order(db, order_id, "pending", "modified")
    order = db.edit("orders", order_id)
    order["address"] = dict(zip_fields(address1, address2, city, state, country, zip))
    return json.dumps(order)


def zip_fields(*values: str) -> list[tuple[str, str]]:
    return list(zip(ADDRESS, values, strict=True))


def modify_user_address(
    db: EpisodeDB, user_id: str, address1: str, address2: str, city: str, state: str, country: str, zip: str
) -> str:  # noqa: A002
    _need(db, "users", user_id, "user")
    user = db.edit("users", user_id)
    user["address"] = dict(zip_fields(address1, address2, city, state, country, zip))
    return json.dumps(user)


def modify_pending_order_payment(db: EpisodeDB, order_id: str, payment_method_id: str) -> str:
    order = _order(db, order_id, "pending", "modified")
    method = _method(db, order, payment_method_id)
    history = order["payment_history"]
    if len(history) > 1 or history[0]["transaction_type"] != "payment":
        raise ToolError("there should be exactly one payment for a pending order")
    old_id, amount = history[0]["payment_method_id"], history[0]["amount"]
    if old_id == payment_method_id:
        raise ToolError("the new payment method should be different from the current one")
    if method["source"] == "gift_card" and method["balance"] < amount:
        raise ToolError("insufficient gift card balance to pay for the order")
    if "gift_card" in old_id:
        _method(db, order, old_id)
    order = db.edit("orders", order_id)
    order["payment_history"].extend(
        [
            {"transaction_type": "payment", "amount": amount, "payment_method_id": payment_method_id},
            {"transaction_type": "refund", "amount": amount, "payment_method_id": old_id},
        ]
    )
    methods = db.edit("users", order["user_id"])["payment_methods"]
    if methods[payment_method_id]["source"] == "gift_card":
        methods[payment_method_id]["balance"] = round(methods[payment_method_id]["balance"] - amount, 2)
    if "gift_card" in old_id:
        methods[old_id]["balance"] = round(methods[old_id]["balance"] + amount, 2)
    return json.dumps(order)


def modify_pending_order_items(
    db: EpisodeDB, order_id: str, item_ids: list[str], new_item_ids: list[str], payment_method_id: str
) -> str:
    order = _order(db, order_id, "pending", "modified")
    _check_items(order, item_ids)
    diff = _price_difference(db, order, item_ids, new_item_ids)  # unrounded, as τ-bench
    method = _method(db, order, payment_method_id)
    if method["source"] == "gift_card" and method["balance"] < diff:
        raise ToolError("insufficient gift card balance to pay for the new item")
    order = db.edit("orders", order_id)
    order["payment_history"].append(
        {
            "transaction_type": "payment" if diff > 0 else "refund",
            "amount": abs(diff),
            "payment_method_id": payment_method_id,
        }
    )
    if method["source"] == "gift_card":
        card = db.edit("users", order["user_id"])["payment_methods"][payment_method_id]
        card["balance"] = round(card["balance"] - diff, 2)
    for old, new in zip(item_ids, new_item_ids, strict=True):
        item = next(it for it in order["items"] if it["item_id"] == old)
        variant = db.get("products", item["product_id"])["variants"][new]
        item["item_id"], item["price"] = new, variant["price"]
        item["options"] = copy.deepcopy(variant["options"])
    order["status"] = "pending (item modified)"
    return json.dumps(order)


def return_delivered_order_items(db: EpisodeDB, order_id: str, item_ids: list[str], payment_method_id: str) -> str:
    order = _order(db, order_id, "delivered", "returned")
    _method(db, order, payment_method_id)
    if "gift_card" not in payment_method_id and payment_method_id != order["payment_history"][0]["payment_method_id"]:
        raise ToolError("payment method should be either the original payment method or a gift card")
    _check_items(order, item_ids, "some item not found")
    order = db.edit("orders", order_id)
    order["status"] = "return requested"
    order["return_items"] = sorted(item_ids)
    order["return_payment_method_id"] = payment_method_id
    return json.dumps(order)


def exchange_delivered_order_items(
    db: EpisodeDB, order_id: str, item_ids: list[str], new_item_ids: list[str], payment_method_id: str
) -> str:
    order = _order(db, order_id, "delivered", "exchanged")
    _check_items(order, item_ids)
    diff = round(_price_difference(db, order, item_ids, new_item_ids), 2)
    method = _method(db, order, payment_method_id)
    if method["source"] == "gift_card" and method["balance"] < diff:
        raise ToolError("insufficient gift card balance to pay for the price difference")
    order = db.edit("orders", order_id)
    order["status"] = "exchange requested"
    order["exchange_items"], order["exchange_new_items"] = sorted(item_ids), sorted(new_item_ids)
    order["exchange_payment_method_id"] = payment_method_id
    order["exchange_price_difference"] = diff
    return json.dumps(order)


_ID = {"order_id": "string"}
_ADDR = dict.fromkeys(ADDRESS, "string")
TOOLS: dict[str, Tool] = {
    t.name: t
    for t in (
        *COMMON,
        Tool(find_user_id_by_email, {"email": "string"}, "a customer's user id from their email"),
        Tool(
            find_user_id_by_name_zip,
            {"first_name": "string", "last_name": "string", "zip": "string"},
            "a customer's user id from first name, last name and zip code",
        ),
        Tool(
            get_user_details,
            {"user_id": "string"},
            "a customer's profile: name, address, email, payment methods, order ids",
        ),
        Tool(get_order_details, _ID, "an order's status, address, items, fulfillments and payments"),
        Tool(
            get_product_details,
            {"product_id": "string"},
            "a product's variants (item ids, options, price, availability); not an item id",
        ),
        Tool(list_all_product_types, {}, "every product name with its product id (50 products)"),
        Tool(
            cancel_pending_order,
            {**_ID, "reason": "string"},
            f"cancel a pending order; reason is one of {list(CANCEL_REASONS)}; every payment is "
            "refunded (to a gift card at once, otherwise in 5-7 business days)",
            write=True,
        ),
        Tool(
            modify_pending_order_address, {**_ID, **_ADDR}, "change the shipping address of a pending order", write=True
        ),
        Tool(
            modify_pending_order_items,
            {**_ID, "item_ids": "strings", "new_item_ids": "strings", "payment_method_id": "string"},
            "swap items of a pending order for other variants of the same products (paired "
            "lists; once per order); the price difference is paid or refunded on the method",
            write=True,
        ),
        Tool(
            modify_pending_order_payment,
            {**_ID, "payment_method_id": "string"},
            "pay a pending order with another of the customer's payment methods",
            write=True,
        ),
        Tool(modify_user_address, {"user_id": "string", **_ADDR}, "change a customer's default address", write=True),
        Tool(
            return_delivered_order_items,
            {**_ID, "item_ids": "strings", "payment_method_id": "string"},
            "request the return of items of a delivered order; the refund goes to the original "
            "payment method or a gift card",
            write=True,
        ),
        Tool(
            exchange_delivered_order_items,
            {**_ID, "item_ids": "strings", "new_item_ids": "strings", "payment_method_id": "string"},
            "request an exchange of items of a delivered order for available variants of the "
            "same products (paired lists); the price difference goes to the method",
            write=True,
        ),
    )
}
