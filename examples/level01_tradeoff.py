"""The level 0 / level 1 trade across every estimator measured: a02's level 0 against a01's level 1.

Reads every acceptance record under benchmarks/results (the `estimator_acceptance*.json` files,
and the `acceptance` entries of the A/B and probe files) and lists, for each, the share of a02's
whole field called level 0 at 0 µm and of a01's called level 1 at 2 µm (default pooling unless
the record says otherwise). a02 in focus is blurrier than a01 at 2 µm (`focus_ambiguity.py`), so
an estimator that reads the blur calls both right only by what it assumes of the specimen: the
sum shows how far each got (the issue's 98 % at both is 196 %). Records with identical whole-field
rows (one run filed twice) are counted once.

    python examples/level01_tradeoff.py -o benchmarks/results/level01_tradeoff.json

Prints one JSON summary as its last line.
"""

import argparse
import json
import os
import pathlib
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import write_result  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def acceptance_records(results):
    """(name, record) for every acceptance record in the JSON files of `results`: a record is a
    dict with 'uniform_share_right' for fields a02 and a01, at the top level of a file, under a
    file's 'acceptance' or 'acceptance_matched_noise' key, or one level below ('runs', A/B arms)."""
    for path in sorted(pathlib.Path(results).glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except ValueError:
            continue
        if not isinstance(data, dict):
            continue
        stack = [(path.stem, data)]
        while stack:
            name, node = stack.pop(0)
            if not isinstance(node, dict):
                continue
            share = node.get("uniform_share_right")
            if isinstance(share, dict) and {"a01", "a02"} <= set(share):
                yield name, node
                continue
            if name.count("/") < 3:
                stack.extend((f"{name}/{k}", v) for k, v in node.items() if isinstance(v, dict))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default=str(RESULTS), help="folder of result JSONs (default benchmarks/results)")
    ap.add_argument("-o", "--output", default=None)
    args = ap.parse_args(argv)
    if not pathlib.Path(args.results).is_dir():
        ap.error(f"--results: {args.results} is not a folder of result JSONs")
    rows, seen = [], set()
    for name, rec in acceptance_records(args.results):
        share = rec["uniform_share_right"]
        key = (tuple(share["a02"]), tuple(share["a01"]))
        if key in seen or share["a02"][0] is None or share["a01"][1] is None:
            continue
        seen.add(key)
        noise = rec.get("noise", "matched" if name.endswith("acceptance_matched_noise") else "white")
        rows.append({"record": name, "noise": noise, "a02_level0": share["a02"][0], "a01_level1": share["a01"][1],
                     "sum": share["a02"][0] + share["a01"][1], "a01_mean": sum(share["a01"]) / len(share["a01"])})
    if not rows:
        ap.error(f"--results: no acceptance records with fields a02 and a01 in {args.results}")
    sums = [r["sum"] for r in rows]
    result = {"records": len(rows), "sum_range": [min(sums), max(sums)], "rows": rows}
    summary = {"records": len(rows), "sum_range": [round(100 * v) for v in result["sum_range"]],
               "top": sorted(((round(100 * r["sum"]), r["record"]) for r in rows), reverse=True)[:4]}
    write_result(result, args.output, summary=summary)


if __name__ == "__main__":
    main()
