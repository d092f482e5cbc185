#!/usr/bin/env python3
"""A mixed local fleet behind `tessera route`: one `tessera serve` and one llama.cpp
`llama-server` on the same model file, with different prices, and two tenants. Sends chat
requests through the router with the official `openai` client and prints where each tenant's
requests went, the tokens each upstream generated and what they cost at its $/Mtok.

    bench/route_mixed_fleet.py --tessera target/release/tessera --llama-server PATH/llama-server \
        --model SmolLM2.gguf [--requests 16] [--concurrency 4] [--max-tokens 24]
"""

import argparse
import collections
import concurrent.futures
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import openai


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url, proc, what, limit=180):
    deadline = time.time() + limit
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"error: {what} exited with status {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit(f"error: {what} was not healthy within {limit} s")


FLEET = """
[router]
listen = "127.0.0.1:{router_port}"
ttft_slo_ms = 4000
health_interval_ms = 500

[[upstream]]
name = "tessera-cpu"
url = "http://127.0.0.1:{tessera_port}"
models = ["smollm2"]
hardware = "local-zen3-2c"
region = "eu-west"
cost_per_mtok = {tessera_cost}
max_concurrency = 8

[[upstream]]
name = "llama-server-cpu"
url = "http://127.0.0.1:{llama_port}"
models = ["smollm2"]
hardware = "local-zen3-2c"
region = "us-east"
cost_per_mtok = {llama_cost}
max_concurrency = 4

[[tenant]]
name = "eu-only"
api_keys = ["sk-eu"]
allowed_regions = ["eu-west"]

[[tenant]]
name = "anywhere"
api_keys = ["sk-any"]
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tessera", required=True)
    ap.add_argument("--llama-server", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--threads", type=int, default=1, help="threads per server (they share the machine)")
    ap.add_argument("--requests", type=int, default=16, help="requests per tenant")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=24)
    ap.add_argument("--tessera-cost", type=float, default=0.05)
    ap.add_argument("--llama-cost", type=float, default=0.08)
    args = ap.parse_args()

    ports = {"router_port": free_port(), "tessera_port": free_port(), "llama_port": free_port()}
    tmp = tempfile.mkdtemp(prefix="tessera-fleet-")
    fleet_path = os.path.join(tmp, "fleet.toml")
    with open(fleet_path, "w") as f:
        f.write(FLEET.format(tessera_cost=args.tessera_cost, llama_cost=args.llama_cost, **ports))
    logs = open(os.path.join(tmp, "servers.log"), "w")
    procs = []
    try:
        procs.append(subprocess.Popen(
            [args.tessera, "serve", "-m", args.model, "--port", str(ports["tessera_port"]),
             "--served-model-name", "smollm2", "-t", str(args.threads)], stdout=logs, stderr=logs))
        procs.append(subprocess.Popen(
            [args.llama_server, "-m", args.model, "--port", str(ports["llama_port"]), "-t", str(args.threads),
             "-np", "4", "-c", "8192", "--alias", "smollm2"], stdout=logs, stderr=logs))
        wait_healthy(f"http://127.0.0.1:{ports['tessera_port']}", procs[0], "tessera serve")
        wait_healthy(f"http://127.0.0.1:{ports['llama_port']}", procs[1], "llama-server")
        procs.append(subprocess.Popen([args.tessera, "route", "--config", fleet_path], stdout=logs, stderr=logs))
        router = f"http://127.0.0.1:{ports['router_port']}"
        wait_healthy(router, procs[2], "tessera route")
        time.sleep(1.0)  # one probe round, so both upstreams are known healthy

        def ask(key, i):
            client = openai.OpenAI(base_url=router + "/v1", api_key=key, max_retries=0)
            # Two shared system prompts: prefix affinity keeps each on one upstream while it can.
            system = ["You answer in one short sentence.", "You are a terse assistant for engineers."][i % 2]
            try:
                raw = client.chat.completions.with_raw_response.create(
                    model="smollm2", max_tokens=args.max_tokens, temperature=0,
                    messages=[{"role": "system", "content": system},
                              {"role": "user", "content": f"Name one use of the number {i}."}])
            except openai.APIStatusError as e:
                return f"(refused {e.status_code})", 0
            reply = raw.parse()
            return raw.headers.get("x-tessera-upstream"), reply.usage.completion_tokens

        costs = {"tessera-cpu": args.tessera_cost, "llama-server-cpu": args.llama_cost}
        regions = {"tessera-cpu": "eu-west", "llama-server-cpu": "us-east"}
        print(f"| tenant | upstream | region | requests | tokens generated | cost at $/Mtok |")
        print("|---|---|---|---|---|---|")
        for tenant, key in [("eu-only", "sk-eu"), ("anywhere", "sk-any")]:
            start = time.time()
            # The EU tenant has one upstream of 8 slots; the other may spill over to the second.
            workers = min(args.concurrency, 6) if tenant == "eu-only" else args.concurrency
            with concurrent.futures.ThreadPoolExecutor(workers) as pool:
                results = list(pool.map(lambda i: ask(key, i), range(args.requests)))
            per = collections.defaultdict(lambda: [0, 0])
            for upstream, tokens in results:
                per[upstream][0] += 1
                per[upstream][1] += tokens
            for upstream, (n, tokens) in sorted(per.items()):
                if upstream not in costs:
                    print(f"| {tenant} | {upstream} | | {n} | | |")
                    continue
                cost = tokens * costs[upstream] / 1e6
                print(f"| {tenant} | {upstream} | {regions[upstream]} | {n} | {tokens} | "
                      f"${cost:.8f} (${costs[upstream]}/Mtok) |")
            if tenant == "eu-only" and "llama-server-cpu" in per:
                sys.exit("error: the eu-only tenant reached an upstream outside its region")
            print(f"<!-- {tenant}: {len(results)} requests in {time.time() - start:.1f} s -->")
        with urllib.request.urlopen(router + "/metrics") as r:
            for line in r.read().decode().splitlines():
                if line.startswith(("tessera_route_upstream_requests_total", "tessera_route_requests_total",
                                    "tessera_route_upstream_failures_total")):
                    print("    " + line)
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    main()
