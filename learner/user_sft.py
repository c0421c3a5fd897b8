"""The user model: a tiny model fine-tuned to play the gyms' users and judges (``userrl sft-user``).

A stand-in that exercises the whole LLM-user path on a CPU (prompts, structured output, parsing,
re-asks, serving, training against it), not a claim of faithfulness: it learns to imitate the
scripted users, so it can be no better than they are, and a model of a million parameters
imitates them only in part (its held-out agreement says how far; docs/users.md).

Data. Episodes on the train split of each gym are played in this process with the scripted user
answering; every question the gym puts to the user or judge is recorded with the scripted reply.
The first episode of a task is the scripted expert's; the others mix in, turn by turn, other
tasks' and other steps' expert actions and garbled ones, so the model also sees questions that
uncover nothing and guesses that are wrong. Each example is the gym's own LLM prompt for that
query (``UserSpec.llm_messages``: the same messages the openai and hf user backends send),
followed by the scripted reply written as the LLM must write it: compact JSON with the keys of
the gym's reply schema in order (what vLLM's structured output generates), checked by parsing it
back with the gym's ``parse_llm``. TRL's ``SFTTrainer`` learns the reply tokens only.

Measure. The test split's queries, collected the same way, are asked of the model through any
user backend (the hf backend in this process, or the openai backend against the served model
with the gyms' reply schemas): how often a reply parses on the first try, and how often its
decisions (every reply field but free text: the answer, the verdict, the indices uncovered)
agree with the scripted user's; next to the agreement of always giving the most common training
decision, so the number has a floor to stand on.
"""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import anyio
import structlog

from userrl.agents.tiny import build_tiny_model
from userrl.config import DeployConfig
from userrl.envs.datasets import data_tasks
from userrl.envs.episode import Policy, play_episode
from userrl.envs.registry import get_env_class, user_spec
from userrl.errors import ConfigError, UserError
from userrl.learner.sft import run_sft
from userrl.sim_users.base import UserBackend, UserQuery

__all__ = [
    "Example",
    "build_user_model",
    "collect_examples",
    "decision_fields",
    "measure",
    "oversample",
    "reply_text",
    "user_model_dir",
    "user_sft_gyms",
]

log = structlog.get_logger(__name__)

#: the file beside the model with its held-out measurement
REPORT = "agreement.json"


@dataclass(frozen=True, slots=True)
class Example:
    """One query to a gym's user or judge, the scripted reply, and that reply as the LLM writes it."""

    query: UserQuery
    reply: dict[str, Any]
    text: str

    def messages(self) -> list[dict[str, str]]:
        """The gym's LLM prompt for the query, then the reply: one SFT dialogue."""
        prompt = list(user_spec(self.query.env_id).llm_messages(self.query))
        return [*prompt, {"role": "assistant", "content": self.text}]

    @property
    def kind(self) -> str:
        """``Intention-v0 clarify``: the gym and query name the measurement groups by."""
        return f"{self.query.env_id.rsplit('/', 1)[-1]} {self.query.name}"


def user_sft_gyms(cfg: DeployConfig) -> list[str]:
    return list(cfg.user.sft.gyms or cfg.train.gyms)


def user_model_dir(cfg: DeployConfig) -> Path:
    return Path(cfg.user.sft.out or Path(cfg.run_dir) / "user-model")


def decision_fields(schema: dict[str, Any] | None) -> list[str]:
    """The reply fields that decide something: all but free text (a string without an enum)."""
    props = (schema or {}).get("properties") or {}
    return [k for k, s in props.items() if not (s.get("type") == "string" and "enum" not in s)]


def _plain(v: Any) -> Any:
    """Numbers compared as floats (0.5 == 0.5, 1 == 1.0), containers element-wise."""
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


def decisions(query: UserQuery, reply: dict[str, Any]) -> dict[str, Any]:
    """The decision fields of ``reply`` under the gym's reply schema of ``query``."""
    spec = user_spec(query.env_id)
    schema = spec.reply_schema(query) if hasattr(spec, "reply_schema") else None
    return {k: _plain(reply.get(k)) for k in decision_fields(schema)}


def reply_text(query: UserQuery, reply: dict[str, Any]) -> str | None:
    """``reply`` written as the LLM user must write it (compact JSON, the schema's keys in order),
    or None when the gym declares no reply schema or the text would not parse back to the same
    decisions. A free-text field that ``parse_llm`` decorates (PersuadeGym appends the stance)
    is written without the decoration, so parsing it adds it once."""
    spec = user_spec(query.env_id)
    schema = spec.reply_schema(query) if hasattr(spec, "reply_schema") else None
    if not schema or not schema.get("properties"):
        return None
    try:
        obj = {k: reply[k] for k in schema["properties"]}
        parsed = spec.parse_llm(query, _dumps(obj))
    except (KeyError, ValueError):
        return None
    for k, v in obj.items():
        got = parsed.get(k)
        if isinstance(v, str) and isinstance(got, str) and got != v and got.startswith(v):
            extra = got[len(v) :]
            if v.endswith(extra):
                obj[k] = v[: -len(extra)]
    text = _dumps(obj)
    try:
        again = spec.parse_llm(query, text)
    except ValueError:
        return None
    return text if decisions(query, again) == decisions(query, reply) else None


