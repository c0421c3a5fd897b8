"""A policy-side receiver of the in-memory weight sync, on CPU (gloo): joins the group as rank
1, loads what the learner broadcasts into an HF model, saves it (test_weight_sync.py)."""

from __future__ import annotations

import sys

import torch
from transformers import AutoModelForCausalLM

from userrl.learner.weight_sync import WeightGroup, receive_weights

if __name__ == "__main__":
    model_dir, port, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    group = WeightGroup("127.0.0.1", port, rank=1, world=2, timeout_s=60)
    version, tensors = receive_weights(group)
    state = dict(tensors)
    model.load_state_dict(state, strict=False)  # tied lm_head may be left out by the sender
    torch.save({"version": version, "state": model.state_dict()}, out)
