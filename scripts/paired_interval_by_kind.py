#!/usr/bin/env python3
# Paired interval-reading hit@1 per corruption kind between two evaluations of the same problems
# (an independent reading of corruptions.parquet, not airlift's code): the interval reading is the
# line of lowest mean token reward (the first on ties; interval_picks.lowest_mean_line); a hit is that line being the first wrong
# line. For each kind: A's and B's hit@1, A - B with a 95% bootstrap interval over problems
# (corruptions of one problem resampled together), and the traces only A / only B got right.
# Usage: scripts/paired_interval_by_kind.py A/corruptions.parquet B/corruptions.parquet [FIRST..END]
# (only problem ids FIRST to END-1 when given)
# (needs pyarrow, e.g. `pip install --target /tmp/pa pyarrow` and PYTHONPATH=/tmp/pa).
import collections
import random
import sys

import pyarrow.parquet as pq

from interval_picks import lowest_mean_line

COLS = ["problem_id", "corruption_index", "kind", "text", "token_lines", "token_rewards", "first_error_line"]


def hits(path):
    out = {}
    for row in pq.read_table(path, columns=COLS).to_pylist():
        hit = lowest_mean_line(row["token_lines"], row["token_rewards"]) == row["first_error_line"]
        out[(row["problem_id"], row["corruption_index"])] = (row["kind"], row["text"], hit)
    return out


if len(sys.argv) not in (3, 4):
    sys.exit("usage: paired_interval_by_kind.py A/corruptions.parquet B/corruptions.parquet [FIRST..END]")
a, b = hits(sys.argv[1]), hits(sys.argv[2])
common = sorted(set(a) & set(b))
if len(sys.argv) == 4:
    lo, hi = (int(x) for x in sys.argv[3].split(".."))
    common = [k for k in common if lo <= k[0] < hi]
differ = [k for k in common if a[k][1] != b[k][1]]
if differ:
    sys.exit(f"{len(differ)} corruptions differ in text between the two files (e.g. {differ[0]}): not the same traces")
print(f"A {sys.argv[1]}\nB {sys.argv[2]}\n{len(common)} common corrupted traces")
rng = random.Random(0)
for kind in sorted({a[k][0] for k in common}) + ["all"]:
    by_problem = collections.defaultdict(list)
    for k in common:
        if kind in ("all", a[k][0]):
            by_problem[k[0]].append((a[k][2], b[k][2]))
    problems = list(by_problem.values())
    pairs = [p for ps in problems for p in ps]
    n = len(pairs)
    ha, hb = sum(x for x, _ in pairs) / n, sum(y for _, y in pairs) / n
    diffs = []
    for _ in range(2000):
        s = [p for _ in problems for p in rng.choice(problems)]
        diffs.append(sum(x - y for x, y in s) / len(s))
    diffs.sort()
    only_a = sum(x and not y for x, y in pairs)
    only_b = sum(y and not x for x, y in pairs)
    print(f"  {kind:16} n = {n:3}: A {ha:.3f}, B {hb:.3f}, A - B {ha - hb:+.3f} [{diffs[50]:+.3f}, {diffs[1949]:+.3f}]  (only A {only_a}, only B {only_b})")
