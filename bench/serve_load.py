#!/usr/bin/env python3
"""Load generator for OpenAI-compatible servers: streaming chat completions at a fixed concurrency.

    bench/serve_load.py --url http://127.0.0.1:8080 --model ID --concurrency 4 --requests 32
    bench/serve_load.py ... --shared-system-tokens 1000 --max-tokens 8   # a long shared system prompt
    bench/serve_load.py --report results.jsonl                          # markdown tables of many runs

Each of `--concurrency` workers sends streaming `/v1/chat/completions` requests back to back
(temperature 0, `max_tokens` 64, `stream_options.include_usage`) over ~50 varied prompts until
`--requests` are done. Per request it measures the time to the first content chunk (TTFT) and the
times between content chunks (inter-token latency, ITL); generated tokens are the usage chunk's
`completion_tokens` (content chunks are counted where a server sends no usage). Prints one JSON
object on stdout (append it to a .jsonl file for `--report`) and a summary line on stderr.

Standard library only (a small HTTP/1.1 client on asyncio streams), so it runs with any
python3 and measures the same way against every server.
"""

import argparse
import asyncio
import json
import statistics
import sys
import time
import urllib.parse

PROMPTS = [
    "Explain how a refrigerator keeps food cold.",
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "What are the main causes of the French Revolution?",
    "Describe the water cycle to a ten-year-old.",
    "Give me three tips for learning a new language as an adult.",
    "How does a binary search work? Explain step by step.",
    "Write a polite email asking a colleague to review a document by Friday.",
    "What is the difference between weather and climate?",
    "Summarize the plot of Romeo and Juliet in a few sentences.",
    "Why is the sky blue?",
    "Suggest a healthy breakfast for a busy weekday morning.",
    "Explain photosynthesis in simple terms.",
    "What should I pack for a three-day hiking trip?",
    "Write a haiku about autumn leaves, then explain its imagery.",
    "How do vaccines train the immune system?",
    "Compare cats and dogs as pets.",
    "What is a prime number? Give some examples.",
    "Describe how bread rises when it is baked.",
    "Give advice to someone starting their first job.",
    "Explain what an API is to a non-programmer.",
    "What were the consequences of the invention of the printing press?",
    "How can I improve my sleep?",
    "Write a limerick about a forgetful robot.",
    "Explain the rules of chess briefly.",
    "What is machine learning?",
    "Describe the life cycle of a butterfly.",
    "How does compound interest work?",
    "List some ways to reduce plastic waste at home.",
    "Why do we have seasons on Earth?",
    "Write a product description for a reusable water bottle.",
    "Explain the difference between a virus and a bacterium.",
    "How do airplanes stay in the air?",
    "What makes a good presentation?",
    "Describe a typical day in ancient Rome.",
    "How do I make a simple tomato sauce?",
    "Explain recursion with an example.",
    "What are the benefits of regular exercise?",
    "Write a short dialogue between a customer and a bookshop owner.",
    "How does the internet route a message from one computer to another?",
    "What is the role of the mitochondria in a cell?",
    "Give me a plan to read more books this year.",
    "Explain supply and demand.",
    "Why do leaves change color in the fall?",
    "Describe the solar system's planets in order.",
    "How can a small team communicate better?",
    "What is the Pythagorean theorem and where is it used?",
    "Write a motivational message for a student before an exam.",
    "How do volcanoes form?",
    "Explain what a budget is and how to make one.",
    "Tell me about the history of the bicycle.",
]

# Questions asked after the shared system prompt (the prefix-cache test).
SHORT_QUESTIONS = [
    "Which rule covers refunds?",
    "How long is the warranty?",
    "Who do I call for an outage?",
    "Can I change my delivery address?",
    "What are the opening hours?",
    "Is there a student discount?",
    "How do I reset my password?",
    "Where is my invoice?",
    "Can I pay by bank transfer?",
    "What happens if a parcel is lost?",
    "Do you ship abroad?",
    "How do I close my account?",
]

