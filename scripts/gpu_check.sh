#!/usr/bin/env bash
# GPU check: the GPU-marked tests (every strategy family, fp32 and bf16), then split
# Fashion-MNIST on the GPU in fp32 and bf16-mixed with training steps per second beside the CPU
# figure, then short HNET and SupSup runs on the GPU (task inferred). Within 10 minutes on one
# GPU. Usage, on a machine with a GPU:
#   FMNIST_DIR=/path/to/fashion-mnist-idx-files bash scripts/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
data="${FMNIST_DIR:-/usr/share/datasets/fashion-mnist}"
out="${OUT:-/tmp/clrun-gpu-check}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider

steps_per_second() {  # run dir, epochs: 5 tasks x floor(12000/128) batches x epochs / loop time
  python - "$1" "$2" <<'PY'
import json, sys
seconds = json.load(open(f"{sys.argv[1]}/timing.json"))["train_eval_seconds"]
steps = 5 * (12000 // 128) * int(sys.argv[2])
print(f"{steps / seconds:8.1f} steps/s  ({steps} steps in {seconds:.1f} s incl. evaluation)")
PY
}

common=(scenario=split_fmnist "data_dir=$data" scenario.setting=class optimizer=sgd
        train.batch_size=128 train.drop_last=true logger=none trainer.enable_progress_bar=false)
for run in "cpu trainer=cpu" "gpu-fp32 trainer=gpu" "gpu-bf16 trainer=gpu trainer.precision=bf16-mixed"; do
  set -- $run
  name=$1; shift
  epochs=$([ "$name" = cpu ] && echo 2 || echo 10)
  python -m clrun.cli "${common[@]}" "$@" trainer.max_epochs=$epochs "hydra.run.dir=$out/$name" \
    > "$out/$name.log" 2>&1
  printf '%-9s ACC %6.2f  ' "$name" "$(python -c "import json;print(json.load(open('$out/$name/metrics.json'))['acc'])")"
  steps_per_second "$out/$name" "$epochs"
done

# the architectural family's heaviest forward passes: generated weights and superposed masks
for method in hnet supsup; do
  python -m clrun.cli "${common[@]}" trainer=gpu trainer.precision=bf16-mixed "strategy=$method" \
    optimizer=adam trainer.max_epochs=-1 trainer.max_steps=300 "hydra.run.dir=$out/$method" \
    > "$out/$method.log" 2>&1
  python - "$out/$method" "$method" <<'PY'
import json, sys
m = json.load(open(f"{sys.argv[1]}/metrics.json"))
t = json.load(open(f"{sys.argv[1]}/timing.json"))["train_eval_seconds"]
print(f"{sys.argv[2]:9s} ACC {m['acc']:6.2f}  task inference {m['task_inference_acc']:6.2f}  "
      f"({5 * 300 / t:.1f} steps/s)")
PY
done
