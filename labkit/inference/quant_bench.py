"""One table per model: bytes, decode speed (% of roofline) and quality per precision.

- :func:`measure_precisions` and ``python -m labkit bench quant [--json]``
  (:func:`bench_quant_cli`): the PyTorch precisions of :mod:`labkit.inference.quant`.
- :func:`measure_onnx_precisions`: the same rows for a production CPU kernel, ONNX Runtime's
  block-quantized ``MatMulNBits`` (:data:`ONNX_PRECISIONS`: ``ort-fp32``, ``ort-int8``,
  ``ort-int4``, ``ort-int4-g32``), on the same model, same prompt, same text, same bandwidth probe.
"""

from __future__ import annotations

import argparse
import json

import torch

from labkit.inference.decode_bench import bench_prompt, decode_benchmark
from labkit.inference.quant import PRECISIONS, quantize_model
from labkit.inference.quant_quality import (heldout_logits, heldout_text, model_bytes,
                                            perplexity_from_logits, quality, top1_agreement)
from labkit.machine.facts import last_level_cache_bytes
from labkit.machine.probes import gemv_read_GBps
from labkit.machine.scratch import scratch_dir


#: The precision the course recommends for int8 (reported under the key ``int8``).
RECOMMENDED_INT8 = "int8"


def measure_precisions(model, precisions=PRECISIONS, *, new_tokens: int = 24, repeats: int = 3,
                       max_tokens: int = 256, sample_prompt: str | None = None,
                       sample_tokens: int = 16, bandwidth_GBps: float | None = None,
                       threads: int = 1,
                       reference_logits: torch.Tensor | None = None) -> list[dict]:
    """Quantize ``model`` (fp32) to each precision in turn and measure it, in one run.

    Per precision: ``bytes`` (stored format of the projections and head, :func:`~labkit.inference.quant_quality.model_bytes`
    ``linear``), ``total_bytes``, ``decode_tok_s`` and ``pct_roofline`` (via
    :func:`labkit.inference.decode_bench.decode_benchmark`, ``threads`` threads, best of ``repeats``, against
    one GEMV bandwidth probe measured here), ``perplexity`` and ``top1_agreement`` with fp32 on
    the held-out text (first ``max_tokens`` tokens; pass fp32's logits there as
    ``reference_logits`` if you have them), and a greedy ``sample``. Only one quantized copy
    exists at a time.
    """

    unknown = [p for p in precisions if p not in PRECISIONS]
    if unknown:
        raise ValueError(f"unknown precisions {unknown}; use some of {', '.join(PRECISIONS)}")
    if bandwidth_GBps is None:
        bandwidth_GBps = gemv_read_GBps(threads=threads)["best_GBps"]
    ref_logits = (heldout_logits(model, max_tokens=max_tokens)[0] if reference_logits is None
                  else reference_logits)
    if sample_prompt is None:
        sample_prompt = (model.chat_prompt("What does a Kubernetes node do?")
                         if model.chat_template else "A Kubernetes node")
    rows = []
    for precision in precisions:
        qm = model if precision == "fp32" else quantize_model(model, precision)
        q = quality(qm, ref_logits, max_tokens=max_tokens)
        speed = decode_benchmark(qm, new_tokens=new_tokens, repeats=repeats, threads=threads,
                                 bandwidth_GBps=bandwidth_GBps)
        size = model_bytes(qm)
        sample = qm.generate(sample_prompt, sample_tokens, threads=threads).text
        rows.append({"precision": precision, "bytes": size["linear"],
                     "total_bytes": size["total"], "decode_tok_s": speed["decode_tok_s"],
                     "decode_tok_s_min": speed["decode_tok_s_min"],
                     "pct_roofline": speed["pct_roofline"],
                     "roofline_tok_s": speed["roofline_tok_s"],
                     "perplexity": round(q["perplexity"], 4),
                     "top1_agreement": round(q["top1_agreement"], 4), "sample": sample,
                     "bandwidth_GBps": round(bandwidth_GBps, 2)})
        del qm
    return rows


#: ONNX Runtime rows of ``bench quant``: name -> MatMulNBits settings (None: plain fp32 MatMul).
#: All in blocks of 32 inputs with ``accuracy_level=4`` (int8 arithmetic on the activations
#: where the CPU kernel has it, fp32 otherwise). ``ort-int8`` is symmetric (no zero point);
#: ``ort-int4`` is what ONNX Runtime's own quantizer writes (a 4-bit *integer* zero point per
#: block); ``ort-int4-g32`` is the course's ``int4-g32`` format (a float minimum per block,
#: GGUF Q4_1's grid) in the same kernel, as an integer zero point plus a per-block remainder
#: (:func:`labkit.inference.backends.int4_float_minimum_matmul`).
ONNX_PRECISIONS: dict[str, dict | None] = {
    "ort-fp32": None,
    "ort-int8": {"bits": 8, "block_size": 32, "symmetric": True, "accuracy_level": 4},
    "ort-int4": {"bits": 4, "block_size": 32, "symmetric": False, "accuracy_level": 4},
    "ort-int4-g32": {"bits": 4, "block_size": 32, "symmetric": False, "float_minimum": True,
                     "accuracy_level": 4},
}


