#!/usr/bin/env python3
"""Writes a GGUF model with a real architecture's shapes and random weights, for speed tests.

Weights' values do not change speed, so a Llama-3.1-8B-shaped file made here times the same as the
real model. Quantized tensors get random quants and small random scales (no NaN or Inf), so the
forward pass stays finite. The tokenizer is a placeholder byte-level BPE vocabulary of the real
size that llama.cpp and Tessera both load.

    python3 bench/make_random_gguf.py --shape llama-3.2-1b --type q4_0 -o /tmp/llama-1b-q4_0.gguf
"""

import argparse
import sys

import numpy as np
import gguf

SHAPES = {
    # Hugging Face config.json values of the real models.
    "smollm2-135m": dict(n_layer=30, n_embd=576, n_ff=1536, n_head=9, n_head_kv=3, n_vocab=49152, tied=True),
    "smollm2-360m": dict(n_layer=32, n_embd=960, n_ff=2560, n_head=15, n_head_kv=5, n_vocab=49152, tied=True),
    "llama-3.2-1b": dict(n_layer=16, n_embd=2048, n_ff=8192, n_head=32, n_head_kv=8, n_vocab=128256, tied=True),
    "llama-3.2-3b": dict(n_layer=28, n_embd=3072, n_ff=8192, n_head=24, n_head_kv=8, n_vocab=128256, tied=True),
    "llama-3.1-8b": dict(n_layer=32, n_embd=4096, n_ff=14336, n_head=32, n_head_kv=8, n_vocab=128256, tied=False),
}

Q = gguf.GGMLQuantizationType
TYPES = {"q4_0": Q.Q4_0, "q8_0": Q.Q8_0, "f16": Q.F16, "bf16": Q.BF16}


def random_blocks(rng, n_rows, n_cols, qtype):
    """Random bytes of `n_rows` rows of `n_cols` weights in `qtype`, scales set to small finite values."""
    block_len, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    n_blocks = n_rows * n_cols // block_len
    raw = rng.integers(0, 256, size=(n_blocks, block_bytes), dtype=np.uint8)
    # Q4_0 and Q8_0 blocks start with an f16 scale; F16 and BF16 are all scale (small values).
    values = rng.random(n_blocks, dtype=np.float32) * 0.02 + 0.001
    if qtype == Q.BF16:
        scales = (values.view(np.uint32) >> 16).astype(np.uint16)
    else:
        scales = values.astype(np.float16)
    raw[:, 0:2] = scales.view(np.uint8).reshape(n_blocks, 2)
    return raw.reshape(n_rows, n_cols // block_len * block_bytes)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=sorted(SHAPES), required=True)
    ap.add_argument("--type", choices=sorted(TYPES), required=True, help="type of the matrices")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    s = SHAPES[args.shape]
    qtype = TYPES[args.type]
    rng = np.random.default_rng(args.seed)
    head_dim = s["n_embd"] // s["n_head"]
    kv_dim = s["n_head_kv"] * head_dim

    w = gguf.GGUFWriter(args.output, "llama")
    w.add_name(f"{args.shape} random weights")
    w.add_context_length(131072)
    w.add_embedding_length(s["n_embd"])
    w.add_block_count(s["n_layer"])
    w.add_feed_forward_length(s["n_ff"])
    w.add_head_count(s["n_head"])
    w.add_head_count_kv(s["n_head_kv"])
    w.add_rope_dimension_count(head_dim)
    w.add_rope_freq_base(500000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type({Q.Q4_0: 2, Q.Q8_0: 7, Q.F16: 1, Q.BF16: 32}[qtype])
    w.add_vocab_size(s["n_vocab"])

    # Placeholder byte-level BPE vocabulary: the 256 byte symbols, then unique filler tokens.
    byte_symbols = [gguf_byte(b) for b in range(256)]
    # One merge (two spaces), since loaders require a non-empty merge list.
    tokens = byte_symbols + ["ĠĠ"] + [f"<t{i}>" for i in range(s["n_vocab"] - 256 - 3)] + ["<|bos|>", "<|eos|>"]
    types = [1] * (s["n_vocab"] - 2) + [3, 3]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(["Ġ Ġ"])
    w.add_bos_token_id(s["n_vocab"] - 2)
    w.add_eos_token_id(s["n_vocab"] - 1)

    def matrix(name, rows, cols, qt=qtype):
        if qt == Q.F16:
            w.add_tensor(name, (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).astype(np.float16))
        else:
            w.add_tensor(name, random_blocks(rng, rows, cols, qt), raw_dtype=qt)

    def norm(name, n):
        w.add_tensor(name, np.ones(n, dtype=np.float32))

    # Embeddings and output as llama-quantize leaves them for these types: same type as the matrices.
    matrix("token_embd.weight", s["n_vocab"], s["n_embd"])
    for i in range(s["n_layer"]):
        p = f"blk.{i}."
        norm(p + "attn_norm.weight", s["n_embd"])
        matrix(p + "attn_q.weight", s["n_embd"], s["n_embd"])
        matrix(p + "attn_k.weight", kv_dim, s["n_embd"])
        matrix(p + "attn_v.weight", kv_dim, s["n_embd"])
        matrix(p + "attn_output.weight", s["n_embd"], s["n_embd"])
        norm(p + "ffn_norm.weight", s["n_embd"])
        matrix(p + "ffn_gate.weight", s["n_ff"], s["n_embd"])
        matrix(p + "ffn_up.weight", s["n_ff"], s["n_embd"])
        matrix(p + "ffn_down.weight", s["n_embd"], s["n_ff"])
    norm("output_norm.weight", s["n_embd"])
    if not s["tied"]:
        matrix("output.weight", s["n_vocab"], s["n_embd"])

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file(progress=False)
    w.close()
    print(f"wrote {args.output}", file=sys.stderr)


def gguf_byte(b):
    """GPT-2's printable stand-in for byte `b`, as byte-level BPE vocabularies store it."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    if b in printable:
        return chr(b)
    n = sum(1 for x in range(b) if x not in printable)
    return chr(256 + n)


if __name__ == "__main__":
    main()
