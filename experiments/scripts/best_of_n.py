"""How well the prior's score (sjc score) picks the best seed, in the toy world where the truth is known.

Reads an `sjc batch` folder of toy prompts × seeds (batch.json and each run's score.json) and prints a Markdown
report: the rank correlation of each score variant with true IoU and PSNR (pooled, and within each prompt's seeds,
which is what selection uses), and what the selected seed gains over seed 0 and over a seed drawn at random.

    python experiments/scripts/best_of_n.py outputs/batch > docs/best-of-n.md
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from scipy.stats import spearmanr


def load(folder: Path) -> dict[str, list[dict]]:
    """{prompt: [{seed, iou, psnr, score variants...}]} for the finished runs."""
    data = json.loads((folder / "batch.json").read_text())
    groups: dict[str, list[dict]] = {}
    for r in data["runs"]:
        if r["status"] != "done":
            continue
        s = json.loads((folder / r["key"] / "score.json").read_text())
        row = {"seed": r["seed"], "iou": r["metrics"]["iou"], "psnr": r["metrics"]["psnr"], "score": s["score"],
               "worst_view": s["worst_view"], **{f"σ={k}": v for k, v in s["by_sigma"].items()}}
        groups.setdefault(r["prompt"], []).append(row)
    return groups


def report(groups: dict[str, list[dict]], folder: Path) -> str:
    variants = [k for k in next(iter(groups.values()))[0] if k not in ("seed", "iou", "psnr")]
    rows = [r for g in groups.values() for r in g]
    n_seeds = sorted({len(g) for g in groups.values()})
    out = [f"{len(groups)} prompts × {'/'.join(map(str, n_seeds))} seeds ({len(rows)} runs) from `{folder}`.", "",
           "Rank correlation (Spearman ρ) of each score with the truth: pooled over all runs, and the mean over "
           "prompts of ρ among one prompt's seeds (what selection uses).", "",
           "| score | ρ with IoU, pooled | ρ with PSNR, pooled | ρ with IoU, within prompt | ρ with PSNR, within prompt |",
           "|---|---|---|---|---|"]
    for v in variants:
        pooled = [spearmanr([r[v] for r in rows], [r[m] for r in rows])[0] for m in ("iou", "psnr")]
        within = []
        for m in ("iou", "psnr"):
            rho = [spearmanr([r[v] for r in g], [r[m] for r in g])[0] for g in groups.values() if len(g) > 2]
            rho = [x for x in rho if x == x]   # a prompt whose seeds tie on the truth gives no ρ
            within.append(statistics.mean(rho) if rho else float("nan"))
        out.append(f"| {v} | {pooled[0]:+.2f} | {pooled[1]:+.2f} | {within[0]:+.2f} | {within[1]:+.2f} |")
    out += ["", "What selecting the seed with the highest score gains, per prompt (mean ± standard deviation over "
                "prompts; 'random' is the mean over a prompt's seeds, 'oracle' the best seed by the truth):", "",
            "| score | IoU gain over seed 0 | over random | PSNR gain over seed 0 (dB) | over random | "
            "IoU left to the oracle |", "|---|---|---|---|---|---|"]

    def ms(xs):
        return f"{statistics.mean(xs):+.3f} ± {statistics.pstdev(xs):.3f}"

    for v in variants:
        gi0, gir, gp0, gpr, left = [], [], [], [], []
        for g in groups.values():
            pick = max(g, key=lambda r: (r[v], -r["seed"]))
            zero = next(r for r in g if r["seed"] == min(x["seed"] for x in g))
            gi0.append(pick["iou"] - zero["iou"])
            gir.append(pick["iou"] - statistics.mean(r["iou"] for r in g))
            gp0.append(pick["psnr"] - zero["psnr"])
            gpr.append(pick["psnr"] - statistics.mean(r["psnr"] for r in g))
            left.append(max(r["iou"] for r in g) - pick["iou"])
        out.append(f"| {v} | {ms(gi0)} | {ms(gir)} | {ms(gp0)} | {ms(gpr)} | {ms(left)} |")
    out += ["", "Per prompt (IoU of each seed; * the seed `score` selects):", "", "| prompt | seeds' IoU |", "|---|---|"]
    for p, g in groups.items():
        pick = max(g, key=lambda r: (r["score"], -r["seed"]))
        out.append(f"| {p} | " + ", ".join(f"{r['iou']:.3f}{'*' if r is pick else ''}" for r in g) + " |")
    return "\n".join(out) + "\n"


def main(argv=None) -> None:
    folder = Path((argv or sys.argv[1:])[0])
    print(report(load(folder), folder), end="")


if __name__ == "__main__":
    main()
