"""TauGym's retail tools: what the agent can call, run against one episode's SQLite copy.

Tool names and arguments follow τ-bench's retail domain. Read tools return data; write tools
change the database and are recorded in the episode state (see ``_tau_db``). Every failure
is a :class:`ToolError` whose message the agent sees.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable
from typing import Any

from userrl.envs.gyms.function import evaluate_rule

CANCEL_REASONS = ("no longer needed", "ordered by mistake")


class ToolError(ValueError):
    """A tool call that cannot be carried out (bad arguments, wrong order status, ...)."""


def _one(conn: sqlite3.Connection, sql: str, args: tuple[Any, ...], what: str) -> sqlite3.Row:
    row = conn.execute(sql, args).fetchone()
    if row is None:
        raise ToolError(f"{what} not found")
    return row


def find_user_id_by_name_zip(conn: sqlite3.Connection, first_name: str, last_name: str, zip: str) -> str:  # noqa: A002
    row = _one(
        conn,
        "SELECT user_id FROM users WHERE lower(first_name)=lower(?) AND lower(last_name)=lower(?) AND zip=?",
        (first_name, last_name, zip),
        "user",
    )
    return str(row["user_id"])


def find_user_id_by_email(conn: sqlite3.Connection, email: str) -> str:
    return str(_one(conn, "SELECT user_id FROM users WHERE lower(email)=lower(?)", (email,), "user")["user_id"])


def get_user_details(conn: sqlite3.Connection, user_id: str) -> dict[str, Any]:
    u = dict(_one(conn, "SELECT * FROM users WHERE user_id=?", (user_id,), "user"))
    u["payment_methods"] = [
        dict(r)
        for r in conn.execute(
            "SELECT payment_method_id, description FROM payment_methods WHERE user_id=? ORDER BY payment_method_id",
            (user_id,),
        )
    ]
    u["orders"] = [
        r[0] for r in conn.execute("SELECT order_id FROM orders WHERE user_id=? ORDER BY order_id", (user_id,))
    ]
    return u


def get_order_details(conn: sqlite3.Connection, order_id: str) -> dict[str, Any]:
    o = dict(_one(conn, "SELECT * FROM orders WHERE order_id=?", (order_id,), "order"))
    o["items"] = [
        {**{k: v for k, v in dict(r).items() if v is not None}, "options": json.loads(r["options"])}
        for r in conn.execute(
            "SELECT oi.item_id, p.name, i.product_id, i.options, oi.price, oi.status, oi.new_item_id "
            "FROM order_items oi JOIN items i USING (item_id) JOIN products p USING (product_id) "
            "WHERE oi.order_id=? ORDER BY oi.item_id",
            (order_id,),
        )
    ]
    return {k: v for k, v in o.items() if v is not None}


def get_product_details(conn: sqlite3.Connection, product_id: str) -> dict[str, Any]:
    p = dict(_one(conn, "SELECT * FROM products WHERE product_id=?", (product_id,), "product"))
    p["variants"] = [
        {
            "item_id": r["item_id"],
            "options": json.loads(r["options"]),
            "price": r["price"],
            "available": bool(r["available"]),
        }
        for r in conn.execute("SELECT * FROM items WHERE product_id=? ORDER BY item_id", (product_id,))
    ]
    return p


def list_all_product_types(conn: sqlite3.Connection) -> dict[str, str]:
    return {name: pid for pid, name in conn.execute("SELECT product_id, name FROM products ORDER BY name")}


def calculate(conn: sqlite3.Connection, expression: str) -> float:
    try:
        return round(evaluate_rule(expression, [0, 0, 0, 0]), 2)
    except (ValueError, ZeroDivisionError, OverflowError) as exc:
        raise ToolError(f"cannot calculate {expression!r}: {exc}") from exc


def _order(conn: sqlite3.Connection, order_id: str, status: str) -> sqlite3.Row:
    o = _one(conn, "SELECT * FROM orders WHERE order_id=?", (order_id,), "order")
    if o["status"] != status:
        raise ToolError(f"order {order_id} is {o['status']}, not {status}")
    return o


def _own_method(conn: sqlite3.Connection, user_id: str, method: str) -> None:
    _one(
        conn,
        "SELECT 1 FROM payment_methods WHERE payment_method_id=? AND user_id=?",
        (method, user_id),
        f"payment method {method} of this user",
    )


def _order_items(conn: sqlite3.Connection, order_id: str, item_ids: list[str]) -> None:
    if not item_ids or len(set(item_ids)) != len(item_ids):
        raise ToolError("item_ids must be a non-empty list without duplicates")
    for it in item_ids:
        _one(
            conn,
            "SELECT 1 FROM order_items WHERE order_id=? AND item_id=? AND status='ordered'",
            (order_id, it),
            f"item {it} in order {order_id}",
        )


def cancel_pending_order(conn: sqlite3.Connection, order_id: str, reason: str) -> dict[str, Any]:
    _order(conn, order_id, "pending")
    if reason not in CANCEL_REASONS:
        raise ToolError(f"reason must be one of {list(CANCEL_REASONS)}")
    conn.execute("UPDATE orders SET status='cancelled', cancel_reason=? WHERE order_id=?", (reason, order_id))
    return get_order_details(conn, order_id)


def modify_pending_order_address(conn: sqlite3.Connection, order_id: str, address: str) -> dict[str, Any]:
    _order(conn, order_id, "pending")
    conn.execute("UPDATE orders SET address=? WHERE order_id=?", (address.strip(), order_id))
    return get_order_details(conn, order_id)


def modify_user_address(conn: sqlite3.Connection, user_id: str, address: str) -> dict[str, Any]:
    _one(conn, "SELECT 1 FROM users WHERE user_id=?", (user_id,), "user")
    conn.execute("UPDATE users SET address=? WHERE user_id=?", (address.strip(), user_id))
    return get_user_details(conn, user_id)


def return_delivered_order_items(
    conn: sqlite3.Connection, order_id: str, item_ids: list[str], payment_method_id: str
) -> dict[str, Any]:
    o = _order(conn, order_id, "delivered")
    _order_items(conn, order_id, item_ids)
    _own_method(conn, o["user_id"], payment_method_id)
    conn.executemany(
        "UPDATE order_items SET status='return requested' WHERE order_id=? AND item_id=?",
        [(order_id, it) for it in item_ids],
    )
    conn.execute(
        "UPDATE orders SET status='return requested', refund_method_id=? WHERE order_id=?",
        (payment_method_id, order_id),
    )
    return get_order_details(conn, order_id)


def exchange_delivered_order_items(
    conn: sqlite3.Connection, order_id: str, item_ids: list[str], new_item_ids: list[str], payment_method_id: str
) -> dict[str, Any]:
    o = _order(conn, order_id, "delivered")
    _order_items(conn, order_id, item_ids)
    if len(new_item_ids) != len(item_ids):
        raise ToolError("new_item_ids must pair one new item with each item_id")
    for old, new in zip(item_ids, new_item_ids, strict=True):
        a = _one(conn, "SELECT product_id FROM items WHERE item_id=?", (old,), f"item {old}")
        b = _one(conn, "SELECT product_id, available FROM items WHERE item_id=?", (new,), f"item {new}")
        if a["product_id"] != b["product_id"] or not b["available"] or old == new:
            raise ToolError(f"{new} is not an available variant of the same product as {old}")
    _own_method(conn, o["user_id"], payment_method_id)
    conn.executemany(
        "UPDATE order_items SET status='exchange requested', new_item_id=? WHERE order_id=? AND item_id=?",
        [(new, order_id, old) for old, new in zip(item_ids, new_item_ids, strict=True)],
    )
    conn.execute(
        "UPDATE orders SET status='exchange requested', refund_method_id=? WHERE order_id=?",
        (payment_method_id, order_id),
    )
    return get_order_details(conn, order_id)


def transfer_to_human_agents(conn: sqlite3.Connection, summary: str) -> str:
    return "Transfer requested. A human agent will take over; you may end the conversation."


Tool = Callable[..., Any]
READ_TOOLS: dict[str, Tool] = {
    f.__name__: f
    for f in (
        find_user_id_by_name_zip,
        find_user_id_by_email,
        get_user_details,
        get_order_details,
        get_product_details,
        list_all_product_types,
        calculate,
        transfer_to_human_agents,
    )
}
WRITE_TOOLS: dict[str, Tool] = {
    f.__name__: f
    for f in (
        cancel_pending_order,
        modify_pending_order_address,
        modify_user_address,
        return_delivered_order_items,
        exchange_delivered_order_items,
    )
}
TOOLS = {**READ_TOOLS, **WRITE_TOOLS}
ARGS: dict[str, tuple[str, ...]] = {
    name: tuple(f.__code__.co_varnames[1 : f.__code__.co_argcount]) for name, f in TOOLS.items()
}
DESCRIPTIONS = {
    "find_user_id_by_name_zip": "the user id of a customer, from first name, last name and zip",
    "find_user_id_by_email": "the user id of a customer, from their email",
    "get_user_details": "a customer's address, email, payment methods and order ids",
    "get_order_details": "an order's status, address, payment method and items",
    "get_product_details": "a product's variants (item ids, options, prices, availability)",
    "list_all_product_types": "every product name with its product id",
    "calculate": "evaluate an arithmetic expression (numbers, + - * / and parentheses)",
    "transfer_to_human_agents": "hand the customer to a human agent, with a summary",
    "cancel_pending_order": f"cancel a pending order; reason is one of {list(CANCEL_REASONS)}",
    "modify_pending_order_address": "change the shipping address of a pending order",
    "modify_user_address": "change a customer's default address",
    "return_delivered_order_items": "return items of a delivered order, refunded to a payment method of the customer",
    "exchange_delivered_order_items": "exchange items of a delivered order for other available "
    "variants of the same products (paired lists); the price "
    "difference goes to the given payment method",
}


def tool_list() -> str:
    return "\n".join(f"- {n}({', '.join(ARGS[n])}): {DESCRIPTIONS[n]}" for n in TOOLS)


def call_tool(conn: sqlite3.Connection, name: str, arguments: dict[str, Any]) -> Any:
    """Run one tool; arguments must be exactly the tool's (``ARGS``)."""
    if name not in TOOLS:
        raise ToolError(f"unknown tool {name!r}; call [search] tools for the list")
    want = set(ARGS[name])
    if set(arguments) != want:
        raise ToolError(f"{name} takes the arguments {sorted(want)}, got {sorted(arguments)}")
    try:
        return TOOLS[name](conn, **arguments)
    except (TypeError, sqlite3.Error, AttributeError) as exc:
        raise ToolError(f"{name} failed: {exc}") from exc


_CALL = re.compile(r"^\s*([a-z_]+)\s*(\{.*\})?\s*$", re.DOTALL)


def parse_call(text: str) -> tuple[str, dict[str, Any]] | None:
    """``name {json}``, ``name`` alone, or ``{"name": ..., "arguments": {...}}``; None if neither."""
    text = text.strip()
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            return None
        if isinstance(obj, dict) and isinstance(obj.get("name"), str):
            args = obj.get("arguments", {})
            return (obj["name"], args) if isinstance(args, dict) else None
        return None
    m = _CALL.match(text)
    if not m:
        return None
    try:
        args = json.loads(m.group(2)) if m.group(2) else {}
    except json.JSONDecodeError:
        return None
    return (m.group(1), args) if isinstance(args, dict) else None
