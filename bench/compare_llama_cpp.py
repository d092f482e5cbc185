#!/usr/bin/env python3
"""Times `tessera bench` against `llama-bench` on the same model files, alternating the two.

These machines are noisy (two vCPUs may share one core), so each comparison alternates the two
programs for several rounds and reports the median of each side; the ratio is tessera / llama.cpp
taken from the medians of the same run. Peak RSS of each process comes from wait4().

Usage (bench/compare-llama-cpp.sh prepares the binaries and models and calls this):
    compare_llama_cpp.py --tessera BIN --llama-bench BIN --model NAME=PATH ... [--threads 1,2]
                         [--rounds 3] [--reps 3] [-p 512] [-n 128] [--out results.json]
                         [--tessera-arg=--backend=wgpu] [--llama-arg=-ngl=99]

--tessera-arg and --llama-arg add arguments to every run of each program (`=` inside the value
separates words), so the same comparison runs on a GPU: bench/compare-llama-vulkan.sh.
"""

import argparse
import json
import os
import statistics
import sys
import time


def run_with_rss(cmd):
    """Runs `cmd` and returns (stdout, peak RSS bytes of that process) using os.wait4."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.dup2(w, 1)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        try:
            os.execvp(cmd[0], cmd)
        finally:
            os._exit(127)
    os.close(w)
    chunks = []
    while True:
        b = os.read(r, 1 << 16)
        if not b:
            break
        chunks.append(b)
    os.close(r)
    _, status, usage = os.wait4(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with {code}")
    return b"".join(chunks).decode(), usage.ru_maxrss * 1024


def test_name(rec):
    p, n = rec["n_prompt"], rec["n_gen"]
    return f"pp{p}" if n == 0 else f"tg{n}" if p == 0 else f"pp{p}+tg{n}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tessera", required=True)
    ap.add_argument("--llama-bench", required=True)
    ap.add_argument("--model", action="append", required=True, help="NAME=PATH (repeatable)")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("-p", "--n-prompt", type=int, default=512)
    ap.add_argument("-n", "--n-gen", type=int, default=128)
    ap.add_argument("--out", help="write every sample and the summary here (JSON)")
    ap.add_argument("--tessera-arg", action="append", default=[], help="extra `tessera bench` argument")
    ap.add_argument("--llama-arg", action="append", default=[], help="extra `llama-bench` argument")
    args = ap.parse_args()
    tessera_extra = [w for a in args.tessera_arg for w in a.split("=")]
    llama_extra = [w for a in args.llama_arg for w in a.split("=")]

    threads = [int(t) for t in args.threads.split(",")]
    models = [m.split("=", 1) for m in args.model]
    samples = {}  # (model, threads, test, program) -> [avg_ts per round]
    rss = {}  # (model, threads, program) -> [peak RSS per round]
    bandwidth = {}
    for t in threads:
        out, _ = run_with_rss([args.tessera, "bench", "--mem-bandwidth", "-t", str(t), "-r", "3", "--json"])
        bandwidth[t] = json.loads(out)[0]["read_gbs"]
        print(f"host read bandwidth, {t} threads: {bandwidth[t]:.2f} GB/s", file=sys.stderr)
    common = ["-p", str(args.n_prompt), "-n", str(args.n_gen), "-r", str(args.reps)]
    for name, path in models:
        for t in threads:
            for rnd in range(args.rounds):
                # Alternate which program goes first, so drifting load hits both alike.
                order = ["tessera", "llama.cpp"] if rnd % 2 == 0 else ["llama.cpp", "tessera"]
                for prog in order:
                    if prog == "tessera":
                        cmd = [args.tessera, "bench", "-m", path, "-t", str(t), "--json", *common, *tessera_extra]
                    else:
                        cmd = [args.llama_bench, "-m", path, "-t", str(t), "-o", "json", *common, *llama_extra]
                    out, peak = run_with_rss(cmd)
                    for rec in json.loads(out):
                        samples.setdefault((name, t, test_name(rec), prog), []).append(rec["avg_ts"])
                    rss.setdefault((name, t, prog), []).append(peak)
                    print(f"{name} t={t} round {rnd + 1}/{args.rounds} {prog}: done", file=sys.stderr)

    rows = []
    print()
    print("| model | threads | test | tessera t/s | llama.cpp t/s | ratio | tessera RSS MiB | llama.cpp RSS MiB |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for name, _ in models:
        for t in threads:
            for test in sorted({k[2] for k in samples if k[0] == name and k[1] == t}, key=lambda s: s[:2] != "pp"):
                ts = statistics.median(samples[(name, t, test, "tessera")])
                ll = statistics.median(samples[(name, t, test, "llama.cpp")])
                rt = statistics.median(rss[(name, t, "tessera")]) / 2**20
                rl = statistics.median(rss[(name, t, "llama.cpp")]) / 2**20
                rows.append(dict(model=name, threads=t, test=test, tessera_ts=ts, llama_cpp_ts=ll, ratio=ts / ll,
                                 tessera_rss_mib=rt, llama_cpp_rss_mib=rl,
                                 tessera_samples=samples[(name, t, test, "tessera")],
                                 llama_cpp_samples=samples[(name, t, test, "llama.cpp")]))
                print(f"| {name} | {t} | {test} | {ts:.2f} | {ll:.2f} | {ts / ll:.2f}x | {rt:.1f} | {rl:.1f} |")
    # Decode reads every weight once per token: bytes/token x tokens/s against measured bandwidth.
    for r in rows:
        if r["test"].startswith("tg"):
            size = os.path.getsize(dict(models)[r["model"]])
            r["tessera_roofline_fraction"] = size * r["tessera_ts"] / (bandwidth[r["threads"]] * 1e9)
            r["llama_cpp_roofline_fraction"] = size * r["llama_cpp_ts"] / (bandwidth[r["threads"]] * 1e9)
    print()
    print("decode as a fraction of the bandwidth roofline (file bytes per token / measured read bandwidth):")
    for r in rows:
        if "tessera_roofline_fraction" in r:
            print(f"  {r['model']} t={r['threads']}: tessera {r['tessera_roofline_fraction']:.0%}, "
                  f"llama.cpp {r['llama_cpp_roofline_fraction']:.0%}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(dict(time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), bandwidth_gbs=bandwidth,
                           rounds=args.rounds, reps=args.reps, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
