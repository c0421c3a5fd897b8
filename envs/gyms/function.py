"""FunctionGym: guess a hidden arithmetic rule over four numbers, then apply it."""

from __future__ import annotations

import ast
import functools
import math
import operator
import re
from collections.abc import Callable
from typing import Any, ClassVar

from userrl.envs.actions import Action
from userrl.envs.base import PAPER_MAX_TURNS, Env, State, StepResult, Task
from userrl.envs.gyms._common import assistant_turns, gain_over_best, parse_json_object
from userrl.sim_users.base import SimUser, UserQuery

VARS = ("a", "b", "c", "d")
#: UserRL's tolerance: an answer is right within 1e-6 (of the exact value, or of the value
#: rounded to 4 decimals as probes show it)
ANSWER_TOL = 1e-6
MAX_INPUT = 1_000_000
#: a probe must differ from the test case by at least this much in some input. The test case
#: is four integers; closer than 1 in every input, a probe is the test case blurred, and its
#: printed value (4 decimals) is the answer without any rule behind it (UserRL refuses only the
#: test case itself, and pays a probe at +1e-9). One step away, the value still needs a model
#: of the rule (the rule, or its slope along an input) to reach the answer.
MIN_PROBE_DISTANCE = 1.0
#: wrong answers allowed before the episode ends. UserRL allows any number, but the values of
#: its functions on their test cases are mostly small integers that recur across tasks (44 of
#: the 64 test values we import are also training values): a policy that tries the common
#: values one by one scores without probing at all. ``max_answers: null`` restores UserRL's rule.
DEFAULT_MAX_ANSWERS = 3
_BINOPS: dict[type, Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}
_NUMBER = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$")


class RuleError(ValueError):
    """The rule is not a plain arithmetic expression over a, b, c, d."""


@functools.lru_cache(maxsize=4096)
def _parse_rule(rule: str) -> ast.Expression:
    try:
        tree = ast.parse(rule, mode="eval")
    except SyntaxError as exc:
        raise RuleError(f"rule {rule!r} is not an expression") from exc
    for node in ast.walk(tree):
        ok = isinstance(node, (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Load, ast.USub, ast.UAdd, *_BINOPS))
        ok = ok or isinstance(node, ast.Name) and node.id in VARS
        ok = ok or isinstance(node, ast.Constant) and type(node.value) in (int, float)
        if not ok:
            raise RuleError(f"rule {rule!r} may only use a, b, c, d, numbers and + - * / **")
    return tree


