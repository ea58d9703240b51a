#!/usr/bin/env bash
# Fetch learn2learn 0.2.0's source distribution into benchmarks/_peers/ (gitignored).
#
# learn2learn 0.2.0 does not build from pip on Python 3.11 (stale Cython C files), and
# `import learn2learn` needs torchvision; the harness instead loads only its
# algorithms/maml.py, base_learner.py and utils/ from this source tree, by path
# (benchmarks/l2l_loader.py). The pip-installable peers come from the `bench` extra:
#     pip install -e ".[bench]"
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dest="$here/_peers"
version="0.2.0"
python="${PYTHON:-python}"

mkdir -p "$dest"
if [ ! -f "$dest/learn2learn-$version.tar.gz" ]; then
    "$python" -m pip download --no-deps --no-binary :all: "learn2learn==$version" -d "$dest"
fi
rm -rf "$dest/learn2learn-$version"
tar -xzf "$dest/learn2learn-$version.tar.gz" -C "$dest"
"$python" - "$here/.." <<'PY'
import sys

sys.path.insert(0, sys.argv[1])
from benchmarks.l2l_loader import load_l2l_maml

print("loaded", load_l2l_maml().__module__, "from benchmarks/_peers")
PY
