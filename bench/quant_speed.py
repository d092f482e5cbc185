#!/usr/bin/env python3
"""The speed of every quantization format, beside Q4_0 and Q8_0, in the same run.

    bench/quant_speed.py --tessera target/release/tessera DIR [--threads 2] [--rounds 3]
        [--reps 2] [-p 512] [-n 128] [--json OUT.json]

DIR is a directory bench/quant-quality.sh filled: one `.gguf` file or compressed-tensors
directory per format (and `source-f32.gguf`). Each round runs `tessera bench` once on every
model, in a rotated order, so that the machine's noise falls on all of them alike; the table
gives the median over rounds of prompt processing (pp) and generation (tg) tok/s and each
format's ratio to Q8_0 and Q4_0. Exits 1 if w8a8-int8 generates or processes prompts slower
than q8_0 by more than the rounds' spread.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys


def models_in(directory):
    found = {}
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if name.endswith(".gguf"):
            found[name[:-5]] = path
        elif os.path.isdir(path) and os.path.exists(os.path.join(path, "config.json")):
            found[name] = path
    return found


def bench(tessera, path, args):
    cmd = [tessera, "bench", "-m", path, "-p", str(args.p), "-n", str(args.n), "-t", str(args.threads),
           "-r", str(args.reps), "-o", "json"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} failed: {out.stderr.strip()}")
    records = json.loads(out.stdout)
    result = {}
    for r in records:
        test = f"pp{r['n_prompt']}" if r["n_prompt"] else f"tg{r['n_gen']}"
        result[test] = r["avg_ts"]
        result["size"] = r.get("model_size")
        result["params"] = r.get("model_n_params")
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tessera", required=True)
    ap.add_argument("dir")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("-p", type=int, default=512)
    ap.add_argument("-n", type=int, default=128)
    ap.add_argument("--json")
    args = ap.parse_args()

    models = models_in(args.dir)
    for needed in ("q8_0", "q4_0"):
        if needed not in models:
            sys.exit(f"error: {args.dir} has no {needed}: run bench/quant-quality.sh first")
    names = list(models)
    runs = {name: [] for name in names}
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            runs[name].append(bench(args.tessera, models[name], args))
            print(f"round {r + 1}/{args.rounds} {name}: " +
                  ", ".join(f"{k} {v:.1f}" for k, v in runs[name][-1].items() if k.startswith(("pp", "tg"))),
                  file=sys.stderr)

    pp, tg = f"pp{args.p}", f"tg{args.n}"

    def med(name, test):
        return statistics.median(run[test] for run in runs[name])

    def spread(name, test):
        values = [run[test] for run in runs[name]]
        return (max(values) - min(values)) / statistics.median(values)

    print(f"\n{args.threads} threads, medians of {args.rounds} rounds of {args.reps} repetitions\n")
    print(f"| format | bits/weight | {pp} tok/s | {tg} tok/s | {pp} vs q8_0 | {tg} vs q8_0 | {pp} vs q4_0 | {tg} vs q4_0 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    table = []
    for name in sorted(names, key=lambda n: -(runs[n][0]["size"] or 0)):
        bpw = 8 * runs[name][0]["size"] / runs[name][0]["params"] if runs[name][0]["params"] else float("nan")
        row = {"format": name, "bits_per_weight": bpw, pp: med(name, pp), tg: med(name, tg)}
        for ref in ("q8_0", "q4_0"):
            row[f"{pp}_vs_{ref}"] = row[pp] / med(ref, pp)
            row[f"{tg}_vs_{ref}"] = row[tg] / med(ref, tg)
        table.append(row)
        print(f"| {name} | {bpw:.2f} | {row[pp]:.1f} | {row[tg]:.1f} | {row[f'{pp}_vs_q8_0']:.2f}x | "
              f"{row[f'{tg}_vs_q8_0']:.2f}x | {row[f'{pp}_vs_q4_0']:.2f}x | {row[f'{tg}_vs_q4_0']:.2f}x |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": args.threads, "rounds": args.rounds, "rows": table,
                       "runs": runs}, f, indent=1)

    if "w8a8-int8" in models:
        failed = False
        for test in (pp, tg):
            ratio = med("w8a8-int8", test) / med("q8_0", test)
            noise = max(spread("w8a8-int8", test), spread("q8_0", test))
            verdict = "met" if ratio >= 1 - noise else "missed"
            failed |= verdict == "missed"
            print(f"w8a8-int8 {test} {ratio:.2f}x q8_0's (goal: not slower; rounds' spread {noise:.0%}): {verdict}")
        return 1 if failed else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
