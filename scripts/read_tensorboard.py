#!/usr/bin/env python3
"""Reads a run's TensorBoard event files with TensorBoard's own reader and prints every scalar
as JSON: {"tag": [[step, value], ...], ...} (steps in file order, so duplicates show).

    .venv/bin/python scripts/read_tensorboard.py runs/default/tensorboard

`make test` installs the `tensorboard` package into ./.venv; the tests compare its reading of
the files airlift wrote with the run's metrics.jsonl.
"""
import json
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator, SCALARS


def main(logdir):
    # 0: keep every event; no purging of "orphaned" steps, so a step written twice reads twice.
    acc = EventAccumulator(logdir, size_guidance={SCALARS: 0}, purge_orphaned_data=False)
    acc.Reload()
    out = {tag: [[e.step, e.value] for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    json.dump(out, sys.stdout, sort_keys=True)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: read_tensorboard.py LOGDIR")
    main(sys.argv[1])
