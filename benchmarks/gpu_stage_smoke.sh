#!/bin/bash
# GPU smoke of the train stage itself (tiny preset) in NF4 and in bf16, then the saved adapter
# reloaded as the evaluate stage loads it and scored on the dev subset; then the tiny benchmark.
# Carry .whl and .gpu_smoke (built by benchmarks/gpu_stage_subset.py); run from the repo root.
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
cp -r .gpu_smoke/data/normalized .gpu_smoke/data/splits data/
cp params.yaml /tmp/params.orig.yaml
for quant in nf4 bf16; do
  python3 - "$quant" <<'PY'
import sys, yaml
p = yaml.safe_load(open('/tmp/params.orig.yaml'))
p['model'].update(quantization=sys.argv[1], dtype='bfloat16')
p['train'].update(epochs=4, eval_steps=20, logging_steps=5)
yaml.safe_dump(p, open('params.yaml', 'w'), sort_keys=False)
PY
  rm -rf models/checkpoints models/adapter
  SECONDS=0
  python3 -m stages.train > $OUT/train_$quant.log 2>&1 || { tail -50 $OUT/train_$quant.log; exit 1; }
  echo "train stage $quant wall: ${SECONDS} s"
  cp metrics/train.json $OUT/train_$quant.json;
  python3 - > $OUT/reload_$quant.json <<'PY'
import json, time, torch, numpy as np
from qvad.params import load_params
from qvad.model_store import load_trained
from qvad.dataset import ClipDataset
from qvad.scoring import score_ab
from qvad.stats import balanced_accuracy
params = load_params()
torch.cuda.reset_peak_memory_stats()
model, processor = load_trained(params["model"])
kinds = {}
for m in model.modules():
    kinds[type(m).__name__] = kinds.get(type(m).__name__, 0) + 1
dev = ClipDataset("data/splits/dev.csv")
t = time.perf_counter()
p = score_ab(model, processor, dev.audio, params["prompt"], batch_size=64)
dt = time.perf_counter() - t
ba = balanced_accuracy(dev.labels, (p >= 0.5).astype(int))
print(json.dumps({"quantization": params["model"]["quantization"], "reloaded_dev_balanced_accuracy": round(float(ba), 4),
                  "dev_clips": len(p), "score_s": round(dt, 3), "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3),
                  "Linear4bit": kinds.get("Linear4bit", 0), "lora_Linear": kinds.get("Linear", 0)}))
PY
  [ $? -eq 0 ] || exit 1
  cat $OUT/reload_$quant.json
  python3 -c "import json; d=json.load(open('metrics/train.json')); print({k: d[k] for k in ('device','best_dev_balanced_accuracy','best_dev_loss','steps','train_clips_per_second','trainable_parameters')})"
done
cp /tmp/params.orig.yaml params.yaml
python3 benchmarks/gpu_throughput.py --tiny --out $OUT > $OUT/bench_tiny.log 2>&1 && tail -25 $OUT/bench_tiny.log || tail -40 $OUT/bench_tiny.log
