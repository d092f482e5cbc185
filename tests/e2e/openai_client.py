#!/usr/bin/env python3
"""End-to-end checks of `tessera serve` with the official, unmodified `openai` Python client.

    python3 tests/e2e/openai_client.py --base-url http://127.0.0.1:8080/v1 \
        --model SmolLM2-135M-Instruct.Q4_1 --api-key KEY [--completion-prefix " Paris."]

Start the server with `--api-key KEY` so the wrong-key check has something to refuse. Prints
one line per check (`ok` or `FAIL`, with the reason) and exits 0 only when every check passed.
The packages are pinned by the caller (scripts/test.sh installs openai and jsonschema).
"""

import argparse
import importlib.metadata
import json
import sys
import traceback

import jsonschema
import openai

CHAT = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
COMPLETION_PROMPT = "The capital of France is"
WEATHER_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "description": "The city name"}},
                "required": ["city"],
                "additionalProperties": False,
            },
        },
    }
]


def check(cond, message):
    """An assertion whose message survives `python3 -O`."""
    if not cond:
        raise AssertionError(message)


def check_usage(usage, max_tokens, what):
    check(usage is not None, f"{what}: no usage")
    check(usage.prompt_tokens > 0, f"{what}: prompt_tokens {usage.prompt_tokens} should be > 0")
    check(usage.completion_tokens > 0, f"{what}: completion_tokens {usage.completion_tokens} should be > 0")
    check(
        usage.total_tokens == usage.prompt_tokens + usage.completion_tokens,
        f"{what}: total_tokens {usage.total_tokens} != prompt_tokens {usage.prompt_tokens}"
        f" + completion_tokens {usage.completion_tokens}",
    )
    check(
        usage.completion_tokens <= max_tokens,
        f"{what}: completion_tokens {usage.completion_tokens} > max_tokens {max_tokens}",
    )


def collect_chat_stream(stream):
    """Concatenated content deltas, the finish reason, the usage chunk, and the chunk count."""
    text, finish, usage, chunks = [], None, None, 0
    for chunk in stream:
        chunks += 1
        if chunk.usage is not None:
            check(chunk.choices == [], f"the usage chunk has choices: {chunk}")
            check(usage is None, "two usage chunks")
            usage = chunk.usage
            continue
        check(usage is None, f"a chunk after the usage chunk: {chunk}")
        for choice in chunk.choices:
            check(choice.index == 0, f"unexpected choice index {choice.index}")
            if choice.delta.content:
                text.append(choice.delta.content)
            if choice.finish_reason is not None:
                check(finish is None, "two finish reasons in one stream")
                finish = choice.finish_reason
    return "".join(text), finish, usage, chunks