def measure_onnx_precisions(model, names=tuple(ONNX_PRECISIONS), *, new_tokens: int = 24,
                            repeats: int = 3, max_tokens: int = 256, threads: int = 1,
                            bandwidth_GBps: float, reference_logits: torch.Tensor | None = None,
                            sample_prompt: str | None = None, sample_tokens: int = 16,
                            prompt_tokens: int = 16) -> list[dict]:
    """The rows of :func:`measure_precisions` for ONNX Runtime's CPU kernels, same model.

    Writes the fp32 decoder with its KV cache as ONNX
    (:func:`labkit.inference.backends.decoder_to_onnx`; about 650 MB for SmolLM2, the head's
    own copy of the embedding included) into a scratch folder, makes each quantized copy
    (:func:`labkit.inference.backends.quantize_onnx_nbits`: ONNX Runtime's own
    ``MatMulNBitsQuantizer``, or the float-minimum format), and per name in ``names`` (keys of
    :data:`ONNX_PRECISIONS`) measures: ``bytes`` (the constant inputs of the matrix products:
    weights, scales, zero points, remainders), ``decode_tok_s`` (the same statistic as
    :func:`labkit.inference.decode_bench.decode_benchmark`: per repetition the median step after
    a ``prompt_tokens``-token prompt, the best of ``repeats`` after one warm-up),
    ``pct_roofline`` against ``bandwidth_GBps`` (the probe the PyTorch rows use) and *this
    copy's* bytes, ``perplexity`` and ``top1_agreement`` on the same held-out tokens, and a
    greedy ``sample``. Each row also has ``decode_tok_s_all`` (every repetition: the spread).
    The scratch folder is removed at the end.
    """
    import statistics
    import time

    from labkit.inference import backends

    unknown = [n for n in names if n not in ONNX_PRECISIONS]
    if unknown:
        raise ValueError(f"unknown ONNX rows {unknown}; use some of {', '.join(ONNX_PRECISIONS)}")
    if reference_logits is None:
        reference_logits = heldout_logits(model, max_tokens=max_tokens)[0]
    text_ids = model.encode(heldout_text())[: min(max_tokens, model.context_length)]
    targets = torch.tensor(text_ids[1:], dtype=torch.long)
    prompt_ids = model.encode(bench_prompt(model, prompt_tokens))
    if sample_prompt is None:
        sample_prompt = (model.chat_prompt("What does a Kubernetes node do?")
                         if model.chat_template else "A Kubernetes node")
    fp32_bytes = 4 * model.streamed_params + 4 * model.config.vocab_size * model.config.d_model
    rows = []
    with scratch_dir(2 * fp32_bytes, prefix="labkit-onnx-") as folder:
        start = time.perf_counter()
        graph = backends.decoder_to_onnx(model.net)
        fp32_path = folder / "fp32.onnx"
        import onnx

        onnx.save(graph, str(fp32_path))
        del graph                              # 650 MB for SmolLM2: reload it per copy instead
        export_s = time.perf_counter() - start
        for name in names:
            settings = ONNX_PRECISIONS[name]
            start = time.perf_counter()
            if settings is None:
                path = fp32_path
            else:
                path = folder / f"{name}.onnx"
                backends.quantize_onnx_nbits(fp32_path, path, **settings)
            make_s = time.perf_counter() - start
            weight_bytes = backends.matmul_weight_bytes(path)
            dec = backends.OnnxDecoder(path, model.config, threads=threads)
            logits = torch.from_numpy(dec.logits(text_ids)[:-1])
            runs = []
            for i in range(repeats + 1):
                _, steps = dec.generate(prompt_ids, new_tokens)
                if i:
                    runs.append(1.0 / statistics.median(steps))
            tok_s = max(runs)
            roofline = bandwidth_GBps * 1e9 / weight_bytes
            sample_ids, _ = dec.generate(model.encode(sample_prompt), sample_tokens)
            rows.append({"precision": name, "bytes": weight_bytes,
                         "total_bytes": path.stat().st_size, "decode_tok_s": round(tok_s, 2),
                         "decode_tok_s_all": [round(r, 2) for r in runs],
                         "pct_roofline": round(100.0 * tok_s / roofline, 1),
                         "roofline_tok_s": round(roofline, 2),
                         "perplexity": round(perplexity_from_logits(logits, targets), 4),
                         "top1_agreement": round(top1_agreement(logits, reference_logits), 4),
                         "sample": model.decode(sample_ids),
                         "bandwidth_GBps": round(bandwidth_GBps, 2), "runtime": "onnxruntime",
                         "settings": settings, "make_s": round(make_s + (export_s if settings
                                                                          is None else 0), 1)})
            del dec
            if path != fp32_path:
                path.unlink()
    return rows


