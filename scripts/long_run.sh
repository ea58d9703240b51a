#!/usr/bin/env bash
# Start (or resume) a long training in the background, logging to runs/<name>.log.
# Usage: bash scripts/long_run.sh CONFIG RUN_DIR [--set key=value ...]
# Re-running the same command after an interruption resumes from RUN_DIR's last checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
config=$1 run=$2
shift 2
mkdir -p runs
log="runs/$(basename "$run").log"
if [ -f "$run/config.toml" ]; then
  nohup metagrad train --resume "$run" >> "$log" 2>&1 &
else
  nohup metagrad train "$config" --out "$run" "$@" >> "$log" 2>&1 &
fi
echo "pid $! -> $log"