class Checks:
    def __init__(self, client, model, completion_prefix):
        self.client = client
        self.model = model
        self.completion_prefix = completion_prefix
        self.base_url = str(client.base_url)

    # --- chat ---------------------------------------------------------------------------------

    def chat(self, **kw):
        args = dict(model=self.model, messages=CHAT, temperature=0, max_tokens=24)
        args.update(kw)
        return self.client.chat.completions.create(**args)

    def check_chat(self):
        r = self.chat()
        check(r.object == "chat.completion", f"object {r.object!r}")
        check(r.model == self.model, f"model {r.model!r} != {self.model!r}")
        check(len(r.choices) == 1, f"{len(r.choices)} choices, expected 1")
        c = r.choices[0]
        check(c.message.role == "assistant", f"role {c.message.role!r}")
        check(c.message.content and c.message.content.strip(), f"empty content: {c.message.content!r}")
        check(c.finish_reason in ("stop", "length"), f"finish_reason {c.finish_reason!r}")
        check_usage(r.usage, 24, "chat")
        if c.finish_reason == "length":
            check(r.usage.completion_tokens == 24, f"finish_reason length but {r.usage.completion_tokens} tokens")
        return f"{c.message.content!r}, {r.usage.completion_tokens} tokens, {c.finish_reason}"

    def check_chat_stream(self):
        want = self.chat(max_tokens=32)
        stream = self.chat(max_tokens=32, stream=True, stream_options={"include_usage": True})
        text, finish, usage, chunks = collect_chat_stream(stream)
        ref = want.choices[0].message.content
        check(text == ref, f"streamed text {text!r} != non-streamed text {ref!r}")
        want_finish = want.choices[0].finish_reason
        check(finish == want_finish, f"streamed finish_reason {finish!r} != {want_finish!r}")
        check_usage(usage, 32, "stream usage chunk")
        check(usage.completion_tokens == want.usage.completion_tokens, f"stream usage {usage} != {want.usage}")
        check(usage.prompt_tokens == want.usage.prompt_tokens, f"stream usage {usage} != {want.usage}")
        check(chunks >= 3, f"only {chunks} chunks: not streamed")
        return f"{chunks} chunks, text as not streamed; usage {usage.prompt_tokens} + {usage.completion_tokens}"

    def check_stop(self):
        full = self.chat(max_tokens=32).choices[0].message.content
        words = full.split()
        check(len(words) >= 2, f"greedy answer too short to pick a stop string: {full!r}")
        # The last word of the greedy answer (a string the model surely writes), given in a list
        # with one it does not write; and a string that starts inside a token and spans several,
        # which a stream must hold back until it can tell.
        last = words[-1].strip(".,!?") or words[-1]
        inner = full[len(full) // 3 :][:7]
        cases = [([last, "\n\n\n"], full[: full.index(last)]), (inner, full[: full.index(inner)])]
        for stop, want in cases:
            r = self.chat(max_tokens=32, stop=stop)
            text = r.choices[0].message.content or ""
            check(text == want, f"stop {stop!r}: {text!r} is not the greedy text cut before it, {want!r}")
            check(r.choices[0].finish_reason == "stop", f"stop {stop!r}: finish_reason {r.choices[0].finish_reason!r}")
            text, finish, _, _ = collect_chat_stream(self.chat(max_tokens=32, stop=stop, stream=True))
            check(text == want, f"stop {stop!r}: streamed text {text!r} != {want!r}")
            check(finish == "stop", f"stop {stop!r}: streamed finish_reason {finish!r}, expected 'stop'")
        return "; ".join(f"{stop!r} -> {want!r}" for stop, want in cases)

    def check_n_seed(self):
        kw = dict(n=2, seed=42, temperature=1.0, max_tokens=16)
        a = self.chat(**kw)
        check(len(a.choices) == 2, f"{len(a.choices)} choices, expected 2")
        check(sorted(c.index for c in a.choices) == [0, 1], f"indices {[c.index for c in a.choices]}")
        for c in a.choices:
            check(c.message.content, f"choice {c.index} is empty")
        check_usage(a.usage, 32, "n=2")
        b = self.chat(**kw)
        texts_a = [c.message.content for c in sorted(a.choices, key=lambda c: c.index)]
        texts_b = [c.message.content for c in sorted(b.choices, key=lambda c: c.index)]
        check(texts_a == texts_b, f"same seed, different answers: {texts_a} vs {texts_b}")
        return f"{texts_a}"

    def check_logprobs(self):
        r = self.chat(max_tokens=8, logprobs=True, top_logprobs=3)
        lp = r.choices[0].logprobs
        check(lp is not None and lp.content is not None, f"no logprobs: {r.choices[0]}")
        check(
            len(lp.content) == r.usage.completion_tokens,
            f"{len(lp.content)} logprob entries for {r.usage.completion_tokens} tokens",
        )
        joined = "".join(e.token for e in lp.content)
        check(joined == r.choices[0].message.content, f"tokens {joined!r} != content {r.choices[0].message.content!r}")
        for e in lp.content:
            check(e.logprob <= 0, f"logprob {e.logprob} > 0 for {e.token!r}")
            top = [t.logprob for t in e.top_logprobs]
            check(len(top) == 3, f"{len(top)} top logprobs for {e.token!r}, expected 3")
            check(top == sorted(top, reverse=True), f"top logprobs not sorted: {top}")
            check(all(t <= 0 for t in top), f"positive top logprob: {top}")
            # Greedy: the chosen token is the most likely one.
            check(
                e.top_logprobs[0].token == e.token and abs(e.top_logprobs[0].logprob - e.logprob) < 1e-4,
                f"greedy token {e.token!r} ({e.logprob}) is not the top one {e.top_logprobs[0]}",
            )
        return f"{len(lp.content)} entries"

    def check_json_schema(self):
        schema = {
            "type": "object",
            "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
            "required": ["city", "country"],
            "additionalProperties": False,
        }
        r = self.chat(
            messages=[{"role": "user", "content": "Name a big city and its country, as JSON."}],
            max_tokens=200,
            response_format={"type": "json_schema", "json_schema": {"name": "place", "strict": True, "schema": schema}},
        )
        text = r.choices[0].message.content
        check(r.choices[0].finish_reason == "stop", f"finish_reason {r.choices[0].finish_reason!r}; content {text!r}")
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            raise AssertionError(f"content is not JSON ({e}): {text!r}") from None
        try:
            jsonschema.validate(value, schema)
        except jsonschema.ValidationError as e:
            raise AssertionError(f"{value!r} does not validate: {e.message}") from None
        return json.dumps(value)

    def check_tool_call(self):
        messages = [{"role": "user", "content": "What is the weather like in Paris today?"}]
        kw = dict(messages=messages, max_tokens=100, tools=WEATHER_TOOLS, tool_choice="required")
        r = self.chat(**kw)
        c = r.choices[0]
        check(c.message.tool_calls, f"no tool calls: {c.message}")
        check(c.finish_reason == "tool_calls", f"finish_reason {c.finish_reason!r}, expected 'tool_calls'")
        calls = []
        for call in c.message.tool_calls:
            check(call.type == "function", f"tool call type {call.type!r}")
            check(call.id, f"tool call without an id: {call}")
            check(call.function.name == "get_weather", f"function name {call.function.name!r}")
            try:
                args = json.loads(call.function.arguments)
            except json.JSONDecodeError as e:
                raise AssertionError(f"arguments are not JSON ({e}): {call.function.arguments!r}") from None
            check(isinstance(args, dict) and isinstance(args.get("city"), str), f"arguments {args!r} lack a city")
            calls.append((call.function.name, call.function.arguments))
        check(len({call.id for call in c.message.tool_calls}) == len(calls), "tool call ids repeat")

        # Streamed, the deltas add up to the same calls (indexed, the name and id in the first delta).
        streamed, finish = {}, None
        for chunk in self.chat(**kw, stream=True):
            for choice in chunk.choices:
                for delta in choice.delta.tool_calls or []:
                    if delta.index not in streamed:
                        check(delta.id and delta.function.name, f"the first delta of call {delta.index}: {delta}")
                        streamed[delta.index] = [delta.function.name, ""]
                    if delta.function and delta.function.arguments:
                        streamed[delta.index][1] += delta.function.arguments
                if choice.finish_reason is not None:
                    finish = choice.finish_reason
        got = [tuple(streamed[i]) for i in sorted(streamed)]
        check(got == calls, f"streamed calls {got} != non-streamed {calls}")
        check(finish == "tool_calls", f"streamed finish_reason {finish!r}")

        # parallel_tool_calls=False: at most one call.
        one = self.chat(**kw, parallel_tool_calls=False).choices[0].message.tool_calls
        check(one is not None and len(one) == 1, f"parallel_tool_calls=False gave {one}")
        shown = ", ".join(f"{name}({json.dumps(json.loads(args))})" for name, args in calls)
        return f"{len(calls)} call(s): {shown}; streamed alike"

    # --- completions --------------------------------------------------------------------------

    def check_completions(self):
        kw = dict(model=self.model, prompt=COMPLETION_PROMPT, max_tokens=8, temperature=0)
        r = self.client.completions.create(**kw)
        check(r.object == "text_completion", f"object {r.object!r}")
        text = r.choices[0].text
        check(text.startswith(self.completion_prefix), f"{text!r} should start with {self.completion_prefix!r}")
        check(r.choices[0].finish_reason == "length", f"finish_reason {r.choices[0].finish_reason!r}")
        check_usage(r.usage, 8, "completion")
        check(r.usage.completion_tokens == 8, f"completion_tokens {r.usage.completion_tokens}, expected 8")

        stream = self.client.completions.create(**kw, stream=True, stream_options={"include_usage": True})
        parts, finish, usage, chunks = [], None, None, 0
        for chunk in stream:
            chunks += 1
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                parts.append(choice.text)
                if choice.finish_reason is not None:
                    finish = choice.finish_reason
        streamed = "".join(parts)
        check(streamed == text, f"streamed {streamed!r} != non-streamed {text!r}")
        check(finish == "length", f"streamed finish_reason {finish!r}")
        check_usage(usage, 8, "completion stream usage")
        check(
            (usage.prompt_tokens, usage.completion_tokens) == (r.usage.prompt_tokens, r.usage.completion_tokens),
            f"stream usage {usage} != {r.usage}",
        )
        return f"{text!r} ({chunks} chunks streamed)"

    # --- models and errors --------------------------------------------------------------------

    def check_models(self):
        ids = [m.id for m in self.client.models.list()]
        check(self.model in ids, f"{self.model!r} not in {ids}")
        return f"{ids}"

    def check_unknown_model(self):
        try:
            self.client.chat.completions.create(model="no-such-model", messages=CHAT, max_tokens=4)
        except openai.NotFoundError as e:
            check(e.status_code == 404, f"status {e.status_code}")
            return f"404: {e.message}"
        raise AssertionError("an unknown model was accepted")

    def check_bad_parameter(self):
        try:
            self.chat(temperature=5)
        except openai.BadRequestError as e:
            check(e.status_code == 400, f"status {e.status_code}")
            check("temperature" in str(e.message), f"the message does not name the parameter: {e.message!r}")
            return f"400: {e.message}"
        raise AssertionError("temperature 5 was accepted")

    def check_wrong_key(self):
        bad = openai.OpenAI(base_url=self.base_url, api_key="wrong-key", max_retries=0)
        try:
            bad.chat.completions.create(model=self.model, messages=CHAT, max_tokens=4)
        except openai.AuthenticationError as e:
            check(e.status_code == 401, f"status {e.status_code}")
            return f"401: {e.message}"
        raise AssertionError("a wrong API key was accepted (start the server with --api-key)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base-url", required=True, help="e.g. http://127.0.0.1:8080/v1")
    ap.add_argument("--model", required=True, help="the served model id")
    ap.add_argument("--api-key", required=True, help="the key the server was started with")
    ap.add_argument(
        "--completion-prefix",
        default=" Paris",
        help=f"what the greedy continuation of {COMPLETION_PROMPT!r} in 8 tokens starts with",
    )
    args = ap.parse_args()

    client = openai.OpenAI(base_url=args.base_url, api_key=args.api_key, max_retries=0, timeout=120)
    checks = Checks(client, args.model, args.completion_prefix)
    names = [n for n in dir(Checks) if n.startswith("check_")]
    # In definition order, not alphabetical, so the output follows the file.
    names.sort(key=lambda n: getattr(Checks, n).__code__.co_firstlineno)
    failed = 0
    print(f"openai {openai.__version__}, jsonschema {importlib.metadata.version('jsonschema')}, {args.base_url}")
    for name in names:
        label = name.removeprefix("check_")
        try:
            detail = getattr(checks, name)()
            print(f"ok    {label}: {detail}", flush=True)
        except AssertionError as e:
            failed += 1
            print(f"FAIL  {label}: {e}", flush=True)
        except openai.APIError as e:
            failed += 1
            status = getattr(e, "status_code", "-")
            print(f"FAIL  {label}: {type(e).__name__} (status {status}): {e}", flush=True)
        except Exception:  # a client-side surprise: show where
            failed += 1
            print(f"FAIL  {label}: {traceback.format_exc().strip()}", flush=True)
    print(f"{len(names) - failed} of {len(names)} checks passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
