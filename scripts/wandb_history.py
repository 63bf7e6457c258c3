"""Print the logged history of an offline W&B run (its `run-*.wandb` file), for the keys given.

clrun's own runs log to W&B offline without an API key; so did our run of the InterContiNet
authors' release (docs/results.md). Reads the file with the reader of whichever wandb is
installed, so it runs in either environment:

    python scripts/wandb_history.py RUN_DIR 'Accuracy/eval/test/exp1' 'current_radius_sum/fc1'
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def history(run_file: Path):
    """Yield each history row (a dict) of a .wandb file, in order."""
    from wandb.proto import wandb_internal_pb2
    from wandb.sdk.internal import datastore

    store = datastore.DataStore()
    store.open_for_scan(str(run_file))
    while True:
        try:
            data = store.scan_data()
        except AssertionError:  # a run still writing: its last record is not complete yet
            return
        if data is None:
            return
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        if record.WhichOneof("record_type") == "history":
            yield {item.key: json.loads(item.value_json) for item in record.history.item}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="an offline-run-* folder (or its parent)")
    parser.add_argument("keys", nargs="+", help="history keys; rows without any are skipped")
    args = parser.parse_args()
    files = sorted(args.run_dir.rglob("run-*.wandb"))
    if not files:
        print(f"wandb_history: no run-*.wandb file under {args.run_dir}", file=sys.stderr)
        return 2
    for row in history(files[-1]):
        values = {k: row[k] for k in args.keys if k in row}
        if values:
            step = row.get("_step")
            print(step, " ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}"
                                 for k, v in values.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
