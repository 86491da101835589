#!/usr/bin/env python3
# Independent recomputation (not airlift's code) of pass@1 A minus pass@1 B, paired on the
# problems both evaluations sampled, with a 95% percentile bootstrap interval over problems
# (2,000 resamples, seed 0). For two evaluations whose `--compare` was not run together.
# Usage: scripts/paired_pass1.py A/samples.parquet B/samples.parquet [FIRST..END] (only problem
# ids FIRST to END-1 when given; needs pyarrow, e.g.
# `pip install --target /tmp/pa pyarrow` and PYTHONPATH=/tmp/pa).
import sys, collections, random
import pyarrow.parquet as pq
def per_problem(path):
    g = collections.defaultdict(list)
    for r in pq.read_table(path, columns=["problem_id", "correct"]).to_pylist():
        g[r["problem_id"]].append(1.0 if r["correct"] else 0.0)
    return {p: sum(v) / len(v) for p, v in g.items()}
a, b = per_problem(sys.argv[1]), per_problem(sys.argv[2])
common = sorted(set(a) & set(b))
if len(sys.argv) > 3:
    lo, hi = (int(x) for x in sys.argv[3].split(".."))
    common = [p for p in common if lo <= p < hi]
d = [a[p] - b[p] for p in common]
n = len(d)
rng = random.Random(0)
boots = sorted(sum(d[rng.randrange(n)] for _ in range(n)) / n for _ in range(2000))
print(f"A {sys.argv[1]}: pass@1 {sum(a[p] for p in common) / n:.3f}")
print(f"B {sys.argv[2]}: pass@1 {sum(b[p] for p in common) / n:.3f}")
print(f"A - B: {sum(d) / n:+.3f} [{boots[49]:+.3f}, {boots[1949]:+.3f}] (n = {n} problems; A better on {sum(x > 0 for x in d)}, B on {sum(x < 0 for x in d)})")
