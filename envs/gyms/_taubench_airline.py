"""τ-bench's airline tools, our implementation of their documented behaviour.

Tables: ``users`` (profile, payment_methods by id: credit cards, gift cards and certificates
with an ``amount``, saved passengers, reservation ids), ``reservations`` (flights with their
prices, passengers, payment_history, baggage, insurance) and ``flights`` (route, schedule and,
per date, a status with seats and prices when ``available``). As in τ-bench: booking charges
each flight's cabin price per passenger, 30 per passenger for insurance and 50 per non-free
bag, and the payments must add up exactly; a gift card's amount is reduced, a used
certificate is removed; cancelling appends the negated payments (no balance changes); changes
cannot be paid by certificate; no tool changes the flights table (seats are not decremented).

Deliberate difference: ``search_onestop_flight`` looks up the connecting flight on its own
date (the next day when the first leg arrives after midnight). τ-bench shows the first day's
seats and prices for it and builds an unpadded next date (``2024-05-6``), so it misses
overnight connections before the 10th. Searches change nothing, so rewards are unaffected.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from userrl.envs.gyms._taubench_db import EpisodeDB
from userrl.envs.gyms._taubench_tools import COMMON, Tool, ToolError

AIRPORTS = {
    "SFO": "San Francisco",
    "JFK": "New York",
    "LAX": "Los Angeles",
    "ORD": "Chicago",
    "DFW": "Dallas",
    "DEN": "Denver",
    "SEA": "Seattle",
    "ATL": "Atlanta",
    "MIA": "Miami",
    "BOS": "Boston",
    "PHX": "Phoenix",
    "IAH": "Houston",
    "LAS": "Las Vegas",
    "MCO": "Orlando",
    "EWR": "Newark",
    "CLT": "Charlotte",
    "MSP": "Minneapolis",
    "DTW": "Detroit",
    "PHL": "Philadelphia",
    "LGA": "LaGuardia",
}
#: ids τ-bench gives new reservations and certificates (it assumes at most 3 per task)
NEW_RESERVATIONS = ("HATHAT", "HATHAU", "HATHAV")
NEW_CERTIFICATES = ("certificate_3221322", "certificate_3221323", "certificate_3221324")
BOOKED_AT = "2024-05-15T15:00:00"


def _need(db: EpisodeDB, table: str, key: str, what: str) -> Any:
    record = db.get(table, key)
    if record is None:
        raise ToolError(f"{what} not found")
    return record


def _priced(db: EpisodeDB, flight: dict[str, Any], cabin: str, seats: int) -> None:
    """Fill ``flight`` ({flight_number, date}) with its price and route; ToolError if the
    flight is not bookable for ``seats`` passengers in ``cabin``."""
    number = flight["flight_number"]
    data = db.get("flights", number)
    if data is None:
        raise ToolError(f"flight {number} not found")
    day = data["dates"].get(flight["date"])
    if day is None:
        raise ToolError(f"flight {number} not found on date {flight['date']}")
    if day["status"] != "available":
        raise ToolError(f"flight {number} not available on date {flight['date']}")
    if cabin not in day["available_seats"]:
        raise ToolError(f"unknown cabin {cabin!r}")
    if day["available_seats"][cabin] < seats:
        raise ToolError(f"not enough seats on flight {number}")
    flight.update(price=day["prices"][cabin], origin=data["origin"], destination=data["destination"])


def _change_method(db: EpisodeDB, user_id: str, payment_id: str, amount: float) -> Any:
    method = db.get("users", user_id)["payment_methods"].get(payment_id)
    if method is None:
        raise ToolError("payment method not found")
    if method["source"] == "certificate":
        raise ToolError("certificate cannot be used to update reservation")
    if method["source"] == "gift_card" and method["amount"] < amount:
        raise ToolError("gift card balance is not enough")
    return method


def _charge(db: EpisodeDB, reservation_id: str, payment_id: str, amount: float) -> Any:
    reservation = db.edit("reservations", reservation_id)
    methods = db.edit("users", reservation["user_id"])["payment_methods"]
    if methods[payment_id]["source"] == "gift_card":
        methods[payment_id]["amount"] -= amount
    if amount != 0:
        reservation["payment_history"].append({"payment_id": payment_id, "amount": amount})
    return reservation


# -- read tools --------------------------------------------------------------------------------
def get_user_details(db: EpisodeDB, user_id: str) -> str:
    return json.dumps(_need(db, "users", user_id, "user"))


def get_reservation_details(db: EpisodeDB, reservation_id: str) -> str:
    return json.dumps(_need(db, "reservations", reservation_id, "reservation"))


def list_all_airports(db: EpisodeDB) -> str:
    return json.dumps(AIRPORTS)


def _on(flight: dict[str, Any], date: str) -> dict[str, Any]:
    out = {k: v for k, v in flight.items() if k != "dates"}
    return {**out, **flight["dates"][date], "date": date}


def search_direct_flight(db: EpisodeDB, origin: str, destination: str, date: str) -> str:
    found = []
    for _, f in db.items("flights"):
        if (f["origin"], f["destination"]) == (origin, destination) and f["dates"].get(date, {}).get(
            "status"
        ) == "available":
            found.append({k: v for k, v in _on(f, date).items() if k != "date"})
    return json.dumps(found)


def _next_day(date: str) -> str:
    try:
        return (dt.date.fromisoformat(date) + dt.timedelta(days=1)).isoformat()
    except ValueError as exc:
        raise ToolError(f"date must be YYYY-MM-DD, got {date!r}") from exc


def search_onestop_flight(db: EpisodeDB, origin: str, destination: str, date: str) -> str:
    flights = [f for _, f in db.items("flights")]
    found = []
    for first in (f for f in flights if f["origin"] == origin):
        overnight = "+1" in first["scheduled_arrival_time_est"]
        date2 = _next_day(date) if overnight else date
        for second in flights:
            if second["destination"] != destination or second["origin"] != first["destination"]:
                continue
            # τ-bench's connection rule: compares the schedule strings as they are
            if first["scheduled_arrival_time_est"] > second["scheduled_departure_time_est"]:
                continue
            if (
                first["dates"].get(date, {}).get("status") == "available"
                and second["dates"].get(date2, {}).get("status") == "available"
            ):
                found.append([_on(first, date), _on(second, date2)])
    return json.dumps(found)


# -- write tools -------------------------------------------------------------------------------
def book_reservation(
    db: EpisodeDB,
    user_id: str,
    origin: str,
    destination: str,
    flight_type: str,
    cabin: str,
    flights: list[dict[str, Any]],
    passengers: list[dict[str, Any]],
    payment_methods: list[dict[str, Any]],
    total_baggages: int,
    nonfree_baggages: int,
    insurance: str,
) -> str:
    user = _need(db, "users", user_id, "user")
    reservation_id = next((r for r in NEW_RESERVATIONS if db.get("reservations", r) is None), NEW_RESERVATIONS[-1])
    total: float = 0  # an int while prices are, as τ-bench's (amounts are compared and stored)
    for flight in flights:
        _priced(db, flight, cabin, len(passengers))
        total += flight["price"] * len(passengers)
    total += (30 * len(passengers) if insurance == "yes" else 0) + 50 * nonfree_baggages
    for p in payment_methods:
        method = user["payment_methods"].get(p["payment_id"])
        if method is None:
            raise ToolError(f"payment method {p['payment_id']} not found")
        if method["source"] in ("gift_card", "certificate") and method["amount"] < p["amount"]:
            raise ToolError(f"not enough balance in payment method {p['payment_id']}")
    paid = sum(p["amount"] for p in payment_methods)
    if paid != total:
        raise ToolError(f"payment amount does not add up, total price is {total}, but paid {paid}")
    certificates = [
        p["payment_id"] for p in payment_methods if user["payment_methods"][p["payment_id"]]["source"] == "certificate"
    ]
    if len(set(certificates)) != len(certificates):  # τ-bench fails half-way on this one
        raise ToolError("a certificate can pay once")
    user = db.edit("users", user_id)
    for p in payment_methods:
        if user["payment_methods"][p["payment_id"]]["source"] == "gift_card":
            user["payment_methods"][p["payment_id"]]["amount"] -= p["amount"]
        elif user["payment_methods"][p["payment_id"]]["source"] == "certificate":
            del user["payment_methods"][p["payment_id"]]
    reservation = {
        "reservation_id": reservation_id,
        "user_id": user_id,
        "origin": origin,
        "destination": destination,
        "flight_type": flight_type,
        "cabin": cabin,
        "flights": flights,
        "passengers": passengers,
        "payment_history": payment_methods,
        "created_at": BOOKED_AT,
        "total_baggages": total_baggages,
        "nonfree_baggages": nonfree_baggages,
        "insurance": insurance,
    }
    db.add("reservations", reservation_id, reservation)
    user["reservations"].append(reservation_id)
    return json.dumps(reservation)


def cancel_reservation(db: EpisodeDB, reservation_id: str) -> str:
    _need(db, "reservations", reservation_id, "reservation")
    reservation = db.edit("reservations", reservation_id)
    reservation["payment_history"].extend(
        [{"payment_id": p["payment_id"], "amount": -p["amount"]} for p in reservation["payment_history"]]
    )
    reservation["status"] = "cancelled"
    return json.dumps(reservation)


def update_reservation_baggages(
    db: EpisodeDB, reservation_id: str, total_baggages: int, nonfree_baggages: int, payment_id: str
) -> str:
    reservation = _need(db, "reservations", reservation_id, "reservation")
    price = 50 * max(0, nonfree_baggages - reservation["nonfree_baggages"])
    _change_method(db, reservation["user_id"], payment_id, price)
    reservation = _charge(db, reservation_id, payment_id, price)
    reservation["total_baggages"], reservation["nonfree_baggages"] = total_baggages, nonfree_baggages
    return json.dumps(reservation)


def update_reservation_flights(
    db: EpisodeDB, reservation_id: str, cabin: str, flights: list[dict[str, Any]], payment_id: str
) -> str:
    reservation = _need(db, "reservations", reservation_id, "reservation")
    seats = len(reservation["passengers"])
    total: float = 0
    for flight in flights:
        kept = [
            f
            for f in reservation["flights"]
            if cabin == reservation["cabin"]
            and (f["flight_number"], f["date"]) == (flight["flight_number"], flight["date"])
        ]
        if kept:  # an unchanged segment keeps the price it was booked at
            flight.update(price=kept[0]["price"], origin=kept[0]["origin"], destination=kept[0]["destination"])
        else:
            _priced(db, flight, cabin, seats)
        total += flight["price"] * seats
    total -= sum(f["price"] for f in reservation["flights"]) * seats
    _change_method(db, reservation["user_id"], payment_id, total)
    reservation = _charge(db, reservation_id, payment_id, total)
    reservation["flights"] = flights  # the cabin itself is not stored, as in τ-bench
    return json.dumps(reservation)


def update_reservation_passengers(db: EpisodeDB, reservation_id: str, passengers: list[dict[str, Any]]) -> str:
    reservation = _need(db, "reservations", reservation_id, "reservation")
    if len(passengers) != len(reservation["passengers"]):
        raise ToolError("number of passengers does not match")
    reservation = db.edit("reservations", reservation_id)
    reservation["passengers"] = passengers
    return json.dumps(reservation)


def send_certificate(db: EpisodeDB, user_id: str, amount: float) -> str:
    user = _need(db, "users", user_id, "user")
    free = [c for c in NEW_CERTIFICATES if c not in user["payment_methods"]]
    if not free:
        raise ToolError("no more certificates can be sent to this user")
    db.edit("users", user_id)["payment_methods"][free[0]] = {"source": "certificate", "amount": amount, "id": free[0]}
    return f"Certificate {free[0]} added to user {user_id} with amount {amount}."


_FLIGHT = {"flight_number": "string", "date": "string"}
_PERSON = {"first_name": "string", "last_name": "string", "dob": "string"}
_RES = {"reservation_id": "string"}
_ROUTE = {"origin": "string", "destination": "string", "date": "string"}
TOOLS: dict[str, Tool] = {
    t.name: t
    for t in (
        *COMMON,
        Tool(
            get_user_details,
            {"user_id": "string"},
            "a user's profile: payment methods, saved passengers, membership, reservation ids",
        ),
        Tool(get_reservation_details, _RES, "a reservation's flights, passengers and payments"),
        Tool(list_all_airports, {}, "every airport code with its city"),
        Tool(search_direct_flight, _ROUTE, "available direct flights on a date (YYYY-MM-DD)"),
        Tool(search_onestop_flight, _ROUTE, "available one-stop connections on a date"),
        Tool(
            book_reservation,
            {
                "user_id": "string",
                "origin": "string",
                "destination": "string",
                "flight_type": "string",
                "cabin": "string",
                "flights": "objects",
                "passengers": "objects",
                "payment_methods": "objects",
                "total_baggages": "integer",
                "nonfree_baggages": "integer",
                "insurance": "string",
            },
            "book flights (flight_type one_way|round_trip, cabin basic_economy|economy|business, "
            "insurance yes|no); payments [{payment_id, amount}] must add up to the price",
            write=True,
            fields={
                "flights": _FLIGHT,
                "passengers": _PERSON,
                "payment_methods": {"payment_id": "string", "amount": "number"},
            },
        ),
        Tool(cancel_reservation, _RES, "cancel a whole reservation (its payments are refunded)", write=True),
        Tool(
            update_reservation_baggages,
            {**_RES, "total_baggages": "integer", "nonfree_baggages": "integer", "payment_id": "string"},
            "change a reservation's bags; 50 per added non-free bag",
            write=True,
        ),
        Tool(
            update_reservation_flights,
            {**_RES, "cabin": "string", "flights": "objects", "payment_id": "string"},
            "change a reservation's cabin or flights (list every segment of the new itinerary); "
            "the fare difference is paid or refunded on payment_id",
            write=True,
            fields={"flights": _FLIGHT},
        ),
        Tool(
            update_reservation_passengers,
            {**_RES, "passengers": "objects"},
            "replace a reservation's passengers (same number)",
            write=True,
            fields={"passengers": _PERSON},
        ),
        Tool(
            send_certificate,
            {"user_id": "string", "amount": "number"},
            "send a user a travel certificate as compensation (be careful)",
            write=True,
        ),
    )
}
