#!/usr/bin/env python3
# Where the interval reading points, from an evaluation's corruptions.parquet (an independent
# reading, not airlift's code): for each corruption kind, the interval reading's hit@1 (the line
# of lowest mean token reward, the first on ties, is the line of the first error), how often it
# picks the trace's last line (the `####` answer), and how often the error is on the last line.
# Usage: scripts/interval_picks.py RUN/eval/NAME/corruptions.parquet ... (needs pyarrow, e.g.
# `pip install --target /tmp/pa pyarrow` and PYTHONPATH=/tmp/pa).
import collections
import sys

import pyarrow.parquet as pq


def lowest_mean_line(lines, rewards):
    sums, counts = collections.defaultdict(float), collections.Counter()
    for line, r in zip(lines, rewards):
        sums[line] += r
        counts[line] += 1
    return min(sums, key=lambda line: (sums[line] / counts[line], line))


def main():
    for path in sys.argv[1:]:
        by_kind = collections.defaultdict(collections.Counter)
        for row in pq.read_table(path, columns=["kind", "token_lines", "token_rewards", "first_error_line"]).to_pylist():
            last = max(row["token_lines"])
            pick = lowest_mean_line(row["token_lines"], row["token_rewards"])
            c = by_kind[row["kind"]]
            c["n"] += 1
            c["hit"] += pick == row["first_error_line"]
            c["picks last"] += pick == last
            c["error on last"] += row["first_error_line"] == last
        print(path)
        for kind, c in sorted(by_kind.items()):
            n = c["n"]
            print(f"  {kind:16s} n = {n:3d}: hit@1 {c['hit'] / n:.3f}, picks the last line {c['picks last'] / n:.3f}, error on the last line {c['error on last'] / n:.3f}")


if __name__ == "__main__":
    main()