def bench_quant_cli(argv: list[str]) -> int:
    """``python -m labkit bench quant``: bytes, decode speed and quality per precision.

    With ``--json`` prints one JSON object: one key per precision (``fp32``, ``bf16``, ...,
    the recommended int8 under ``int8``), each ``{"bytes", "decode_tok_s", "perplexity",
    "top1_agreement", ...}``, then one key per ONNX Runtime row (``ort-fp32``, ``ort-int8``,
    ``ort-int4``, ``ort-int4-g32``: :func:`measure_onnx_precisions`; leave them out with
    ``--no-onnx``), plus
    ``meta`` (model, bandwidth, threads, tokens, versions, cores, last-level cache).

    Every row runs with the same ``--threads`` (default: all usable cores, as a server
    would), against one GEMV bandwidth probe, and reports ``pct_roofline`` against its *own*
    bytes. PyTorch's fused int8 kernel converts every weight to bf16 before multiplying, so
    it is bound by arithmetic and gains more from cores than its bytes suggest; ONNX
    Runtime's ``MatMulNBits`` multiplies int8 activations by the packed weights in integer
    instructions and stays much closer to its bytes roofline.
    """
    parser = argparse.ArgumentParser(
        prog="python -m labkit bench quant",
        description="Bytes, decode tokens/s and quality (held-out perplexity, top-1 agreement "
                    "with fp32) of a course model per precision, measured in one run.")
    parser.add_argument("--model", choices=("smollm2", "tiny-gpt"), default="smollm2")
    parser.add_argument("--precisions", default=",".join(PRECISIONS),
                        help=f"comma-separated, from: {', '.join(PRECISIONS)}")
    parser.add_argument("--tokens", type=int, default=24, help="decode tokens per repetition")
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions (best kept)")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for every row, PyTorch and ONNX Runtime alike (default: "
                             "every core this process may use, as a server would). How each "
                             "kernel scales with cores depends on the machine: run it with 1 "
                             "thread too")
    parser.add_argument("--no-onnx", action="store_true",
                        help="leave out the ONNX Runtime rows (they export the model to a "
                             "scratch folder: up to about 0.9 GB at a time for SmolLM2, removed "
                             "afterwards)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    bad = [p for p in precisions if p not in PRECISIONS]
    if bad or not precisions:
        parser.error(f"unknown precisions {bad}; choose from {', '.join(PRECISIONS)}")
    if args.threads is None:
        from labkit.machine.facts import usable_cores

        args.threads = usable_cores()
    if args.tokens < 2 or args.repeats < 1 or args.threads < 1:
        parser.error("--tokens must be >= 2, --repeats and --threads >= 1")
    if "fp32" not in precisions:
        precisions.insert(0, "fp32")
    from labkit.inference.loading import load_model

    model = load_model(args.model, "fp32")
    reference = heldout_logits(model)[0]             # fp32's logits: every row is scored on them
    rows = measure_precisions(model, precisions, new_tokens=args.tokens, repeats=args.repeats,
                              threads=args.threads, reference_logits=reference)
    if not args.no_onnx:
        rows += measure_onnx_precisions(model, new_tokens=args.tokens, repeats=args.repeats,
                                        threads=args.threads, reference_logits=reference,
                                        bandwidth_GBps=rows[0]["bandwidth_GBps"])
    if args.json:
        import os
        import platform

        from labkit.machine.facts import usable_cores

        out = {r["precision"]: {k: v for k, v in r.items() if k != "precision"} for r in rows}
        meta = {"model": args.model, "threads": args.threads, "tokens": args.tokens,
                "repeats": args.repeats, "bandwidth_GBps": rows[0]["bandwidth_GBps"],
                "recommended_int8": RECOMMENDED_INT8, "torch": torch.__version__,
                "usable_cores": usable_cores(), "cpu_count": os.cpu_count(),
                "llc_bytes": last_level_cache_bytes(), "machine": platform.machine(),
                "command": "python -m labkit bench quant " + " ".join(argv)}
        if not args.no_onnx:
            import onnxruntime

            meta["onnxruntime"] = onnxruntime.__version__
        out["meta"] = meta
        print(json.dumps(out))
        return 0
    fp32 = rows[0]
    print(f"{args.model}: GEMV bandwidth {fp32['bandwidth_GBps']} GB/s, {args.threads} thread(s)")
    print(f"{'precision':20s} {'MB':>8s} {'tok/s':>7s} {'x fp32':>6s} {'%roof':>6s} "
          f"{'ppl':>8s} {'Δppl %':>7s} {'top-1':>6s}")
    for r in rows:
        print(f"{r['precision']:20s} {r['bytes'] / 1e6:8.1f} {r['decode_tok_s']:7.1f} "
              f"{r['decode_tok_s'] / fp32['decode_tok_s']:6.2f} {r['pct_roofline']:6.1f} "
              f"{r['perplexity']:8.2f} "
              f"{100 * (r['perplexity'] / fp32['perplexity'] - 1):+7.2f} "
              f"{100 * r['top1_agreement']:5.1f}%")
    return 0