_POLICY = [
    "Customers may return any unused item within thirty days of delivery for a full refund.",
    "Refunds are paid to the original payment method within five working days of receiving the item.",
    "Every device carries a two-year warranty that covers manufacturing defects but not accidental damage.",
    "Support agents answer the phone from eight in the morning to six in the evening, Monday to Saturday.",
    "Outages are reported to the operations desk, which is staffed around the clock.",
    "A delivery address can be changed until the parcel leaves the warehouse.",
    "Students with a valid card receive ten percent off all accessories.",
    "Passwords are reset from the sign-in page by following the link sent by email.",
    "Invoices are listed under the orders tab of the account page and can be downloaded as PDF files.",
    "Bank transfers are accepted for orders above two hundred euros.",
    "Lost parcels are investigated with the carrier for up to ten days before a replacement is sent.",
    "International shipping is available to every country in the European Union and to Switzerland.",
    "Accounts are closed on request; personal data is deleted after the legal retention period.",
]


def shared_system_prompt(tokens):
    """A deterministic support-desk handbook of about `tokens` tokens (~1.3 tokens per word)."""
    words, parts, i = 0, ["You are the support assistant of an online shop. Follow this handbook."], 0
    while words * 1.3 < tokens:
        sentence = f"Rule {i + 1}: {_POLICY[i % len(_POLICY)]}"
        parts.append(sentence)
        words += len(sentence.split())
        i += 1
    return " ".join(parts)


class HttpError(Exception):
    pass


async def stream_post(url, body, api_key):
    """POSTs JSON and yields the server-sent events' `data` payloads as they arrive."""
    u = urllib.parse.urlsplit(url)
    host, port = u.hostname, u.port or 80
    reader, writer = await asyncio.open_connection(host, port)
    try:
        payload = json.dumps(body).encode()
        head = [
            f"POST {u.path} HTTP/1.1",
            f"Host: {host}:{port}",
            "Content-Type: application/json",
            "Accept: text/event-stream",
            f"Content-Length: {len(payload)}",
            "Connection: close",
        ]
        if api_key:
            head.append(f"Authorization: Bearer {api_key}")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
        await writer.drain()

        status = (await reader.readline()).decode("latin-1").split(" ", 2)
        headers = {}
        while True:
            line = (await reader.readline()).decode("latin-1").strip()
            if not line:
                break
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip().lower()
        code = int(status[1]) if len(status) > 1 and status[1].isdigit() else 0

        async def body_chunks():
            if "chunked" in headers.get("transfer-encoding", ""):
                while True:
                    size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        return
                    data = await reader.readexactly(size)
                    await reader.readexactly(2)
                    yield data
            elif "content-length" in headers:
                yield await reader.readexactly(int(headers["content-length"]))
            else:
                while data := await reader.read(65536):
                    yield data

        if code != 200:
            text = b"".join([c async for c in body_chunks()]).decode(errors="replace")
            raise HttpError(f"HTTP {code}: {text[:300]}")
        buf = b""
        async for data in body_chunks():
            buf += data.replace(b"\r\n", b"\n")
            while b"\n\n" in buf:
                event, buf = buf.split(b"\n\n", 1)
                for line in event.split(b"\n"):
                    if line.startswith(b"data:"):
                        yield line[5:].strip().decode()
    finally:
        writer.close()


