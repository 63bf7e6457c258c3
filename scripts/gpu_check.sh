#!/usr/bin/env bash
# GPU check for a short GPU loan: versions first, then one line per step the moment it ends
# (`PASS|FAIL|TIMEOUT step seconds detail`, also appended to $OUT/summary.txt), each step a
# process with its own timeout, a hung step killed and named with the last lines of its log:
# clrun naive and a bare PyTorch loop in fp32 and bf16-mixed (steps/s on the per-step-bound
# MLP 784-32-10), then a two-task smoke of every family (scripts/gpu_check.py has the list).
# Step timeouts add up to under 10 minutes; expected under 5 on one GPU (not yet measured on
# a GPU: no session has had one since this script was rebuilt; `--cpu` takes 2-3 min here).
#
#   bash scripts/gpu_check.sh          # on a machine with a GPU
#   bash scripts/gpu_check.sh --cpu    # the same steps on the CPU, tiny budgets (CI runs it)
#
# It runs from the source tree (PYTHONPATH, no `pip install -e`) on a machine that has PyTorch
# and Lightning but none of clrun's other dependencies from the network. Bring those as wheels:
#   pip download -d wheels hydra-core omegaconf antlr4-python3-runtime==4.9.3 PyYAML  # with network
#   pip install --no-index --find-links wheels hydra-core omegaconf                  # on the GPU machine
# (rich, scikit-learn and matplotlib come with most PyTorch images; add them the same way if
# not.) Fashion-MNIST: FMNIST_DIR=/path/to/the/four/idx/files (default: Debian's location).
# PYTHON picks the interpreter (default python3: a `python` outside PyTorch's venv loses it).
set -uo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" scripts/gpu_check.py "$@"
