#!/usr/bin/env bash
# The fixed runs whose results.json must stay identical across a restructure (timings aside).
# usage: tools/identity/run.sh CHECKOUT OUTDIR   (then: python tools/identity/compare_runs.py BASE NEW)
# CHECKOUT is a checkout of this repository (e.g. `git worktree add /tmp/base <commit>`); the models are
# tiny random ones built once under OUTDIR/../identity-models; run from anywhere with the venv's python.
set -euo pipefail
C=$(cd "$1" && pwd); mkdir -p "$2"; O=$(cd "$2" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd); PY=${PYTHON:-$HERE/../../.venv/bin/python}
M="$(cd "$O/.." && pwd)/identity-models"
cd "$C"; export PYTHONPATH=$C
[ -d "$M" ] || "$PY" "$HERE/make_models.py" "$M"
E="$PY evaluate.py --num-workers 0 --batch-size 4"
$E --backbone random:tiny_reg --data demo --probe all --layers all --save-features --output "$O/all" >/dev/null 2>&1
$E --backbone random:tiny_reg --data demo --probe deletion,norms --limit 6 --output "$O/del" >/dev/null 2>&1
$E --backbone "$M/clip" --data demo --probe all --limit 6 --resolution 32 --output "$O/clip" >/dev/null 2>&1
$E --backbone "$M/timm" --data demo --probe all --limit 6 --resolution 32 --output "$O/timm" >/dev/null 2>&1
$E --from-features "$O/all" --probe cka,split,norms --output "$O/replay" >/dev/null 2>&1
$E --compare "$O/all" "$O/clip" --output "$O/cmp" >/dev/null 2>&1
echo "done $O"
