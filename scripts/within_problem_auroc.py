#!/usr/bin/env python3
# Independent recomputation (not airlift's code) of pooled and within-problem correctness AUROC
# from an evaluation's samples.parquet: score = mean token reward, and mean behaviour log-prob.
# Usage: scripts/within_problem_auroc.py RUN/eval/NAME/samples.parquet ... (needs pyarrow, e.g.
# `pip install --target /tmp/pa pyarrow` and PYTHONPATH=/tmp/pa). Checks summary.json's within_problem_auroc.
import sys, collections
import pyarrow.parquet as pq
def auroc(pos, neg):
    c = 0.0
    for p in pos:
        for n in neg:
            c += 1.0 if p > n else 0.5 if p == n else 0.0
    return c, len(pos) * len(neg)
for path in sys.argv[1:]:
    t = pq.read_table(path).to_pylist()
    out = []
    for key, name in [("token_rewards", "reward"), ("behaviour_logprobs", "log-prob")]:
        sc = lambda r: sum(r[key]) / len(r[key]) if r[key] else float("-inf")
        pos = [sc(r) for r in t if r["correct"]]; neg = [sc(r) for r in t if not r["correct"]]
        c, p = auroc(pos, neg)
        g = collections.defaultdict(list)
        for r in t: g[r["problem_id"]].append(r)
        wc = wp = 0; nprob = 0
        for rows in g.values():
            ps = [sc(r) for r in rows if r["correct"]]; ns = [sc(r) for r in rows if not r["correct"]]
            if ps and ns:
                a, b = auroc(ps, ns); wc += a; wp += b; nprob += 1
        out.append(f"{name}: pooled {c/p:.4f} (n {len(pos)}+{len(neg)}), within {wc/wp:.4f} ({nprob} problems, {wp} pairs)")
    print(path, "|", " | ".join(out))
