"""Authored TauGym retail domain (source of ``envs/data/tau/{retail_db.json,train,test}.jsonl``).

A small shop generated with a fixed seed: products with option variants, customers with
payment methods and addresses, and orders (pending or delivered). Tasks are built from
templates over that data (cancel, change a shipping or default address, return, exchange, ask
an order's total, and pairs of these); each has the customer's opening line, their identity,
the requests they state one by one, the gold tool calls and the outputs to tell.
"""

from __future__ import annotations

import random
from typing import Any

PRODUCTS: dict[str, dict[str, list[str]]] = {
    "T-Shirt": {"color": ["black", "white", "navy"], "size": ["S", "M", "L"]},
    "Running Shoes": {"color": ["red", "grey"], "size": ["8", "9", "10"]},
    "Water Bottle": {"capacity": ["500ml", "1000ml"], "material": ["steel", "plastic"]},
    "Desk Lamp": {"color": ["white", "black"], "power": ["USB", "mains"]},
    "Backpack": {"color": ["green", "black"], "size": ["small", "large"]},
    "Wireless Earbuds": {"color": ["white", "black"], "battery": ["6h", "10h"]},
    "Electric Kettle": {"capacity": ["1L", "1.7L"], "material": ["glass", "steel"]},
    "Yoga Mat": {"thickness": ["4mm", "6mm"], "color": ["purple", "blue"]},
    "Wall Clock": {"style": ["modern", "classic"], "diameter": ["25cm", "35cm"]},
    "Mechanical Keyboard": {"switch": ["linear", "clicky"], "layout": ["full", "compact"]},
}
FIRST = [
    "Omar",
    "Yusuf",
    "Mia",
    "Lena",
    "Ravi",
    "Sofia",
    "Chen",
    "Ines",
    "Noah",
    "Aisha",
    "Lucas",
    "Emma",
    "Kenji",
    "Olga",
    "Mateo",
    "Zara",
    "Ethan",
    "Priya",
    "Leo",
    "Hana",
]
LAST = [
    "Anderson",
    "Rossi",
    "Garcia",
    "Novak",
    "Kim",
    "Silva",
    "Muller",
    "Haddad",
    "Lopez",
    "Sato",
    "Brown",
    "Ivanova",
    "Costa",
    "Patel",
    "Berg",
]
STREETS = ["Maple Ave", "Oak St", "Pine Rd", "Elm Way", "Cedar Ln", "Lake Dr", "Hill St"]
CITIES = [
    ("Springfield", "62704"),
    ("Riverton", "19031"),
    ("Lakeside", "19122"),
    ("Fairview", "30301"),
    ("Georgetown", "78626"),
    ("Ashland", "97520"),
]
REASONS = {"no longer needed": "I don't need it anymore.", "ordered by mistake": "I ordered it by mistake."}


def _db(rng: random.Random) -> dict[str, list[dict[str, Any]]]:
    db: dict[str, list[dict[str, Any]]] = {
        k: [] for k in ("users", "payment_methods", "products", "items", "orders", "order_items")
    }
    for p, (name, opts) in enumerate(PRODUCTS.items()):
        pid = f"{1000000 + 7919 * (p + 1)}"
        db["products"].append({"product_id": pid, "name": name})
        (k1, v1), (k2, v2) = opts.items()
        for a in v1:
            for b in v2:
                db["items"].append(
                    {
                        "item_id": f"{rng.randint(10**9, 10**10 - 1)}",
                        "product_id": pid,
                        "options": {k1: a, k2: b},
                        "price": round(rng.uniform(9, 150), 2),
                        "available": int(rng.random() < 0.8),
                    }
                )
    names = sorted({(f, s) for f in FIRST for s in LAST})
    order_no = 1000
    for first, last in rng.sample(names, 30):
        city, zip_ = rng.choice(CITIES)
        uid = f"{first.lower()}_{last.lower()}_{rng.randint(1000, 9999)}"
        db["users"].append(
            {
                "user_id": uid,
                "first_name": first,
                "last_name": last,
                "zip": zip_,
                "email": f"{first.lower()}.{last.lower()}{rng.randint(1, 99)}@example.com",
                "address": f"{rng.randint(1, 999)} {rng.choice(STREETS)}, {city} {zip_}",
            }
        )
        card = f"credit_card_{rng.randint(1000000, 9999999)}"
        gift = f"gift_card_{rng.randint(1000000, 9999999)}"
        db["payment_methods"] += [
            {"payment_method_id": card, "user_id": uid, "description": f"Visa card ending in {card[-4:]}"},
            {"payment_method_id": gift, "user_id": uid, "description": "gift card"},
        ]
        for status in ["pending", "delivered", rng.choice(["pending", "delivered"])]:
            order_no += rng.randint(1, 40)
            oid = f"#W{order_no}"
            db["orders"].append(
                {
                    "order_id": oid,
                    "user_id": uid,
                    "status": status,
                    "address": db["users"][-1]["address"],
                    "payment_method_id": card,
                    "cancel_reason": None,
                    "refund_method_id": None,
                }
            )
            for item in rng.sample(db["items"], rng.randint(1, 3)):
                db["order_items"].append(
                    {
                        "order_id": oid,
                        "item_id": item["item_id"],
                        "price": item["price"],
                        "status": "ordered",
                        "new_item_id": None,
                    }
                )
    return db


