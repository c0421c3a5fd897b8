"""TauGym: customer service in a retail shop, with tools over a real SQLite database."""

from __future__ import annotations

import json
from typing import Any, ClassVar

from userrl.envs.actions import Action
from userrl.envs.base import Env, State, StepResult, Task
from userrl.envs.gyms._common import history_for_query
from userrl.envs.gyms._tau_db import episode_db, fingerprint
from userrl.envs.gyms._tau_tools import (
    ARGS,
    WRITE_TOOLS,
    ToolError,
    call_tool,
    parse_call,
    tool_list,
)
from userrl.envs.gyms._tau_user import TauUserSpec, outputs_said
from userrl.envs.registry import register
from userrl.errors import EnvError
from userrl.sim_users.base import SimUser, UserQuery

BUNDLED_DB = "userrl-retail"
HELP = ("Verify the customer's identity first (name and zip code, or email), find their "
        "user id, look up what you need with read tools, explain what you will change and get "
        "an explicit yes before any write tool (cancel, modify, return, exchange), tell the "
        "customer any figures they asked for, and ask whether there is anything else.")


@register
class TauGym(Env):
    """Help a shop's customer: talk to them and call the shop's tools.

    Description:
        A τ-bench-style retail domain of our own: a SQLite database of customers, payment
        methods, products with variants, and orders. The simulated customer has a goal
        (cancel or change an order, return or exchange items, learn a figure); they reveal
        their identity when asked and state their requests one at a time. Every episode works
        on its own copy of the database (the state records the successful write calls; the
        copy is rebuilt from the bundled base each step).

    Actions:
        ``[action] message``: say something to the customer (UserRL's convention).
        ``[answer] tool call``: call a tool, written ``name {"arg": "value"}`` (e.g.
        ``get_order_details {"order_id": "#W1001"}``) or ``{"name": ..., "arguments": {...}}``.
        An ``[action]`` whose content is such a call is also taken as a tool call.
        ``[search] tools`` lists the tools and their arguments; ``[search] help`` gives the
        shop's procedure.

    Observation:
        The customer's reply, a tool's JSON result or error, or the tool list.

    Reward:
        0 per turn, and at the end 1.0 iff the final database equals the goal's (the gold
        write calls applied to the base) and every required output was told to the customer;
        else 0.

    Episode end:
        Terminated when the customer ends the conversation (their requests are handled and
        the agent asks if there is anything else) or on ``[finish]`` (reward 0); truncated
        after ``max_turns`` (30).

    Version history:
        v0: initial version, in the spirit of UserRL's TauGym (τ-bench retail).
    """

    id = "userrl/Tau-v0"
    data_name: ClassVar[str] = "tau"
    user_spec = TauUserSpec()
    default_max_turns = 30

    @classmethod
    def validate_task(cls, task: Task) -> None:
        if not isinstance(task.get("opening"), str) or not task["opening"].strip():
            raise ValueError("'opening' must be a non-empty string")
        actions = task.get("actions")
        if not isinstance(actions, list):
            raise ValueError("'actions' must be a list of {name, arguments} tool calls")
        for a in actions:
            if not isinstance(a, dict) or not isinstance(a.get("arguments"), dict):
                raise ValueError("each action needs a 'name' and an 'arguments' object")
        if task.get("db", BUNDLED_DB) != BUNDLED_DB:
            return  # another database (imported τ-bench task): its tools are not ours
        for a in actions:
            if set(a["arguments"]) != set(ARGS.get(a.get("name", ""), ("?",))):
                raise ValueError(f"action {a.get('name')!r} is not a call of a known tool")
        if not isinstance(task.get("customer"), dict) or not task.get("requests"):
            raise ValueError("'customer' and 'requests' are required")

    @classmethod
    def max_score(cls, task: Task) -> float:
        return 1.0

    def system_prompt(self, task: Task) -> str:
        return (
            "TauGym: you are a customer-service agent of an online shop. Fulfil the customer's "
            "request by talking to them and calling the shop's internal tools.\n"
            "Actions:\n"
            "- [action] message : say something to the customer.\n"
            '- [answer] tool_name {"arg": "value"} : call a tool with JSON arguments, e.g. '
            '[answer] get_order_details {"order_id": "#W1001"}. Tools with no arguments: '
            "[answer] list_all_product_types {}.\n"
            "- [search] tools : list the tools and their arguments. [search] help : the shop's "
            "procedure.\n"
            "- [finish] : give up (the conversation ends without success).\n"
            f"Procedure: {HELP}"
        )

    async def _reset(self, task: Task, seed: int) -> tuple[State, str, dict[str, Any]]:
        db = task.get("db", BUNDLED_DB)
        if db != BUNDLED_DB:
            raise EnvError(f"task {task['id']} needs the {db!r} database, which is not bundled; "
                           f"TauGym only runs tasks on {BUNDLED_DB!r}")
        gold = [a for a in task["actions"] if a["name"] in WRITE_TOOLS]
        try:
            goal = fingerprint(episode_db(gold))
        except Exception as exc:
            raise EnvError(f"task {task['id']}: the goal's actions do not apply: {exc}") from exc
        obs = f"Customer: {task['opening']}"
        state = {"writes": [], "goal": goal, "stated": 0, "said": [],
                 "dialogue": [{"role": "user", "content": obs}]}
        return state, obs, {"task_id": task["id"]}

    async def _step(self, state: State, action: Action, user: SimUser) -> StepResult:
        state["dialogue"].append({"role": "assistant", "content": action.text})
        call = parse_call(action.content) if action.choice != "search" else None
        if action.choice == "action" and (call is None or call[0] not in ARGS):
            return await self._talk(state, action.content, user)
        if action.choice == "search":
            what = action.content.strip().strip("'\"").lower()
            obs = (f"Tools:\n{tool_list()}" if what == "tools" else HELP if what == "help"
                   else "Search accepts 'tools' or 'help'.")
        elif call is None:
            obs = 'Error: write a tool call as tool_name {"arg": "value"}.'
        else:
            obs = self._call(state, *call)
        state["dialogue"].append({"role": "user", "content": obs})
        return StepResult(state, obs, 0.0, False, False, {})

    @staticmethod
    def _call(state: State, name: str, arguments: dict[str, Any]) -> str:
        conn = episode_db(state["writes"])
        try:
            result = call_tool(conn, name, arguments)
        except ToolError as exc:
            return f"Error: {exc}"
        finally:
            conn.close()
        if name in WRITE_TOOLS:
            state["writes"].append({"name": name, "arguments": arguments})
        return json.dumps(result, sort_keys=True, ensure_ascii=False)

    async def _talk(self, state: State, message: str, user: SimUser) -> StepResult:
        task = state["task"]
        state["said"] = sorted(set(state["said"]) | set(outputs_said(task, message)))
        reply = await user.ask(UserQuery(self.id, "respond", "reply",
                                         {"message": message, "stated": state["stated"]},
                                         task, history_for_query(state)))
        state["stated"] = int(reply.get("stated", state["stated"]))
        obs = f"Customer: {reply['reply']}"
        state["dialogue"].append({"role": "user", "content": obs})
        if not reply.get("done"):
            return StepResult(state, obs, 0.0, False, False, {})
        conn = episode_db(state["writes"])
        try:
            db_ok = fingerprint(conn) == state["goal"]
        finally:
            conn.close()
        out_ok = len(state["said"]) == len(task.get("outputs", []))
        reward = 1.0 if db_ok and out_ok else 0.0
        return StepResult(state, obs, reward, True, False,
                          {"db_match": db_ok, "outputs_match": out_ok, "score": reward})

    @classmethod
    def expert_action(cls, task: Task, messages: list[dict[str, str]]) -> str:
        """Verify identity, hear every request, call the gold tools (asking before writes),
        tell the outputs and ask whether there is anything else."""
        plan = ["[action] Hello! Could you please tell me your name and zip code so I can "
                "verify your identity?" if task.get("identify_by", "zip") == "zip" else
                "[action] Hello! Could you please tell me your email so I can verify your identity?"]
        plan += ["[action] How can I help you today?"]
        plan += ["[action] Got it. What else do you need help with?"] * (len(task["requests"]) - 1)
        for a in task["actions"]:
            call = f"{a['name']} {json.dumps(a['arguments'], sort_keys=True)}"
            if a["name"] in WRITE_TOOLS:
                plan.append(f"[action] I am going to run {call}. Shall I proceed?")
            plan.append(f"[answer] {call}")
        outputs = "; ".join(str(o) for o in task.get("outputs", []))
        plan.append(f"[action] Everything is taken care of{': ' + outputs if outputs else ''}. "
                    "Is there anything else I can help you with?")
        k = sum(1 for m in messages if m.get("role") == "assistant")
        return plan[k] if k < len(plan) else "[finish]"
