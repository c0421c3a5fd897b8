"""TauGym: customer service with tools over a real database (τ-bench's retail and airline
domains, and a small shop of our own)."""

from __future__ import annotations

import json
from typing import Any, ClassVar

from userrl.envs.actions import Action
from userrl.envs.base import PAPER_MAX_TURNS, Env, State, StepResult, Task
from userrl.envs.gyms._common import history_for_query
from userrl.envs.gyms._tau_domains import BUNDLED, DOMAINS, Domain, check_actions, domain_of
from userrl.envs.gyms._tau_tools import parse_call
from userrl.envs.gyms._tau_user import TauUserSpec, outputs_said
from userrl.errors import DataError, EnvError
from userrl.sim_users.base import SimUser, UserQuery


class TauGym(Env):
    """Serve a customer: talk to them, and call the business's tools on its database.

    Description:
        τ-bench's domains: a retail store (users, orders, products) and an airline (users,
        reservations, flights), on τ-bench's own databases (MIT, shipped compressed in
        ``envs/data/tau``), with tools that follow τ-bench's semantics (``_taubench_*``);
        UserRL's Tau tasks (500 retail train, 115 retail + 50 airline test) play on them. The
        bundled tasks use a small shop of our own on SQLite (``db`` absent or
        ``userrl-retail``). The simulated customer has a goal (the task's instruction); they
        reveal it when asked and confirm the changes the agent proposes. Every episode works
        on its own copy of its domain's database: the state records the write calls that
        succeeded, and each step rebuilds the copy from the shared, read-only base (τ-bench's
        are parsed once per process and copied record by record on write).

    Actions:
        ``[action] message``: say something to the customer. Always speech, never a tool call
        (UserRL's rule), whatever the message looks like.
        ``[answer] tool call``: call a tool, written ``name {"arg": "value"}`` (e.g.
        ``get_order_details {"order_id": "#W2611340"}``) or ``{"name": ..., "arguments": {...}}``.
        ``[search] tools`` lists the domain's tools and their arguments; ``[search] help``
        gives the domain's policy (τ-bench's wiki for its domains).

    Observation:
        The customer's reply, a tool's result (τ-bench's: JSON of a record, an id or a
        message) or ``Error: ...``, or the tool list / policy.

    Reward:
        0 per turn, and at the end 1.0 iff the final database equals the one the task's gold
        tool calls produce from the base (τ-bench compares the whole database) and every
        required output string was said to the customer in an ``[action]`` (τ-bench's rule:
        a case-insensitive substring of the message with its commas removed; our shop's
        tasks compare numbers as numbers); else 0.

    Episode end:
        Terminated when the customer ends the conversation (their request is handled and
        the agent asks if there is anything else), when ``transfer_to_human_agents``
        succeeds (τ-bench's terminal tool; scored like the end of a conversation), or on
        ``[finish]`` (reward 0); truncated after ``max_turns`` (16, UserRL's rollout cap).

    Version history:
        v0: initial version, in the spirit of UserRL's TauGym (τ-bench retail), our own shop.
        v0, revised: τ-bench's retail and airline databases and tools, so UserRL's 665 Tau
        tasks play; ``[action]`` is never a tool call (it was when it looked like one).
    """

    id = "userrl/Tau-v0"
    data_name: ClassVar[str] = "tau"
    user_spec = TauUserSpec()

    @classmethod
    def validate_task(cls, task: Task) -> None:
        if not isinstance(task.get("opening"), str) or not task["opening"].strip():
            raise ValueError("'opening' must be a non-empty string")
        if not isinstance(task.get("actions"), list):
            raise ValueError("'actions' must be a list of {name, arguments} tool calls")
        db = task.get("db", BUNDLED)
        if db not in DOMAINS:
            raise ValueError(f"'db' must be one of {sorted(DOMAINS)}, got {db!r}")
        check_actions(DOMAINS[db], task["actions"])
        if not isinstance(task.get("outputs", []), list):
            raise ValueError("'outputs' must be a list of strings")
        if db == BUNDLED and (not isinstance(task.get("customer"), dict) or not task.get("requests")):
            raise ValueError("'customer' and 'requests' are required")
        if db != BUNDLED and not isinstance(task.get("instruction"), str):
            raise ValueError("'instruction' (the customer's goal) must be a string")

    def system_prompt(self, task: Task) -> str:
        domain = domain_of(task)
        example = (
            'get_order_details {"order_id": "#W2611340"}'
            if domain.name != "tau-bench-airline"
            else 'get_reservation_details {"reservation_id": "4WQ150"}'
        )
        return (
            f"TauGym: you are a customer-service agent of {domain.business}. Fulfil the "
            "customer's request by talking to them and calling the internal tools, following "
            "the policy.\nActions:\n"
            "- [action] message : say something to the customer (never a tool call).\n"
            f'- [answer] tool_name {{"arg": "value"}} : call a tool with JSON arguments, '
            f"e.g. [answer] {example}.\n"
            "- [search] tools : list the tools and their arguments. [search] help : the policy.\n"
            "- [finish] : give up (the conversation ends without success).\n"
            "Verify the customer's identity first, and get an explicit yes before any change."
        )

    async def on_reset(self, task: Task, seed: int) -> tuple[State, str, dict[str, Any]]:
        domain = domain_of(task)
        try:
            goal = domain.goal(task["actions"])
        except (DataError, ValueError, KeyError) as exc:
            raise EnvError(f"task {task['id']}: the goal's actions do not apply: {exc}") from exc
        obs = f"Customer: {task['opening']}"
        state = {
            "writes": [],
            "goal": goal,
            "stated": 0,
            "said": [],
            "asked_again": 0,
            "dialogue": [{"role": "user", "content": obs}],
        }
        return state, obs, {"task_id": task["id"]}

    async def on_step(self, state: State, action: Action, user: SimUser) -> StepResult:
        state["dialogue"].append({"role": "assistant", "content": action.text})
        if action.choice == "action":
            return await self._talk(state, action.content, user)
        domain = domain_of(state["task"])
        done = False
        if action.choice == "search":
            obs = self._search(domain, action.content)
        elif (call := parse_call(action.content)) is None:
            obs = 'Error: write a tool call as tool_name {"arg": "value"}.'
        else:
            name, arguments = call
            obs, ok = domain.call(state["writes"], name, arguments)
            if ok and domain.is_write(name):
                state["writes"].append({"name": name, "arguments": arguments})
            done = ok and domain.is_terminal(name)
        state["dialogue"].append({"role": "user", "content": obs})
        reward, info = self._score(state) if done else (0.0, {})
        return StepResult(state, obs, reward, done, False, info)

    @staticmethod
    def _search(domain: Domain, query: str) -> str:
        what = query.strip().strip("'\"").lower()
        if "tool" in what or "function" in what:
            return f"Tools:\n{domain.listing()}"
        if "help" in what or "policy" in what:
            return domain.policy()
        return "Search accepts 'tools' or 'help'."

    @staticmethod
    def _score(state: State) -> tuple[float, dict[str, Any]]:
        """τ-bench's reward: the database and the outputs, checked at the episode's end."""
        task = state["task"]
        db_ok = domain_of(task).fingerprint(state["writes"]) == state["goal"]
        out_ok = len(state["said"]) == len(task.get("outputs", []))
        reward = 1.0 if db_ok and out_ok else 0.0
        return reward, {"db_match": db_ok, "outputs_match": out_ok, "score": reward}

    @staticmethod
    def _goal_met(state: State) -> bool:
        """What the customer sees of their goal: every change they wanted made (the database
        as the gold calls leave it) and every answer they wanted given; τ-bench's reward."""
        return TauGym._score(state)[0] == 1.0

    async def _talk(self, state: State, message: str, user: SimUser) -> StepResult:
        task = state["task"]
        state["said"] = sorted(set(state["said"]) | set(outputs_said(task, message)))
        reply = await user.ask(
            UserQuery(
                self.id,
                "respond",
                "reply",
                {
                    "message": message,
                    "stated": state["stated"],
                    "goal_met": self._goal_met(state),
                    "asked_again": int(state.get("asked_again", 0)),
                },
                task,
                history_for_query(state),
            )
        )
        state["stated"] = int(reply.get("stated", state["stated"]))
        state["asked_again"] = int(reply.get("asked_again", state.get("asked_again", 0)))
        obs = f"Customer: {reply['reply']}"
        state["dialogue"].append({"role": "user", "content": obs})
        if not reply.get("done"):
            return StepResult(state, obs, 0.0, False, False, {})
        reward, info = self._score(state)
        return StepResult(state, obs, reward, True, False, info)

    @classmethod
    def expert_action(cls, task: Task, messages: list[dict[str, str]], max_turns: int = PAPER_MAX_TURNS) -> str:
        """Hear the request (verifying identity in our shop), call the gold tools in order
        (asking once, before the first write, for a yes to all of them), tell the outputs,
        then ask whether there is anything else (or, when the gold ends with a transfer,
        make it). When that plan is longer than ``max_turns``, the greeting and then the
        read calls are left out (only writes change the database the reward checks)."""
        domain = domain_of(task)
        k = sum(1 for m in messages if m.get("role") == "assistant")
        plan = cls._expert_plan(task, domain, reads=True, greet=True)
        if len(plan) > max_turns:
            plan = cls._expert_plan(task, domain, reads=True, greet=False)
        if len(plan) > max_turns:
            plan = cls._expert_plan(task, domain, reads=False, greet=False)
        return plan[k] if k < len(plan) else "[finish]"

    @staticmethod
    def _expert_plan(task: Task, domain: Domain, *, reads: bool, greet: bool) -> list[str]:
        if domain.name == BUNDLED:
            plan = [
                "[action] Hello! Could you please tell me your name and zip code so I can verify your identity?"
                if task.get("identify_by", "zip") == "zip"
                else "[action] Hello! Could you please tell me your email so I can verify your identity?",
                "[action] How can I help you today?",
            ]
            plan += ["[action] Got it. What else do you need help with?"] * (len(task["requests"]) - 1)
        else:
            plan = ["[action] Hello! How can I help you today?"] if greet else []
        calls = [
            a for a in task["actions"] if not domain.is_terminal(a["name"]) and (reads or domain.is_write(a["name"]))
        ]
        text = {id(a): f"{a['name']} {json.dumps(a['arguments'], sort_keys=True)}" for a in calls}
        writes = [text[id(a)] for a in calls if domain.is_write(a["name"])]
        asked = False
        for a in calls:
            if domain.is_write(a["name"]) and not asked:
                plan.append(f"[action] I am going to run {'; then '.join(writes)}. Shall I proceed?")
                asked = True
            plan.append(f"[answer] {text[id(a)]}")
        outputs = "; ".join(str(o) for o in task.get("outputs", []))
        said = f"Here is what you asked for: {outputs}. " if outputs else ""
        transfer = next((a for a in task["actions"] if domain.is_terminal(a["name"])), None)
        if transfer is None:
            plan.append(f"[action] Everything is taken care of. {said}Is there anything else I can help you with?")
        else:
            plan += [
                f"[action] {said}I will now transfer you to a human agent.",
                f"[answer] {transfer['name']} {json.dumps(transfer['arguments'], sort_keys=True)}",
            ]
        return plan