class _Builder:
    def __init__(self, db: dict[str, list[dict[str, Any]]], rng: random.Random) -> None:
        self.db, self.rng = db, rng
        self.items = {i["item_id"]: i for i in db["items"]}
        self.pname = {p["product_id"]: p["name"] for p in db["products"]}

    def orders(self, uid: str, status: str) -> list[dict[str, Any]]:
        return [o for o in self.db["orders"] if o["user_id"] == uid and o["status"] == status]

    def lines(self, oid: str) -> list[dict[str, Any]]:
        return [x for x in self.db["order_items"] if x["order_id"] == oid]

    def describe(self, item_id: str) -> str:
        it = self.items[item_id]
        return f"{self.pname[it['product_id']]} ({', '.join(it['options'].values())})"

    def cancel(self, u: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]], list[str]]:
        o = self.rng.choice(self.orders(u["user_id"], "pending"))
        reason = self.rng.choice(list(REASONS))
        return (
            [f"Please cancel my order {o['order_id']}. {REASONS[reason]}"],
            [
                _c("get_order_details", order_id=o["order_id"]),
                _c("cancel_pending_order", order_id=o["order_id"], reason=reason),
            ],
            [],
        )

    def reroute(self, u: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]], list[str]]:
        o = self.rng.choice(self.orders(u["user_id"], "pending"))
        city, zip_ = self.rng.choice(CITIES)
        addr = f"{self.rng.randint(1, 999)} {self.rng.choice(STREETS)}, {city} {zip_}"
        return (
            [f"My order {o['order_id']} should go to {addr} instead of my usual address."],
            [
                _c("get_order_details", order_id=o["order_id"]),
                _c("modify_pending_order_address", order_id=o["order_id"], address=addr),
            ],
            [],
        )

    def move(self, u: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]], list[str]]:
        city, zip_ = self.rng.choice(CITIES)
        addr = f"{self.rng.randint(1, 999)} {self.rng.choice(STREETS)}, {city} {zip_}"
        return (
            [f"I moved. Please update my default address to {addr}."],
            [_c("modify_user_address", user_id=u["user_id"], address=addr)],
            [],
        )

    def total(self, u: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]], list[str]]:
        o = self.rng.choice(self.orders(u["user_id"], "delivered") + self.orders(u["user_id"], "pending"))
        total = round(sum(x["price"] for x in self.lines(o["order_id"])), 2)
        return (
            [f"How much did I pay in total for order {o['order_id']}?"],
            [_c("get_order_details", order_id=o["order_id"])],
            [f"{total:.2f}"],
        )

    def _refund(self, u: dict[str, Any]) -> tuple[str, str]:
        pm = [p for p in self.db["payment_methods"] if p["user_id"] == u["user_id"]]
        p = self.rng.choice(pm)
        return p["payment_method_id"], (
            "my gift card" if "gift" in p["payment_method_id"] else f"my {p['description']}"
        )

    def ret(self, u: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]], list[str]]:
        o = self.rng.choice(self.orders(u["user_id"], "delivered"))
        lines = self.lines(o["order_id"])
        chosen = sorted(x["item_id"] for x in self.rng.sample(lines, self.rng.randint(1, len(lines))))
        pm, said = self._refund(u)
        what = " and the ".join(self.describe(i) for i in chosen)
        return (
            [f"I want to return the {what} from order {o['order_id']}.", f"Please refund the money to {said}."],
            [
                _c("get_order_details", order_id=o["order_id"]),
                _c("get_user_details", user_id=u["user_id"]),
                _c("return_delivered_order_items", order_id=o["order_id"], item_ids=chosen, payment_method_id=pm),
            ],
            [],
        )

    def exchange(self, u: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]], list[str]] | None:
        o = self.rng.choice(self.orders(u["user_id"], "delivered"))
        for line in self.rng.sample(self.lines(o["order_id"]), len(self.lines(o["order_id"]))):
            old = self.items[line["item_id"]]
            alts = [
                i
                for i in self.db["items"]
                if i["product_id"] == old["product_id"] and i["available"] and i["item_id"] != old["item_id"]
            ]
            if not alts:
                continue
            new = self.rng.choice(alts)
            pm, said = self._refund(u)
            return (
                [
                    f"I'd like to exchange the {self.describe(old['item_id'])} from order "
                    f"{o['order_id']} for the {', '.join(new['options'].values())} version.",
                    f"Use {said} for any price difference.",
                ],
                [
                    _c("get_order_details", order_id=o["order_id"]),
                    _c("get_product_details", product_id=old["product_id"]),
                    _c("get_user_details", user_id=u["user_id"]),
                    _c(
                        "exchange_delivered_order_items",
                        order_id=o["order_id"],
                        item_ids=[old["item_id"]],
                        new_item_ids=[new["item_id"]],
                        payment_method_id=pm,
                    ),
                ],
                [],
            )
        return None


