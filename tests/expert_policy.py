"""A trainable policy that plays sensibly: the tiny model, forced to say what each gym's
scripted expert says (for tests where GRPO must really train and the users must really be
asked: an untrained model's actions are format errors, which never reach a user).

Each result carries the exact token ids of the expert's text (plus the end-of-turn token) and
the model's own logprobs of them at the request's temperature, so the learner trains on them
token-in/token-out like on a sampled generation; weights announced by the learner load as in
the hf backend, so later logprobs come from the trained model.
"""

from __future__ import annotations

from pathlib import Path

import anyio

from userrl.agents.base import GenRequest, GenResult
from userrl.agents.chat import end_of_turn_id
from userrl.agents.hf_backend import HFBackend
from userrl.envs.registry import get_env_class


class TeacherForcedExpert(HFBackend):
    def __init__(self, model_path: str | Path) -> None:
        super().__init__(model_path, device="cpu", tools=None)

    async def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        return await anyio.to_thread.run_sync(self.forced, requests)

    async def generate_each(self, requests: list[GenRequest]) -> list[GenResult]:
        return await self.generate(requests)

    def forced(self, requests: list[GenRequest]) -> list[GenResult]:
        import torch

        out = []
        for req in requests:
            text = get_env_class(req.env_id).expert_action(req.task or {}, req.messages)
            prompt = self.prompt_ids(req)
            gen = list(self.tokenizer.encode(text, add_special_tokens=False)) + [end_of_turn_id(self.tokenizer)]
            temperature = req.sampling.temperature if req.sampling.temperature > 0 else 1.0
            with torch.no_grad():
                logits = self.model(input_ids=torch.tensor([prompt + gen])).logits[0, len(prompt) - 1 : -1]
                lps = torch.log_softmax(logits.float() / temperature, -1).gather(-1, torch.tensor(gen)[:, None])[:, 0]
            body = self.tokenizer.decode(gen[:-1], skip_special_tokens=True)
            out.append(
                GenResult(text=body, prompt_ids=prompt, token_ids=gen, logprobs=lps.tolist(), version=self.version)
            )
        return out
