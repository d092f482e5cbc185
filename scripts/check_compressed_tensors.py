#!/usr/bin/env python3
"""Checks compressed-tensors checkpoints written by `tessera quantize` against code Tessera did
not write: the `compressed-tensors` package (config parsing, decompression, its own
quantization of the same weights) and `transformers` (the float model read from the source GGUF
file, the quantized model's logits).

For each output directory it checks:
  1. `quantization_config` parses as compressed-tensors' `QuantizationConfig`.
  2. Every quantized Linear decompresses with the compressor its `format` names; the result is
     compared with the source's float weights (relative error, per format bound), and, for the
     formats without calibration, the codes are compared with compressed-tensors' own
     quantization of the same float weights (`calculate_qparams` + `quantize`; the scale rounded
     to the checkpoint's dtype first, as the checkpoint stores it).
  3. Unquantized tensors (embeddings, norms) equal the source's up to the float type's rounding
     (the norms AWQ and W8A8's smoothing fold scales into are checked through the model's output
     instead).
  4. With --dequantizer BIN (the `dequantize_checkpoint` example of crates/quantize, which writes
     the weights as Tessera's own reader dequantizes them), decompressed weights equal Tessera's.
  5. transformers loads the directory (decompressing) with the tokenizer from `tokenizer.gguf` or
     `tokenizer.json`; the logits on a test text are compared with the source model's: KL
     divergence and top-1 agreement are printed, and must stay within per-format bounds.

Usage:
  cargo build -p tessera-quantize --examples
  python scripts/check_compressed_tensors.py --source SmolLM2-135M-Instruct.Q4_1.gguf \
      --dequantizer $CARGO_TARGET_DIR/debug/examples/dequantize_checkpoint OUT_DIR...
"""

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from compressed_tensors.compressors import BaseCompressor  # noqa: E402
from compressed_tensors.quantization import QuantizationConfig, QuantizationScheme  # noqa: E402
from compressed_tensors.quantization.lifecycle.forward import quantize  # noqa: E402
from compressed_tensors.quantization.utils import calculate_qparams, generate_gparam  # noqa: E402

# Held out from the built-in calibration text (crates/quantize/calibration/default.txt).
TEXT = (
    "Bees communicate the location of food through a dance performed on the vertical comb inside the hive. "
    "The angle of the waggle run relative to straight up matches the angle between the food source and the "
    "sun, and the length of the run tells the other foragers how far they must fly. A colony can shift its "
    "foraging effort within hours when a richer patch of flowers appears.\n\n"
    "import json\n\nwith open('settings.json') as f:\n    settings = json.load(f)\nfor key, value in "
    "sorted(settings.items()):\n    print(f'{key}: {value}')\n\n"
    "Q: How long should I let the bread dough rise?\nA: Until it has roughly doubled in size, usually one to "
    "two hours in a warm kitchen. Press a floured finger into it: if the dent springs back slowly, it is ready."
)

# Relative Frobenius error of a decompressed weight against the source's, per format.
WEIGHT_ERROR_BOUND = {
    "int-quantized": 0.02,
    "float-quantized": 0.06,
    "pack-quantized": 0.4,
    "nvfp4-pack-quantized": 0.2,
    "mxfp4-pack-quantized": 0.3,
}
# Mean KL divergence (nats per token) of the quantized model's next-token distribution from the
# source model's: loose bounds that catch a broken checkpoint (a wrong row order or norm gives
# several nats), not a quality target.
KL_BOUND = {
    "int-quantized": 0.05,
    "float-quantized": 0.1,
    "pack-quantized": 1.0,
    "nvfp4-pack-quantized": 1.0,
    "mxfp4-pack-quantized": 1.5,
}

TORCH_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def source_model(path):
    from transformers import AutoModelForCausalLM

    if os.path.isdir(path):
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    else:
        model = AutoModelForCausalLM.from_pretrained(
            os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32
        )
    return model.eval()


