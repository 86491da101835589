#!/usr/bin/env python3
# What the policy's wrong samples get wrong, from an evaluation's samples.parquet (an independent
# reading, not airlift's code): how many right / wrong samples hold an equation `a op b = c` that
# is false as written; the within-problem AUROC of the rule "no false line" (1) over (0); and the
# within-problem AUROC of the mean token reward and of the mean behaviour log-prob, split by the
# wrong sample's kind (a false line, or every line true).
# Usage: scripts/false_arithmetic.py RUN/eval/NAME/samples.parquet ... (needs pyarrow, e.g.
# `pip install --target /tmp/pa pyarrow` and PYTHONPATH=/tmp/pa).
import collections
import re
import sys

import pyarrow.parquet as pq

EQ = re.compile(r"(\d+(?:\.\d+)?)\s*([-+*/x×])\s*(\d+(?:\.\d+)?)\s*=\s*\$?(\d+(?:\.\d+)?)")


def has_false_line(text):
    for a, op, b, c in EQ.findall(text.replace(",", "")):
        a, b, c = float(a), float(b), float(c)
        v = {"+": a + b, "-": a - b, "*": a * b, "x": a * b, "×": a * b, "/": a / b if b else None}[op]
        if v is None or abs(v - c) > 1e-6 * max(1.0, abs(c)):
            return True
    return False


def within(groups, score, keep=lambda r: True):
    """Share of (right, wrong) pairs of the same problem ordered right (ties 1/2), and the pairs."""
    c = p = 0
    for rows in groups.values():
        pos = [score(r) for r in rows if r["correct"]]
        neg = [score(r) for r in rows if not r["correct"] and keep(r)]
        for a in pos:
            for b in neg:
                c += 1.0 if a > b else 0.5 if a == b else 0.0
                p += 1
    return (c / p if p else float("nan")), p


for path in sys.argv[1:]:
    rows = pq.read_table(path).to_pylist()
    for r in rows:
        r["false"] = has_false_line(r["text"])
    groups = collections.defaultdict(list)
    for r in rows:
        groups[r["problem_id"]].append(r)
    n = collections.Counter(("right" if r["correct"] else "wrong", r["false"]) for r in rows)
    print(path)
    print(f"  right samples: {n[('right', True)]} with a false line, {n[('right', False)]} without; "
          f"wrong samples: {n[('wrong', True)]} with, {n[('wrong', False)]} without")
    v, p = within(groups, lambda r: 0 if r["false"] else 1)
    print(f"  rule 'no false line': within-problem AUROC {v:.3f} ({p} pairs)")
    mean = lambda key: (lambda r: sum(r[key]) / len(r[key]) if r[key] else float("-inf"))
    for name, key in [("reward (mean)", "token_rewards"), ("log-prob (mean)", "behaviour_logprobs")]:
        parts = []
        for label, keep in [("all wrong", lambda r: True), ("wrong with a false line", lambda r: r["false"]),
                            ("wrong, every line true", lambda r: not r["false"])]:
            v, p = within(groups, mean(key), keep)
            parts.append(f"{label} {v:.3f} ({p} pairs)")
        print(f"  {name}: " + "; ".join(parts))
