"""The short terminal summary of an inspection (rich tables); ``inspect.json`` holds every number."""

from __future__ import annotations

import math

from rich import box
from rich.console import Console
from rich.table import Table

NEAREST_SHOWN = 10  # slots listed in the terminal; inspect.json has all of them


def _number(value, digits: int = 3) -> str:
    return "-" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.{digits}f}"


def _percent(value) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{100 * value:.1f}%"


def _pair(prompt, tokens) -> str:
    return f"{_number(prompt, 2)}/{_number(tokens, 2)}"


def layer_table(report: dict) -> Table:
    """One row per layer: attention on the prompt, its top slots, prompt vs token norms, the ablation."""
    attention, norms, ablation = report.get("attention"), report.get("norms"), report.get("ablation")
    layers = report["geometry"]["layers"]
    title = f"{report['name']}: task {report['task']['name']}, {report['method']['method']}"
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("layer", justify="right")
    if attention and attention["probabilities"]:
        table.add_column("on prompt", justify="right")
        table.add_column("top slots")
    if norms:
        table.add_column("key norm", justify="right")
        table.add_column("value norm", justify="right")
    if ablation:
        table.add_column("w/o layer", justify="right")
        table.add_column("only layer", justify="right")
    for layer in range(layers):
        row = [str(layer)]
        if attention and attention["probabilities"]:
            row.append(_percent(attention["share_by_layer"][layer]))
            row.append(" ".join(str(t["slot"]) for t in attention["top_slots"][layer]))
        if norms:
            by_layer = norms["by_layer"]
            tokens = by_layer["token_key"], by_layer["token_value"]
            row.append(_pair(by_layer["prompt_key"][layer], tokens[0][layer] if tokens[0] else None))
            row.append(_pair(by_layer["prompt_value"][layer], tokens[1][layer] if tokens[1] else None))
        if ablation:
            row += [_number(ablation["without_layer"][layer]), _number(ablation["only_layer"][layer])]
        table.add_row(*row)
    return table


def nearest_table(report: dict) -> Table | None:
    rows = report.get("nearest_tokens")
    if not rows:
        return None
    title = "nearest vocabulary tokens of the input prompt (cosine)"
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("slot", justify="right")
    table.add_column("nearest tokens")
    for row in rows[:NEAREST_SHOWN]:
        table.add_row(str(row["slot"]), ", ".join(f"{t['token']} ({t['cosine']:.2f})" for t in row["nearest"][:3]))
    return table


def print_report(report: dict, console: Console, output: str) -> None:
    """The tables, the ablation's two reference scores, the notes, and where the files went."""
    console.print(layer_table(report))
    console.print(
        "on prompt: share of real tokens' attention on the prompt slots (top slots: most attended first); "
        "key/value norm: mean L2 norm of one head's key/value vector, prompt slots / real tokens",
        markup=False,
    )
    ablation = report.get("ablation")
    if ablation:
        console.print(
            f"w/o layer, only layer: {ablation['metric']} with that layer's prompt removed / kept alone; "
            f"{_number(ablation['all_layers'])} with the prompt in every layer, "
            f"{_number(ablation['no_layer'])} with none (the head on the plain backbone)",
            markup=False,
        )
    nearest = nearest_table(report)
    if nearest is not None:
        console.print(nearest)
        if len(report["nearest_tokens"]) > NEAREST_SHOWN:
            console.print(f"({len(report['nearest_tokens']) - NEAREST_SHOWN} more slots in inspect.json)")
    for note in report["notes"]:
        console.print(f"note: {note}", style="yellow", markup=False)
    console.print(f"written to {output}", markup=False)


def print_similarity(comparison: dict, console: Console) -> None:
    for pair in comparison["pairs"]:
        cosines = " ".join(_number(c, 2) for c in pair["cosine"])
        console.print(f"{pair['a']} vs {pair['b']} ({pair['kind']}): cosine per layer {cosines}", markup=False)
    for reason in comparison["skipped"]:
        console.print(f"note: not compared: {reason}", style="yellow", markup=False)