async def one_request(args, messages):
    body = {
        "model": args.model,
        "messages": messages,
        "max_tokens": args.max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    t0 = time.perf_counter()
    stamps, usage, content_chunks, finish = [], None, 0, None
    async for data in stream_post(args.url.rstrip("/") + "/v1/chat/completions", body, args.api_key):
        if data == "[DONE]":
            break
        now = time.perf_counter()
        event = json.loads(data)
        if event.get("usage"):
            usage = event["usage"]
        for choice in event.get("choices") or []:
            if (choice.get("delta") or {}).get("content"):
                stamps.append(now)
                content_chunks += 1
            finish = choice.get("finish_reason") or finish
    if not stamps:
        raise HttpError(f"no content in the answer (finish_reason {finish})")
    tokens = usage["completion_tokens"] if usage else content_chunks
    return {
        "ttft": stamps[0] - t0,
        "itl": [b - a for a, b in zip(stamps, stamps[1:])],
        "tokens": tokens,
        "prompt_tokens": usage["prompt_tokens"] if usage else None,
        "usage": usage is not None,
        "end": stamps[-1],
    }


def messages_for(i, system):
    if system:
        question = SHORT_QUESTIONS[i % len(SHORT_QUESTIONS)]
        return [{"role": "system", "content": system}, {"role": "user", "content": question}]
    return [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]


def percentile(xs, p):
    """Linear interpolation between closest ranks (numpy's default)."""
    if not xs:
        return None
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


async def run_load(args):
    system = shared_system_prompt(args.shared_system_tokens) if args.shared_system_tokens else None
    for _ in range(args.warmup):
        # A question outside the measured set: it warms the server (and, with a shared system
        # prompt, its prefix cache) without caching any measured prompt whole.
        hello = [{"role": "user", "content": "Hello! Who are you?"}]
        await one_request(args, ([{"role": "system", "content": system}] if system else []) + hello)
    queue = list(range(args.requests))
    results, errors = [], []

    async def worker():
        while queue:
            i = queue.pop(0)
            try:
                results.append(await one_request(args, messages_for(i, system)))
            except (HttpError, OSError, ValueError, KeyError, asyncio.IncompleteReadError) as e:
                errors.append(f"request {i}: {type(e).__name__}: {e}")

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    wall = time.perf_counter() - t0
    ttft = [r["ttft"] for r in results]
    prompt = [r["prompt_tokens"] for r in results]
    itl = [x for r in results for x in r["itl"]]
    tokens = sum(r["tokens"] for r in results)
    ms = lambda v: None if v is None else round(v * 1000, 2)  # noqa: E731
    return {
        "label": args.label,
        "url": args.url,
        "model": args.model,
        "concurrency": args.concurrency,
        "requests": args.requests,
        "completed": len(results),
        "errors": errors,
        "max_tokens": args.max_tokens,
        "shared_system_tokens": args.shared_system_tokens,
        "prompt_tokens_mean": statistics.mean(prompt) if prompt and None not in prompt else None,
        "tokens_from_usage": all(r["usage"] for r in results),
        "generated_tokens": tokens,
        "wall_s": round(wall, 3),
        "tok_s": round(tokens / wall, 2) if wall > 0 else None,
        "ttft_p50_ms": ms(percentile(ttft, 50)),
        "ttft_p99_ms": ms(percentile(ttft, 99)),
        "itl_p50_ms": ms(percentile(itl, 50)),
        "itl_p99_ms": ms(percentile(itl, 99)),
        "round": args.round,
    }


def summary_line(r):
    return (
        f"{r['label'] or r['url']}: c={r['concurrency']} {r['completed']}/{r['requests']} ok, "
        f"{r['generated_tokens']} tokens in {r['wall_s']:.2f} s = {r['tok_s']} tok/s, "
        f"TTFT p50 {r['ttft_p50_ms']} ms p99 {r['ttft_p99_ms']} ms, "
        f"ITL p50 {r['itl_p50_ms']} ms p99 {r['itl_p99_ms']} ms"
    )


def report(path):
    """Markdown tables of the medians over rounds, from a .jsonl file of runs labelled by server."""
    runs = [json.loads(line) for line in open(path) if line.strip()]
    med = lambda xs: statistics.median(xs) if xs else float("nan")  # noqa: E731

    def pick(label, c, key, system=False):
        return med([r[key] for r in runs if r["label"] == label and r["concurrency"] == c
                    and bool(r["shared_system_tokens"]) == system and r[key] is not None])

    load = [r for r in runs if not r["shared_system_tokens"]]
    if load:
        rounds = max(r["round"] for r in load) + 1
        print(f"Generated tok/s, TTFT and ITL (ms): medians of {rounds} round(s), "
              f"{load[0]['requests']} requests of {load[0]['max_tokens']} tokens at most per run\n")
        print("| concurrency | tessera tok/s | llama-server tok/s | ratio | TTFT p50 tessera / llama | "
              "TTFT p99 tessera / llama | ITL p50 tessera / llama | ITL p99 tessera / llama |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|")
        for c in sorted({r["concurrency"] for r in load}):
            t, l = pick("tessera", c, "tok_s"), pick("llama-server", c, "tok_s")
            cells = [f"{c}", f"{t:.1f}", f"{l:.1f}", f"{t / l:.2f}x"]
            for key in ("ttft_p50_ms", "ttft_p99_ms", "itl_p50_ms", "itl_p99_ms"):
                cells.append(f"{pick('tessera', c, key):.1f} / {pick('llama-server', c, key):.1f}")
            print("| " + " | ".join(cells) + " |")
        if rounds > 1:
            # A wide spread means the machine was busy: compare rounds before trusting the medians.
            print("\ntok/s per round: " + "; ".join(
                f"c={c} " + ", ".join(
                    f"{label} " + " ".join(f"{r['tok_s']:.1f}" for r in sorted(load, key=lambda r: r["round"])
                                           if r["label"] == label and r["concurrency"] == c)
                    for label in ("tessera", "llama-server"))
                for c in sorted({r["concurrency"] for r in load})))
        if any(r["concurrency"] == 4 for r in load):
            ratio = pick("tessera", 4, "tok_s") / pick("llama-server", 4, "tok_s")
            t, l = pick("tessera", 4, "ttft_p50_ms"), pick("llama-server", 4, "ttft_p50_ms")
            print(f"\nTarget at concurrency 4: tok/s {ratio:.2f}x llama-server's (goal >= 1.5x: "
                  f"{'met' if ratio >= 1.5 else 'missed'}); TTFT p50 {t:.1f} vs {l:.1f} ms (goal: no worse: "
                  f"{'met' if t <= l else 'missed'})")
    cache = [r for r in runs if r["shared_system_tokens"]]
    if cache:
        on = pick("tessera prefix cache on", 1, "ttft_p50_ms", True)
        off = pick("tessera prefix cache off", 1, "ttft_p50_ms", True)
        prompt = cache[0]["prompt_tokens_mean"]
        print(f"\nShared system prompt ({prompt:.0f} prompt tokens on average), concurrency 1, "
              f"{cache[0]['requests']} requests: TTFT p50 with the prefix cache {on:.1f} ms, "
              f"without {off:.1f} ms: {off / on:.1f}x faster with it "
              f"(goal >= 3x: {'met' if off / on >= 3 else 'missed'})")
    bad = [e for r in runs for e in r["errors"]]
    if bad:
        print(f"\n{len(bad)} failed requests, e.g. {bad[0]}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="server root, e.g. http://127.0.0.1:8080")
    ap.add_argument("--model", default="default", help="model id sent in requests")
    ap.add_argument("--api-key")
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=1, help="unmeasured requests first")
    ap.add_argument("--shared-system-tokens", type=int, default=0,
                    help="start every request with the same system prompt of about this many tokens")
    ap.add_argument("--label", default="", help="name of the server in the output (the report groups by it)")
    ap.add_argument("--round", type=int, default=0, help="round number, recorded in the output")
    ap.add_argument("--report", metavar="JSONL", help="print markdown tables from collected runs and exit")
    args = ap.parse_args()
    if args.report:
        report(args.report)
        return 0
    if not args.url:
        ap.error("--url is required")
    result = asyncio.run(run_load(args))
    print(json.dumps(result))
    print(summary_line(result), file=sys.stderr)
    for e in result["errors"][:5]:
        print(f"  {e}", file=sys.stderr)
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