def _dumps(obj: dict[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


class _Recorder:
    """The scripted user, recording every query and its reply."""

    def __init__(self) -> None:
        self.seen: list[tuple[UserQuery, dict[str, Any]]] = []

    async def ask(self, query: UserQuery) -> dict[str, Any]:
        reply = user_spec(query.env_id).scripted(query)
        self.seen.append((query, reply))
        return reply


def _mixed_policy(env_id: str, tasks: list[dict[str, Any]], rng: random.Random, mix: float) -> Policy:
    """Turn by turn: this task's expert action, or (with chance ``mix``) another task's, or this
    task's at another step; a tenth of those garbled (half their words dropped)."""
    expert = get_env_class(env_id).expert_action

    def policy(task: dict[str, Any], messages: list[dict[str, str]]) -> str:
        if rng.random() >= mix:
            return expert(task, messages)
        if rng.random() < 0.5 and len(tasks) > 1:
            text = expert(rng.choice([t for t in tasks if t is not task]), messages)
        else:  # another step: a prefix of this dialogue, or this one asked again later
            cut = rng.randrange(1, len(messages) + 1)
            text = expert(task, messages[:cut])
        if rng.random() < 0.1:
            head, _, rest = text.partition(" ")
            words = rest.split()
            keep = [w for w in words if rng.random() < 0.5] or words[:1]
            text = f"{head} {' '.join(keep)}"
        return text

    return policy


async def collect_examples(
    env_ids: list[str],
    split: str,
    *,
    data: str = "",
    episodes_per_task: int = 6,
    mix: float = 0.5,
    max_turns: int | None = None,
    tasks_per_gym: int | None = None,
    seed: int = 0,
) -> tuple[list[Example], Counter[str]]:
    """The user/judge queries of episodes on ``split`` with their scripted replies, each once
    (see the module docstring); and how many queries were left out per gym and why."""
    out: list[Example] = []
    seen: set[str] = set()
    skipped: Counter[str] = Counter()
    for env_id in env_ids:
        cls = get_env_class(env_id)
        tasks = data_tasks(env_id, split, data)[:tasks_per_gym]
        for ti, task in enumerate(tasks):
            for k in range(episodes_per_task):
                rng = random.Random(f"{seed}:{env_id}:{ti}:{k}")
                policy = cls.expert_action if k == 0 else _mixed_policy(env_id, tasks, rng, mix)
                rec = _Recorder()
                await play_episode(cls(max_turns=max_turns), task, policy, seed=seed + k, user=rec, show_reward=False)
                for query, reply in rec.seen:
                    text = reply_text(query, reply)
                    if text is None:
                        skipped[f"{env_id}: no reply schema, or the reply does not parse back"] += 1
                        continue
                    key = json.dumps([user_spec(env_id).llm_messages(query), text], sort_keys=True)
                    if key not in seen:
                        seen.add(key)
                        out.append(Example(query, reply, text))
    log.info("user_sft.examples", split=split, n=len(out), gyms=env_ids, skipped=dict(skipped))
    return out, skipped


def _fits(examples: list[Example], tokenizer_dir: str, max_length: int) -> tuple[list[Example], int]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)

    def length(e: Example) -> int:
        return len(tok(tok.apply_chat_template(e.messages(), tokenize=False), add_special_tokens=False)["input_ids"])

    keep = [e for e in examples if length(e) <= max_length]
    return keep, len(examples) - len(keep)


def build_user_model(cfg: DeployConfig, out: str | Path | None = None) -> dict[str, Any]:
    """Collect the train split's examples, fine-tune a fresh tiny model on them, save it to
    ``out`` (default :func:`user_model_dir`). Returns what was done (examples, loss inputs)."""
    s = cfg.user.sft
    gyms = user_sft_gyms(cfg)
    if not gyms:
        raise ConfigError("user.sft.gyms (or train.gyms) must name at least one gym for the user model to learn")
    out = Path(out or user_model_dir(cfg))
    examples, skipped = anyio.run(
        lambda: collect_examples(
            gyms,
            "train",
            data=cfg.data,
            episodes_per_task=s.episodes_per_task,
            mix=s.mix,
            max_turns=cfg.train.max_turns,
            seed=cfg.seed,
        )
    )
    if not examples:
        raise ConfigError(f"user.sft.gyms {gyms}: their users were never asked anything on the train split")
    base = out.parent / f"{out.name}-base"
    build_tiny_model(base, seed=cfg.seed, **{**cfg.policy.tiny_size, **s.size})
    examples, too_long = _fits(examples, str(base), s.max_length)
    if not examples:
        raise ConfigError(f"user.sft.max_length {s.max_length}: every example is longer; raise it")
    data = oversample(examples, s.verdict_repeats)
    run_sft(
        base,
        out,
        [{"messages": e.messages()} for e in data],
        epochs=s.epochs,
        lr=s.lr,
        seed=cfg.seed,
        max_length=s.max_length,
        device=cfg.train.device,
        dtype=cfg.train.dtype,
    )
    by_kind = Counter(e.kind for e in examples)
    info = {"out": str(out), "examples": len(examples), "by_query": dict(by_kind), "too_long": too_long}
    info["sft_rows"] = len(data)  # with the repeated verdicts (user.sft.verdict_repeats)
    info["skipped"] = dict(skipped)
    log.info("user_sft.built", **info)
    return info


def oversample(examples: list[Example], repeats: int) -> list[Example]:
    """``examples`` with each one whose decisions are not its query kind's most common ones
    there ``repeats`` times (``user.sft.verdict_repeats``), the copies in the original order."""
    if repeats < 1:
        raise ConfigError(f"user.sft.verdict_repeats must be >= 1, got {repeats}")
    major = _majority(examples)
    out: list[Example] = []
    for e in examples:
        common = json.dumps(decisions(e.query, e.reply), sort_keys=True) == major[e.kind]
        out += [e] * (1 if common else repeats)
    return out


# ---- measurement -------------------------------------------------------------------------------


def _majority(train: list[Example]) -> dict[str, str]:
    """Per query kind, the most common decisions in the training data (as JSON)."""
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for e in train:
        counts[e.kind][json.dumps(decisions(e.query, e.reply), sort_keys=True)] += 1
    return {k: c.most_common(1)[0][0] for k, c in counts.items()}


async def measure(
    backend: UserBackend,
    heldout: list[Example],
    train: list[Example] | None = None,
    *,
    concurrency: int = 16,
) -> dict[str, Any]:
    """Ask ``backend`` every held-out query once (its re-asks are the backend's to set: build it
    with ``max_reasks=0`` to measure first tries) and compare with the scripted replies. Per query
    kind and overall: ``n``, ``parsed`` (share of replies the gym could use), ``agree`` (share
    whose decisions equal the scripted user's; an unparsed reply disagrees) and, with ``train``,
    ``majority`` (the agreement of always giving the most common training decisions)."""
    limiter = anyio.CapacityLimiter(max(1, concurrency))
    results: list[tuple[Example, dict[str, Any] | None, str]] = [None] * len(heldout)  # type: ignore[list-item]

    async def one(i: int, e: Example) -> None:
        async with limiter:
            try:
                got: dict[str, Any] | None = await backend.ask(e.query)
                why = ""
            except UserError as exc:
                got, why = None, type(exc).__name__
        results[i] = (e, got, why)

    async with anyio.create_task_group() as tg:
        for i, e in enumerate(heldout):
            tg.start_soon(one, i, e)
    major = _majority(train) if train else {}
    rows: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    failures: Counter[str] = Counter()
    for e, got, why in results:
        for k in (e.kind, "overall"):
            r = rows[k]
            r["n"] += 1
            r["parsed"] += 0  # present when nothing parsed
            r["agree"] += 0
            want = decisions(e.query, e.reply)
            if got is not None:
                r["parsed"] += 1
                r["agree"] += decisions(e.query, got) == want
            if major:
                r["majority"] += major.get(e.kind) == json.dumps(want, sort_keys=True)
        if why:
            failures[why] += 1
    table = {}
    for k, r in rows.items():
        n = r["n"]
        table[k] = {"n": int(n), **{m: round(r[m] / n, 4) for m in ("parsed", "agree", "majority") if m in r}}
    return {"rows": table, "failures": dict(failures)}


def format_measure(report: dict[str, Any], title: str = "") -> str:
    """The measurement as a table, one row per query kind and overall."""
    rows = report["rows"]
    has_major = any("majority" in r for r in rows.values())
    head = f"{'query':>26} | {'n':>5} | {'parsed':>7} | {'agree':>7}" + (f" | {'majority':>8}" if has_major else "")
    lines = [title, head] if title else [head]
    for k in [*sorted(k for k in rows if k != "overall"), "overall"]:
        r = rows[k]
        line = f"{k:>26} | {r['n']:>5} | {r['parsed']:>7.3f} | {r['agree']:>7.3f}"
        lines.append(line + (f" | {r.get('majority', 0.0):>8.3f}" if has_major else ""))
    return "\n".join(lines)


def heldout_examples(cfg: DeployConfig) -> list[Example]:
    """The test split's queries the user model is measured on (never trained on)."""
    s = cfg.user.sft
    examples, _ = anyio.run(
        lambda: collect_examples(
            user_sft_gyms(cfg),
            "test",
            data=cfg.data,
            episodes_per_task=s.episodes_per_task,
            mix=s.mix,
            max_turns=cfg.train.max_turns,
            tasks_per_gym=s.heldout_tasks,
            seed=cfg.seed + 1,
        )
    )
    return examples


def with_gyms(cfg: DeployConfig, gyms: list[str]) -> DeployConfig:
    """``cfg`` with the user model's gyms set (the CLI's ``--gyms``)."""
    return replace(cfg, user=replace(cfg.user, sft=replace(cfg.user.sft, gyms=list(gyms))))
