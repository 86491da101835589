#!/usr/bin/env python3
"""Independent re-computation of a ProcessBench evaluation, and a paired comparison of two.

    python3 scripts/processbench_check.py RUN/eval/processbench-step-000000 [RUN/eval/processbench-step-000003]

From each evaluation folder's `processbench.jsonl` (every item's per-token rewards, policy
log-probs and token -> step map, as the learners wrote them) this recomputes, without airlift's
code: the step scores (interval = mean token reward of a step, dense = its lowest token reward,
log-prob = its mean token log-prob), the out-of-fold thresholds (two folds by id, `(N // 2) % 2`;
each fold predicted with the threshold that maximises F1 on the other), the predicted earliest
wrong step (the first step below the threshold, else -1) and ProcessBench's metric (accuracy on
erroneous items, on correct items, F1), and compares them with the folder's `summary.json`.

With two folders (the same items scored by two checkpoints) it adds the paired difference of
F1 (second minus first) for each method with a 95% bootstrap interval over items.
"""
import json
import math
import random
import sys
from pathlib import Path


def load(folder):
    items = [json.loads(line) for line in open(Path(folder) / "processbench.jsonl")]
    items.sort(key=lambda it: it["item_index"])
    return items


def step_scores(item, key, how):
    n = item["n_steps"]
    per = [[] for _ in range(n)]
    for s, v in zip(item["token_steps"], item[key]):
        if s < n:
            per[s].append(v)
    out = []
    for vals in per:
        if not vals:
            out.append(math.inf)  # a step without tokens never counts as below
        elif how == "mean":
            out.append(sum(vals) / len(vals))
        else:
            out.append(min(vals))
    return out


def first_below(scores, t):
    for i, s in enumerate(scores):
        if s < t:
            return i
    return -1


def metric(preds, labels):
    he = ne = hc = nc = 0
    for p, l in zip(preds, labels):
        if l < 0:
            nc += 1
            hc += p < 0
        else:
            ne += 1
            he += p == l
    ae = he / ne if ne else float("nan")
    ac = hc / nc if nc else float("nan")
    f1 = 2 * ae * ac / (ae + ac) if ae + ac > 0 else 0.0
    return ae, ac, f1


def best_threshold(scores, labels):
    cands = sorted({s for ss in scores for s in ss if math.isfinite(s)})
    best_t, best_f = -math.inf, metric([first_below(s, -math.inf) for s in scores], labels)[2]
    for c in cands:
        t = c + max(abs(c), 1e-12) * 1e-9
        f = metric([first_below(s, t) for s in scores], labels)[2]
        if f > best_f:
            best_t, best_f = t, f
    return best_t


def fold(item_id, position):
    try:
        return (int(item_id.rsplit("-", 1)[1]) // 2) % 2
    except (IndexError, ValueError):
        return position % 2


METHODS = {
    "policy log-prob (step mean)": ("policy_logprobs", "mean"),
    "dense reward (step minimum)": ("token_rewards", "min"),
    "interval reward (step mean)": ("token_rewards", "mean"),
}


def out_of_fold(items, key, how):
    scores = [step_scores(it, key, how) for it in items]
    labels = [it["label"] for it in items]
    folds = [fold(it["id"], i) for i, it in enumerate(items)]
    thresholds = []
    for f in (0, 1):
        tr = [i for i in range(len(items)) if folds[i] != f]
        thresholds.append(best_threshold([scores[i] for i in tr], [labels[i] for i in tr]))
    return [first_below(scores[i], thresholds[folds[i]]) for i in range(len(items))], labels


def main():
    folders = sys.argv[1:]
    if not 1 <= len(folders) <= 2:
        sys.exit(__doc__)
    preds = []
    for folder in folders:
        items = load(folder)
        summary = json.load(open(Path(folder) / "summary.json"))["summary"]
        theirs = {m["method"]: m["metric"] for m in summary["methods"]}
        print(f"{folder}: {len(items)} items")
        per = {}
        for name, (key, how) in METHODS.items():
            p, labels = out_of_fold(items, key, how)
            ae, ac, f1 = metric(p, labels)
            t = theirs.get(name, {})
            agree = all(abs(a - b) < 1e-9 for a, b in [(ae, t.get("acc_error", -1)), (ac, t.get("acc_correct", -1)), (f1, t.get("f1", -1))])
            print(f"  {name:<30} acc err {100 * ae:5.1f}  acc ok {100 * ac:5.1f}  F1 {100 * f1:5.1f}   summary.json: {'same' if agree else 'DIFFERENT ' + str(t)}")
            per[name] = (p, labels)
        preds.append((items, per))
    if len(preds) == 2:
        (a_items, a), (b_items, b) = preds
        assert [it["id"] for it in a_items] == [it["id"] for it in b_items], "the two evaluations must score the same items"
        rng = random.Random(0)
        n = len(a_items)
        print(f"paired F1 differences, {folders[1]} - {folders[0]} (bootstrap over the {n} items, 2000 resamples):")
        for name in METHODS:
            (pa, labels), (pb, _) = a[name], b[name]
            diff = metric(pb, labels)[2] - metric(pa, labels)[2]
            boots = []
            for _ in range(2000):
                idx = [rng.randrange(n) for _ in range(n)]
                la = [labels[i] for i in idx]
                boots.append(metric([pb[i] for i in idx], la)[2] - metric([pa[i] for i in idx], la)[2])
            boots.sort()
            print(f"  {name:<30} {100 * diff:+5.1f}  [{100 * boots[49]:+5.1f}, {100 * boots[1949]:+5.1f}]")


if __name__ == "__main__":
    main()
