#!/usr/bin/env bash
# The sinusoid table of RESULTS.md: every config in turn, one thread each, logs in runs/.
# Usage: bash scripts/reproduce_sinusoid.sh [config ...]   (default: the K = 10 table)
# OUT=results keeps the run directories in the repository (results/sinusoid/<config>).
set -euo pipefail
cd "$(dirname "$0")/.."
configs=("$@")
[ ${#configs[@]} -gt 0 ] || configs=(maml_10shot fomaml_10shot reptile_10shot pretrained_10shot mean_10shot)
out="${OUT:-runs}"
mkdir -p runs "$out/sinusoid"
for c in "${configs[@]}"; do
  start=$(date +%s)
  OMP_NUM_THREADS=1 metagrad train "configs/sinusoid/$c.toml" --out "$out/sinusoid/$c" \
    > "runs/sinusoid_$c.log" 2>&1
  echo "$c: $(( $(date +%s) - start )) s, results in $out/sinusoid/$c/results.json"
done