def evaluate_rule(rule: str, values: list[float] | tuple[float, ...]) -> float:
    """f(a, b, c, d) as a float. Raises ZeroDivisionError/OverflowError when undefined."""
    env = dict(zip(VARS, (float(v) for v in values), strict=True))

    def ev(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant):
            return float(node.value)
        if isinstance(node, ast.Name):
            return env[node.id]
        if isinstance(node, ast.UnaryOp):
            v = ev(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        assert isinstance(node, ast.BinOp)
        left, right = ev(node.left), ev(node.right)
        if isinstance(node.op, ast.Pow) and left < 0 and not right.is_integer():
            raise OverflowError("complex result")  # a negative base to a fractional power
        result = _BINOPS[type(node.op)](left, right)
        if not math.isfinite(result):
            raise OverflowError("result out of range")
        return result

    return ev(_parse_rule(rule))


def fmt_number(x: float) -> str:
    """Outputs are shown rounded to 4 decimals; whole numbers keep one decimal (``225.0``)."""
    return repr(round(float(x), 4) + 0.0)  # + 0.0 turns -0.0 into 0.0


def expected_result(task: Task) -> float:
    return round(evaluate_rule(task["rule"], task["test_case"]), 4)


def parse_answer_number(text: str) -> float | None:
    """The answer as a number, or None unless it is one number (as in UserRL: a sentence
    holding numbers is not an answer, so "2 or 3" cannot hedge). Thousands separators and a
    trailing full stop are tolerated."""
    cleaned = text.replace(",", "").strip().rstrip(".").strip()
    if not _NUMBER.match(cleaned):
        return None
    x = float(cleaned)
    return x if math.isfinite(x) else None


def is_right(task: Task, x: float) -> bool:
    """Within :data:`ANSWER_TOL` of the exact value or of its 4-decimal rounding."""
    exact = evaluate_rule(task["rule"], task["test_case"])
    return any(abs(x - v) <= ANSWER_TOL for v in (exact, round(exact, 4)))


def _fmt_input(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


class FunctionUserSpec:
    """FunctionGym has no user: every reply is computed by the gym itself.

    The spec exists so every backend can treat all gyms alike; the gym never sends a query.
    """

    def scripted(self, query: UserQuery) -> dict[str, Any]:
        return {}

    def llm_messages(self, query: UserQuery) -> list[dict[str, str]]:
        return [{"role": "system", "content": "FunctionGym has no simulated user. Reply {}."}]

    def parse_llm(self, query: UserQuery, text: str) -> dict[str, Any]:
        return parse_json_object(text, {})


class FunctionGym(Env):
    """Find a hidden arithmetic function of four numbers and apply it to a test case.

    Description:
        The task hides a rule such as ``c * (a * b) * d`` over the inputs ``a b c d`` (only
        ``+ - * /`` and powers) and a test case. The agent probes the rule with inputs of its
        choice, retrieves the test case, and answers with the rule's value on it. No simulated
        user: the gym is fully deterministic.

    Actions:
        ``[action] a b c d`` four numbers (integers or decimals, as in UserRL): returns
        f(a, b, c, d) rounded to 4 decimals; refused for the test case itself (UserRL's rule)
        and for any point within ``min_probe_distance`` (option, default 1; 0 restores UserRL)
        of it in every input (ours: a probe a hair away prints the answer, which UserRL pays).
        ``[search] test``: reveals the test case. ``[answer] x``: one number, the value of f
        on the test case; anything else (a sentence, several numbers) is not an answer.

    Observation:
        The gym's feedback text (the probe's result, the test case, or the verdict).

    Reward:
        1.0 for a right answer (within 1e-6 of the value, as in UserRL; the value rounded to
        4 decimals, as probes show it, is right too), else 0; probes and searches earn 0.
        Gain over the best answer so far, so at most 1.0 per episode.

    Episode end:
        Terminated by a right answer, by the ``max_answers``-th wrong one (option, default 3;
        UserRL allows any number, which lets a policy try the common values one by one: set
        ``max_answers: null`` for UserRL's rule) or ``[finish]``; truncated after
        ``max_turns`` (16, UserRL's rollout cap).

    Version history:
        v0: initial version, following UserRL's FunctionGym (answer tolerance 1e-6, the
        answer must be a number, decimal probes allowed).
    """

    id = "userrl/Function-v0"
    data_name: ClassVar[str] = "function"
    user_spec = FunctionUserSpec()

    option_defaults: ClassVar[dict[str, Any]] = {
        "max_answers": DEFAULT_MAX_ANSWERS,
        "min_probe_distance": MIN_PROBE_DISTANCE,
    }

    def __init__(self, max_turns: int | None = None, **options: Any) -> None:
        super().__init__(max_turns, **options)
        limit = options.get("max_answers", DEFAULT_MAX_ANSWERS)
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
            raise ValueError(f"max_answers must be a positive integer or null, got {limit!r}")
        self.max_answers: int | None = limit
        self.min_probe_distance = float(options.get("min_probe_distance", MIN_PROBE_DISTANCE))
        if not 0.0 <= self.min_probe_distance <= MAX_INPUT:
            raise ValueError(f"min_probe_distance must be >= 0, got {self.min_probe_distance}")

    @classmethod
    def validate_task(cls, task: Task) -> None:
        tc = task.get("test_case")
        if (
            not isinstance(tc, list)
            or len(tc) != 4
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in tc)
        ):
            raise ValueError("'test_case' must be a list of four integers")
        if not isinstance(task.get("rule"), str):
            raise ValueError("'rule' must be a string")
        try:
            value = expected_result(task)
        except (ZeroDivisionError, OverflowError) as exc:
            raise ValueError(f"rule is undefined on the test case ({exc})") from exc
        given = task.get("expected_result")
        if given is not None and not math.isclose(float(given), value, rel_tol=1e-6, abs_tol=1e-3):
            raise ValueError(f"expected_result {given} != rule on test case {value}")

    def system_prompt(self, task: Task) -> str:
        return (
            "FunctionGym is a function-guessing game. A hidden function maps four numbers "
            "a b c d to one output using only addition, subtraction, multiplication, division "
            "and powers. Deduce the rule by trial and error, then apply it to the test case.\n"
            "Actions:\n"
            "- [action] a b c d : four numbers separated by spaces; you get f(a, b, c, d).\n"
            "- [search] test : reveals the test case (the only valid search).\n"
            "- [answer] x : a single number, the function's value on the test case.\n"
            "- [finish] : give up and end the episode.\n"
            "Start with small numbers and change one input at a time. A right answer ends the "
            "game"
            + (
                f"; so does wrong answer number {self.max_answers}."
                if self.max_answers
                else "; you may answer several times."
            )
        )

    async def on_reset(self, task: Task, seed: int) -> tuple[State, str, dict[str, Any]]:
        self.validate_task(task)
        obs = "I have settled on a hidden function of four numbers. Start probing it whenever you like!"
        return {"best": 0.0, "revealed": False}, obs, {"task_id": task["id"]}

    async def on_step(self, state: State, action: Action, user: SimUser) -> StepResult:
        task = state["task"]
        if action.choice == "search":
            return self._search(state, action.content)
        if action.choice == "action":
            return StepResult(state, self._probe(task, action.content, self.min_probe_distance), 0.0, False, False, {})
        x = parse_answer_number(action.content)
        if x is None:
            return StepResult(state, "Your answer must be a single number.", 0.0, False, False, {"score": 0.0})
        right = is_right(task, x)
        reward, state["best"] = gain_over_best(state["best"], 1.0 if right else 0.0)
        state["answers"] = int(state.get("answers", 0)) + 1
        last = self.max_answers is not None and state["answers"] >= self.max_answers
        obs = (
            "Correct! Your answer matches the function's value on the test case."
            if right
            else f"Wrong: {fmt_number(x)} is not the function's value on the test case."
            + (" That was your last answer." if last else "")
        )
        return StepResult(state, obs, reward, right or last, False, {"score": 1.0 if right else 0.0})

    @staticmethod
    def _search(state: State, content: str) -> StepResult:
        if content.strip().strip("'\"").lower() != "test":
            return StepResult(state, "Search only accepts 'test', which reveals the test case.", 0.0, False, False, {})
        state["revealed"] = True
        a, b, c, d = state["task"]["test_case"]
        obs = (
            f"The test case is: {a} {b} {c} {d}. Answer with [answer] followed by "
            "the function's output for these four numbers."
        )
        return StepResult(state, obs, 0.0, False, False, {})

    @staticmethod
    def _probe(task: Task, content: str, min_distance: float = MIN_PROBE_DISTANCE) -> str:
        parts = content.replace(",", " ").split()
        if len(parts) != 4 or not all(_NUMBER.match(p) for p in parts):
            return "Give exactly four numbers separated by spaces, e.g. [action] 1 2 3 4."
        values = [float(p) for p in parts]
        if any(not math.isfinite(v) or abs(v) > MAX_INPUT for v in values):
            return f"Inputs must be between -{MAX_INPUT} and {MAX_INPUT}."
        if values == [float(v) for v in task["test_case"]]:
            return "Those numbers are the test case; you cannot probe it directly."
        if max(abs(v - float(t)) for v, t in zip(values, task["test_case"], strict=True)) < min_distance:
            return (
                f"Those numbers are within {min_distance:g} of the test case in every input; probe inputs "
                f"that differ from it by at least {min_distance:g} somewhere."
            )
        shown = ", ".join(_fmt_input(v) for v in values)
        try:
            out = evaluate_rule(task["rule"], values)
        except ZeroDivisionError:
            return f"f({shown}) is undefined (division by zero)."
        except OverflowError:
            return f"f({shown}) is too large to compute."
        return f"f({shown}) = {fmt_number(out)}"

    @classmethod
    def expert_action(cls, task: Task, messages: list[dict[str, str]], max_turns: int = PAPER_MAX_TURNS) -> str:
        """Retrieve the test case, make one probe, then answer exactly."""
        k = assistant_turns(messages)
        if k == 0:
            return "[search] test"
        if k == 1:
            probe = [1, 2, 3, 4] if list(task["test_case"]) != [1, 2, 3, 4] else [2, 3, 4, 5]
            return "[action] " + " ".join(map(str, probe))
        return f"[answer] {fmt_number(expected_result(task))}"
