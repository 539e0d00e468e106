"""Compare two output folders of tools/identity/run.sh: every results.json equal, timings and the
folder paths aside; files present on one side only are listed.

usage: python tools/identity/compare_runs.py BASE NEW
"""

import json
import sys
from pathlib import Path

DROP = {"seconds", "timings", "images_per_second", "from_features"}  # timings and the replayed folder


def clean(x):
    if isinstance(x, dict):
        return {k: clean(v) for k, v in x.items() if k not in DROP}
    if isinstance(x, list):
        return [clean(v) for v in x]
    return x


base, new = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
bad = 0
for b in sorted(base.rglob("results.json")):
    n = new / b.relative_to(base)
    if not n.exists():
        print("MISSING", n)
        bad += 1
        continue
    x, y = clean(json.loads(b.read_text())), clean(json.loads(n.read_text()))
    if x != y:
        bad += 1
        print("DIFF", b.relative_to(base))

        def walk(a, c, p=""):
            if isinstance(a, dict) and isinstance(c, dict):
                for k in sorted(set(a) | set(c)):
                    if k not in a or k not in c:
                        print("  key", p + "/" + k, "only in", "base" if k in a else "new")
                    else:
                        walk(a[k], c[k], p + "/" + k)
            elif a != c:
                print("  ", p, a, "!=", c)

        walk(x, y)
for b in sorted(base.rglob("*")):
    if b.is_file() and "tensorboard" not in str(b) and not (new / b.relative_to(base)).exists():
        print("file missing in new:", b.relative_to(base))
for n in sorted(new.rglob("*")):
    if n.is_file() and "tensorboard" not in str(n) and not (base / n.relative_to(new)).exists():
        print("file only in new:", n.relative_to(new))
print("IDENTICAL" if not bad else f"{bad} results.json differ")
