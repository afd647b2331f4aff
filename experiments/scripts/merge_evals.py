"""Several `sjc eval` files as one table, ordered prompt, then variant, then as in the files (the methods tables).

Each variant's rows come from the first file that holds it; the config is the last file's and `sources` names the
file behind each variant.

    python experiments/scripts/merge_evals.py docs/toy-prior/eval-methods --variants paas sds \\
        --files docs/eval.json experiments/toy-prior/wide/methods-sds.json
"""
import argparse
import json

from sjc.evaluate import write_tables

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="output prefix: writes OUT.json and OUT.md")
    ap.add_argument("--variants", nargs="+", required=True, help="the variants to keep, in the table's order")
    ap.add_argument("--files", nargs="+", required=True, help="eval JSON files holding them")
    args = ap.parse_args()

    data = {f: json.load(open(f)) for f in args.files}
    sources = {}
    for f, d in data.items():
        for r in d["rows"]:
            sources.setdefault(r["variant"], f)
    missing = [v for v in args.variants if v not in sources]
    if missing:
        raise SystemExit(f"merge_evals: no rows for {', '.join(missing)} in {', '.join(args.files)}")
    rows = [r for v in args.variants for r in data[sources[v]]["rows"] if r["variant"] == v]
    prompts = list(dict.fromkeys(r["prompt"] for r in rows))
    rows = [r for p in prompts for v in args.variants for r in rows if r["prompt"] == p and r["variant"] == v]
    write_tables(args.out, rows, args.variants, data[args.files[-1]]["config"],
                 sources={v: sources[v] for v in args.variants})


if __name__ == "__main__":
    main()
