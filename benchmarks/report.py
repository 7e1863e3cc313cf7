"""Render the method-comparison results (JSON written by methods.py) as a Markdown table.

Nothing is typed by hand: every figure in the table comes from a result file.

    python benchmarks/report.py benchmarks/results/h200-round2/round2.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path


def load_rows(paths: list[Path]) -> tuple[list[dict], list[dict]]:
    rows, runs = [], []
    for path in paths:
        data = json.loads(path.read_text())
        for run in data if isinstance(data, list) else [data]:
            runs.append({k: v for k, v in run.items() if k != "rows"})
            rows.extend({**row, "device": run["device"]} for row in run["rows"])
    return rows, runs


def fmt(values: list[float]) -> str:
    if len(values) == 1:
        return f"{100 * values[0]:.1f}"
    return f"{100 * statistics.mean(values):.1f} ± {100 * statistics.stdev(values):.1f}"


def table(rows: list[dict]) -> str:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        groups[(row["task"], row["method"], row.get("pooling", "auto"))].append(row)
    lines = [
        "| task | method | pooling | lr | seeds | dev accuracy | dev macro-F1 | best epoch | epochs run | wall s | "
        "trainable params | artifact bytes | device |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (task, method, pooling), group in sorted(groups.items()):
        acc = [r["best"]["accuracy"] for r in group]
        f1 = [r["best"]["macro_f1"] for r in group if "macro_f1" in r["best"]]
        lines.append(
            f"| {task} | {method} | {pooling} | {group[0]['lr']:g} | {','.join(str(r['seed']) for r in group)} | "
            f"{fmt(acc)} | {fmt(f1) if f1 else '—'} | {', '.join(str(int(r['best_epoch'])) for r in group)} | "
            f"{', '.join(str(r['epochs_run']) for r in group)} | "
            f"{', '.join(format(r['wall_s'], '.0f') for r in group)} | "
            f"{group[0]['trainable_params']:,} | {group[0]['artifact_bytes']:,} | {group[0]['device']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, nargs="+")
    args = parser.parse_args()
    rows, runs = load_rows(args.results)
    setup = sorted({(r["torch"], r["transformers"], r["batch_size"], r["max_length"]) for r in runs})
    print(table(rows))
    print()
    for torch_version, tf_version, batch, length in setup:
        print(f"torch {torch_version}, transformers {tf_version}, batch {batch}, max length {length}")


if __name__ == "__main__":
    main()