def tokenizer_for(out_dir, source):
    from transformers import AutoTokenizer

    if os.path.exists(os.path.join(out_dir, "tokenizer.json")):
        return AutoTokenizer.from_pretrained(out_dir)
    if os.path.exists(os.path.join(out_dir, "tokenizer.gguf")):
        return AutoTokenizer.from_pretrained(out_dir, gguf_file="tokenizer.gguf")
    return AutoTokenizer.from_pretrained(os.path.dirname(source), gguf_file=os.path.basename(source))


def modules(tensors):
    """Quantized module prefixes and their local state dicts."""
    out = {}
    for name, t in tensors.items():
        for local in ("weight_packed", "weight_scale", "weight_shape", "weight_global_scale", "weight"):
            if name.endswith("." + local):
                prefix = name[: -len(local) - 1]
                out.setdefault(prefix, {})[local] = t
                break
    return {p: sd for p, sd in out.items() if "weight_scale" in sd}


def rtn_codes(weight, scheme, scale_dtype):
    """compressed-tensors' quantization of `weight` (f32), with its scale rounded to the stored
    dtype first, as (codes as float, scale, global scale)."""
    args = scheme.weights
    w = weight.float()
    rows, cols = w.shape
    global_scale = None
    if args.strategy == "channel":
        mn, mx = w.amin(dim=1, keepdim=True), w.amax(dim=1, keepdim=True)
    elif args.strategy == "tensor":
        mn, mx = w.amin().reshape(1), w.amax().reshape(1)
    else:
        g = w.reshape(rows, cols // args.group_size, args.group_size)
        mn, mx = g.amin(dim=2), g.amax(dim=2)
    if args.strategy == "tensor_group":
        global_scale = generate_gparam(w.amin(), w.amax())
    scale, zp = calculate_qparams(mn, mx, args, global_scale=global_scale)
    if args.scale_dtype is None:
        scale = scale.to(scale_dtype).float()
    codes = quantize(w, scale, zp, args, global_scale=global_scale)
    return codes, scale, global_scale


GGUF_LINEARS = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def gguf_name(prefix):
    """The GGUF name Tessera gives a Hugging Face Linear module's weight."""
    m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", prefix)
    return f"blk.{m.group(1)}.{GGUF_LINEARS[m.group(2)]}.weight"


def tessera_dequantized(dequantizer, out_dir):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "dump.safetensors")
        subprocess.run([dequantizer, out_dir, path], check=True, stdout=subprocess.DEVNULL)
        return load_file(path)


def decompress(sd, scheme, fmt):
    """compressed-tensors' decompression, in the dtype it returns."""
    compressor = BaseCompressor.get_value_from_registry(fmt)
    return compressor.decompress(dict(sd), scheme)["weight"]


def ulps(w, t):
    """How far Tessera's f32 value `t` is from compressed-tensors' `w`, in units in the last
    place of `w`'s dtype (compressed-tensors multiplies code and scale in that dtype)."""
    eps = torch.finfo(w.dtype).eps
    diff = (w.float() - t.to(w.dtype).float()).abs()
    return (diff / (w.float().abs().clamp(min=torch.finfo(w.dtype).tiny) * eps)).max().item()


