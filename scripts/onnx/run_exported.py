#!/usr/bin/env python3
"""Drives a `tessera export onnx` directory with ONNX Runtime's Python package, following only
its manifest.json, and writes the logits of every token of a sequence.

    run_exported.py DIR TOKENS.json OUT.f32 [--provider cpu|qnn] [--skip-prefill]

Tokens are read from a JSON array. Runs of `tokens` (the prefill graph's length) go through the
prefill graph; the rest one at a time through the decode graph. OUT.f32 holds float32 logits
[len(tokens), vocab], row-major, little-endian. This is the reference Tessera's own ONNX Runtime
backend is checked against: nothing here comes from Tessera but the files.
"""
import argparse
import json
import os
import sys

import numpy as np
import onnxruntime as ort


def rope_table(positions, rot_dims, base, freq_scale, fn):
    # The angle built by repeated f32 multiplication, as ggml (and Tessera's CPU backend) builds it.
    half = rot_dims // 2
    theta_scale = np.float32(base) ** np.float32(-2.0 / rot_dims)
    theta_scale = np.float32(theta_scale)
    out = np.zeros((len(positions), half), np.float32)
    for r, p in enumerate(positions):
        theta = np.float32(p)
        for i in range(half):
            out[r, i] = fn(np.float32(np.float32(freq_scale) * theta))
            theta = np.float32(theta * theta_scale)
    return out


def mask(positions, context, window, masked):
    # The cache before the step, then the step's own rows; the step starts at positions[0].
    n, start = len(positions), positions[0]
    m = np.full((n, context + n), masked, np.float32)
    for r, p in enumerate(positions):
        first = 0 if window is None else max(0, p + 1 - window)
        for j in range(first, p + 1):
            m[r, j if j < start else context + j - start] = 0.0
    return m


def session(path, provider):
    so = ort.SessionOptions()
    if provider == "qnn":
        import onnxruntime_qnn

        if not any(d.ep_name == "QNNExecutionProvider" for d in ort.get_ep_devices()):
            ort.register_execution_provider_library("QNNExecutionProvider", onnxruntime_qnn.get_library_path())
        devices = [d for d in ort.get_ep_devices() if d.ep_name == "QNNExecutionProvider"]
        so.add_provider_for_devices(devices, {"backend_type": "htp"})
        so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
        return ort.InferenceSession(path, sess_options=so)
    return ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("tokens")
    ap.add_argument("out")
    ap.add_argument("--provider", default="cpu", choices=["cpu", "qnn"])
    ap.add_argument("--skip-prefill", action="store_true", help="use only the decode graph")
    args = ap.parse_args()

    manifest = json.load(open(os.path.join(args.dir, "manifest.json")))
    assert manifest["format"] == "tessera-onnx", manifest["format"]
    tokens = json.load(open(args.tokens))
    context, width = manifest["context"], manifest["kv_width"]
    if len(tokens) > context:
        sys.exit(f"{len(tokens)} tokens do not fit the exported context of {context}")
    graphs = sorted(manifest["graphs"], key=lambda g: -g["tokens"])
    sessions = {g["file"]: session(os.path.join(args.dir, g["file"]), args.provider) for g in graphs}
    kv = {}
    for layer in range(manifest["n_layers"]):
        for part in ("key", "value"):
            kv[(layer, part)] = np.zeros((context, width), np.float32)

    logits = []
    done = 0
    while done < len(tokens):
        left = len(tokens) - done
        g = next(g for g in graphs if g["tokens"] <= left and not (args.skip_prefill and g["tokens"] > 1))
        n = g["tokens"]
        ids = np.array(tokens[done : done + n], np.int32)
        positions = list(range(done, done + n))
        feeds = {}
        for port in g["inputs"]:
            kind = port["kind"]
            if kind == "tokens":
                value = ids
            elif kind in ("rope_cos", "rope_sin"):
                fn = np.cos if kind == "rope_cos" else np.sin
                value = rope_table(positions, port["rot_dims"], port["base"], port["freq_scale"], fn)
            elif kind == "mask":
                value = mask(positions, context, port.get("window"), port["masked"])
            elif kind == "kv":
                value = kv[(port["layer"], port["part"])]
            else:
                sys.exit(f"unknown input kind {kind}")
            feeds[port["name"]] = value.astype({"float32": np.float32, "int32": np.int32, "int64": np.int64}[port["elem_type"]])
        outs = sessions[g["file"]].run([p["name"] for p in g["outputs"]], feeds)
        for port, value in zip(g["outputs"], outs):
            if port["kind"] == "kv":
                kv[(port["layer"], port["part"])][done : done + n] = value
            elif port["kind"] == "logits":
                logits.append(value[-n:])
        done += n
    np.concatenate(logits).astype("<f4").tofile(args.out)


if __name__ == "__main__":
    main()