def _c(name: str, **arguments: Any) -> dict[str, Any]:
    return {"name": name, "arguments": arguments}


OPENINGS = {
    "cancel": "Hi, I need to cancel an order.",
    "reroute": "Hello, I need to change where an order is shipped.",
    "move": "Hi! I need to update my account details.",
    "total": "Hi, I have a question about an order.",
    "ret": "Hi there! I'm looking to return some items.",
    "exchange": "Hello! I'd like to exchange something I received.",
}
KINDS = ["cancel", "reroute", "move", "total", "ret", "exchange", "ret+total", "cancel+move", "exchange+cancel"]


def _task(b: _Builder, kind: str) -> dict[str, Any] | None:
    u = b.rng.choice(b.db["users"])
    by_email = b.rng.random() < 0.3
    find = (
        _c("find_user_id_by_email", email=u["email"])
        if by_email
        else _c("find_user_id_by_name_zip", first_name=u["first_name"], last_name=u["last_name"], zip=u["zip"])
    )
    requests, actions, outputs = [], [find], []
    for part in kind.split("+"):
        made = getattr(b, part)(u)
        if made is None:
            return None
        requests += made[0]
        actions += [a for a in made[1] if a not in actions]
        outputs += made[2]
    written = [
        a["arguments"].get("order_id")
        for a in actions
        if a["name"]
        in (
            "cancel_pending_order",
            "modify_pending_order_address",
            "return_delivered_order_items",
            "exchange_delivered_order_items",
        )
    ]
    if len(written) != len(set(written)):
        return None
    customer = {k: u[k] for k in ("first_name", "last_name", "zip", "email")}
    return {
        "opening": OPENINGS[kind.split("+")[0]],
        "customer": customer,
        "kind": kind,
        "identify_by": "email" if by_email else "zip",
        "requests": requests,
        "actions": actions,
        "outputs": outputs,
        "instruction": f"You are {u['first_name']} {u['last_name']}. " + " ".join(requests),
    }


def build(seed: int, n_train: int = 45, n_test: int = 15) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """The base database and the tasks per split."""
    rng = random.Random(seed)
    db = _db(rng)
    b = _Builder(db, rng)
    tasks: list[dict[str, Any]] = []
    i = 0
    while len(tasks) < n_train + n_test:
        task = _task(b, KINDS[i % len(KINDS)])
        i += 1
        if task is not None:
            tasks.append(task)
    out: dict[str, list[dict[str, Any]]] = {"train": [], "test": []}
    for j, task in enumerate(tasks):
        split = "test" if (j % 4 == 3 or len(out["train"]) >= n_train) else "train"
        if len(out["test"]) >= n_test:
            split = "train"
        out[split].append({"id": f"tau-{split}-{len(out[split]) + 1:03d}", **task})
    return db, out