def check_dir(out_dir, source, reference, dequantizer, method):
    problems = []
    config = json.load(open(os.path.join(out_dir, "config.json")))
    qc = QuantizationConfig.model_validate(config["quantization_config"])
    fmt = qc.format
    scheme = QuantizationScheme.model_validate(qc.config_groups["group_0"])
    dtype = TORCH_DTYPES[config["torch_dtype"]]
    tensors = load_file(os.path.join(out_dir, "model.safetensors"))
    ref = {k: v.float() for k, v in reference.state_dict().items()}
    dump = tessera_dequantized(dequantizer, out_dir) if dequantizer else None
    calibrated = method in ("awq", "gptq", "smooth")
    # AWQ and W8A8's smoothing fold scales into the weights and norms: those are checked
    # through the model's output instead.
    folded = method in ("awq", "smooth")

    mods = modules(tensors)
    worst, code_match, code_total, dump_diff = 0.0, 0, 0, 0.0
    for prefix, sd in sorted(mods.items()):
        w_raw = decompress(sd, scheme, fmt)
        w = w_raw.float()
        r = ref[prefix + ".weight"]
        if w.shape != r.shape:
            problems.append(f"{prefix}: decompressed shape {tuple(w.shape)}, source {tuple(r.shape)}")
            continue
        if dump is not None:
            dump_diff = max(dump_diff, ulps(w_raw, dump[gguf_name(prefix)]))
        if not folded:
            err = ((w - r).norm() / r.norm()).item()
            worst = max(worst, err)
        if not calibrated:
            codes, scale, gscale = rtn_codes(r, scheme, dtype)
            mine = quantize(w, scale, None, scheme.weights, global_scale=gscale)
            code_match += (mine == codes).sum().item()
            code_total += codes.numel()
    line = f"{out_dir}: {fmt}, {len(mods)} quantized Linears"
    if not folded:
        line += f", worst relative weight error {worst:.4f}"
        if worst > WEIGHT_ERROR_BOUND[fmt]:
            problems.append(f"relative weight error {worst:.4f} above {WEIGHT_ERROR_BOUND[fmt]}")
    if code_total:
        frac = code_match / code_total
        line += f", codes equal to compressed-tensors' quantization: {frac * 100:.4f}%"
        if frac < 0.999:
            problems.append(f"only {frac * 100:.3f}% of codes equal compressed-tensors' own")
    if dump is not None:
        line += f", Tessera's dequantization within {dump_diff:.2f} ulp"
        if dump_diff > 1.0:
            problems.append(f"decompressed weights differ from Tessera's by {dump_diff} ulp")
    print(line)

    # Unquantized tensors.
    for name, t in tensors.items():
        if any(name.endswith("." + s) for s in ("weight_packed", "weight_scale", "weight_shape", "weight_global_scale")):
            continue
        if name.rsplit(".", 1)[0] in mods:
            continue
        if folded and "norm" in name:
            continue
        r = ref.get(name)
        if r is None:
            problems.append(f"{name}: not in the source model")
            continue
        if t.shape != r.shape:
            problems.append(f"{name}: shape {tuple(t.shape)}, source {tuple(r.shape)}")
            continue
        diff = (t.float() - r.to(t.dtype).float()).abs().max().item()
        if diff != 0.0:
            problems.append(f"{name}: differs from the source rounded to {t.dtype} by {diff}")

    # The model's output.
    from transformers import AutoModelForCausalLM, CompressedTensorsConfig

    model = AutoModelForCausalLM.from_pretrained(
        out_dir, dtype=torch.float32, quantization_config=CompressedTensorsConfig(run_compressed=False)
    ).eval()
    tok = tokenizer_for(out_dir, source)
    ids = tok(TEXT, return_tensors="pt").input_ids
    with torch.no_grad():
        p = torch.log_softmax(reference(ids).logits.float(), -1)
        q = torch.log_softmax(model(ids).logits.float(), -1)
    kl = (p.exp() * (p - q)).sum(-1).mean().item()
    top1 = (p.argmax(-1) == q.argmax(-1)).float().mean().item()
    print(f"  {len(ids[0])} tokens: KL {kl:.5f} nats/token, top-1 agreement {top1 * 100:.1f}%")
    if not math.isfinite(kl) or kl > KL_BOUND[fmt]:
        problems.append(f"KL divergence {kl} above {KL_BOUND[fmt]}")
    for p_ in problems:
        print(f"  PROBLEM: {p_}")
    return problems, kl


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", required=True, help="the model that was quantized (.gguf file or HF directory)")
    ap.add_argument("--dequantizer", help="crates/quantize's dequantize_checkpoint example binary")
    ap.add_argument(
        "--method", action="append", default=[], help="rtn, awq, gptq or smooth (w8a8) per directory (default: from the name)"
    )
    ap.add_argument("outputs", nargs="+")
    args = ap.parse_args()
    reference = source_model(args.source)
    failed = False
    results = {}
    for i, out in enumerate(args.outputs):
        if i < len(args.method):
            method = args.method[i]
        else:
            name = os.path.basename(os.path.normpath(out)).lower()
            method = next((m for m in ("awq", "gptq") if m in name), "smooth" if "w8a8" in name else "rtn")
        problems, kl = check_dir(out, args.source, reference, args.dequantizer, method)
        results[out] = kl
        failed |= bool(problems)
    print(json.dumps(results, indent=1))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
