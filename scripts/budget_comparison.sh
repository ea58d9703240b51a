#!/usr/bin/env bash
# Issue 17's comparisons: each algorithm meta-trained for the same training-time budget, one
# thread, one after another, then meta-tested (the test is not counted in the budget).
#
#   bash scripts/budget_comparison.sh SECONDS OUT_DIR CONFIG [CONFIG ...] [-- --set k=v ...]
#   bash scripts/budget_comparison.sh 2700 results/omniglot/budget_5w1s \
#       omniglot/maml_5w1s omniglot/fomaml_5w1s omniglot/anil_5w1s -- --set train.val_every=250
#
# The budget is CPU seconds of the training steps (train.budget_clock = "cpu"): validations,
# saves, pauses (kill -STOP) and other jobs on the machine are not charged to a run. Run it
# again after an interruption: finished runs are skipped, a stopped one is resumed.
set -euo pipefail
cd "$(dirname "$0")/.."
budget=$1 out=$2
shift 2
configs=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do configs+=("$1"); shift; done
[ $# -gt 0 ] && shift  # the "--"
root=${OMNIGLOT:-../shared/data/omniglot}
for config in "${configs[@]}"; do
  run="$out/$(basename "$config")"
  if [ -f "$run/results.json" ]; then
    echo "$run: done"
  elif [ -f "$run/config.toml" ]; then
    metagrad train --resume "$run"
  else
    metagrad train "$config" --out "$run" --set "task.root=$root" --set train.threads=1 \
      --set train.budget_clock=cpu --set "train.time_budget_s=$budget" "$@"
  fi
done
