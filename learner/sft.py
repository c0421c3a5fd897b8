"""SFT cold start (the paper's first finding) with TRL's ``SFTTrainer``.

Demonstrations are multi-turn dialogues in the exact chat format the policy sees on the bus
(system rules, the task, then assistant actions and env feedback with ``Reward: r`` lines).
For the CPU default they come from the gyms' scripted experts playing the train split with
scripted users; users with real SFT data pass a JSONL file of ``{"messages": [...]}``.
Loss is on assistant turns only (``assistant_only_loss``: the chat template marks assistant
spans with ``{% generation %}``).
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog

from userrl.envs.actions import TOOL_SCHEMA
from userrl.envs.datasets import data_tasks
from userrl.envs.episode import play_episode
from userrl.envs.registry import get_env_class
from userrl.errors import DataError
from userrl.hardware import resolve_device, resolve_dtype
from userrl.learner.lora import lora_config

log = structlog.get_logger(__name__)


async def expert_dialogue(
    env_id: str, task: dict[str, Any], *, seed: int = 0, max_turns: int | None = None, show_reward: bool = True
) -> dict[str, Any]:
    """One scripted-expert episode as a chat, in the policy's format, with its turn rewards."""
    cls = get_env_class(env_id)
    tr = await play_episode(cls(max_turns=max_turns), task, cls.expert_action, seed=seed, show_reward=show_reward)
    return {"messages": tr.messages, "rewards": tr.rewards, "env_id": env_id, "task_id": task["id"]}


async def expert_demonstrations(
    env_ids: Sequence[str],
    split: str = "train",
    *,
    max_turns: int | None = None,
    per_gym: int | None = None,
    data: str = "",
) -> list[dict[str, Any]]:
    """The scripted experts' dialogues on ``split`` of ``data`` (a deploy config's data folder;
    "" = the bundled tasks)."""
    out = []
    for env_id in env_ids:
        for task in data_tasks(env_id, split, data)[:per_gym]:
            out.append(await expert_dialogue(env_id, task, max_turns=max_turns))
    log.info("sft.demonstrations", n=len(out), gyms=list(env_ids))
    return out


def load_dialogues(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSONL file of ``{"messages": [...]}`` dialogues, with errors naming file:line."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: SFT data file not found")
    out = []
    for i, line in enumerate(p.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{p}:{i}: not JSON: {exc}") from exc
        msgs = row.get("messages") if isinstance(row, dict) else None
        if not isinstance(msgs, list) or not all(isinstance(m, dict) and {"role", "content"} <= m.keys() for m in msgs):
            raise DataError(f'{p}:{i}: expected {{"messages": [{{"role": ..., "content": ...}}, ...]}}')
        if not any(m["role"] == "assistant" for m in msgs):
            raise DataError(f"{p}:{i}: a dialogue needs at least one assistant turn to learn from")
        out.append({"messages": msgs})
    if not out:
        raise DataError(f"{p}: no dialogues")
    return out


def checkpointing_field(config_class: type) -> str:
    """The name of the activation-checkpointing switch of a transformers ``TrainingArguments``."""
    fields = getattr(config_class, "__dataclass_fields__", {})
    return "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"


def run_sft(
    model_dir: str | Path,
    out_dir: str | Path,
    dialogues: list[dict[str, Any]],
    *,
    epochs: int = 3,
    lr: float = 1e-5,
    batch_size: int = 8,
    seed: int = 0,
    max_length: int = 1024,
    tools: bool = False,
    device: str = "auto",
    dtype: str = "auto",
    gradient_checkpointing: bool = False,
    lora: Any = None,
    report_to: Sequence[str] = (),
) -> Path:
    """Fine-tune ``model_dir`` on ``dialogues`` (assistant tokens only); save to ``out_dir``.
    With ``tools``, the interact_with_env schema is rendered into each system turn, exactly as
    the policy workers render it. ``device``/``dtype`` as in :mod:`userrl.hardware`:
    TRL's own defaults (bf16, gradient checkpointing) are never left to chance, since on a CPU
    without native bf16 they cost 4x. ``lora`` (``train.lora`` with r > 0): TRL trains peft
    adapters only and the merged model is saved, as the GRPO learner publishes it."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    out = Path(out_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    rows = [{"messages": d["messages"], **({"tools": [TOOL_SCHEMA]} if tools else {})} for d in dialogues]
    data = Dataset.from_list(rows)
    dev = resolve_device(device)
    precision = resolve_dtype(dtype, dev)
    args = SFTConfig(
        output_dir=str(out / "trainer"),
        num_train_epochs=epochs,
        learning_rate=lr,
        lr_scheduler_type="cosine",
        per_device_train_batch_size=batch_size,
        assistant_only_loss=True,
        max_length=max_length,
        seed=seed,
        save_strategy="no",
        report_to=list(report_to),
        logging_strategy="steps" if report_to else "no",
        use_cpu=dev == "cpu",
        bf16=precision == "bf16",
        fp16=False,
        # transformers 5 renamed it (the old name warns); older ones only know the old name
        **{checkpointing_field(SFTConfig): gradient_checkpointing},
        dataloader_pin_memory=dev != "cpu",
        disable_tqdm=False,
    )
    log.info(
        "sft.start",
        device=dev,
        dtype=precision,
        gradient_checkpointing=gradient_checkpointing,
        dialogues=len(dialogues),
        epochs=epochs,
    )
    peft_config = None
    if lora is not None and lora.r > 0:
        peft_config = lora_config(lora)
    trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tok, peft_config=peft_config)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):  # the trainer prints its summary: to the log, not the console
        result = trainer.train()
    if printed.getvalue().strip():
        log.info("sft.trainer_output", text=printed.getvalue().strip())
    if peft_config is not None:
        model = trainer.model.merge_and_unload()  # policy workers and GRPO start from full weights
    model.save_pretrained(out)
    tok.save_pretrained(out)
    log.info("sft.done", out=str(out), loss=round(result.training_loss, 4), dialogues=len(dialogues), epochs=epochs)
    return out
