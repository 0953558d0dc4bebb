"""Decode speed against the memory-bandwidth roofline, and the same timing of Hugging Face
``generate()``: :func:`decode_benchmark`, :func:`time_hf_generate` (same prompt, tokens,
repetitions and statistic, so Lab 1 can compare them) and ``python -m labkit bench decode``
(:func:`bench_decode_cli`).

The roofline's bandwidth comes from :func:`labkit.machine.probes.gemv_read_GBps` (a read-only
matrix-vector product: the same kind of work as a decode step).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Sequence

import torch

from labkit.inference.language_model import LanguageModel
from labkit.inference.loading import MODEL_NAMES, load_model
from labkit.inference.tokenizer import Tokenizer
from labkit.machine.dtypes import MODEL_DTYPES
from labkit.machine.facts import last_level_cache_bytes, torch_threads
from labkit.machine.probes import gemv_read_GBps


def decode_benchmark(model: LanguageModel, *, batch_size: int = 1, kv_cache: bool = True,
                     new_tokens: int = 32, prompt_tokens: int = 16, repeats: int = 5,
                     threads: int | None = 1, bandwidth_GBps: float | None = None,
                     probe_repeats: int = 5, hf_model=None) -> dict:
    """Decode speed of ``model`` against this machine's memory-bandwidth roofline, one run.

    Measures the bandwidth with :func:`~labkit.machine.probes.gemv_read_GBps` (unless given) before and
    after the decoding, and keeps the better probe: the stricter reference. Between them it
    decodes ``new_tokens`` greedy tokens after a ``prompt_tokens``-token prompt for each of
    ``batch_size`` sequences, ``repeats`` times after one warm-up call, end-of-sequence
    ignored. The roofline is the speed at which the weights could be read once per step:

        roofline_tok_s = batch_size * bandwidth / weight bytes read per step

    (the KV cache's reads are left out: at these lengths they are under 2 % of the weights).
    ``pct_roofline`` = decode tok/s / roofline tok/s x 100.

    On a shared machine other work slows some readings down, never speeds them up. Both
    sides of the ratio use the same statistic: each probe is scored by its median GEMV call
    and each decode repetition by its median step, and each side keeps its best (least
    disturbed) score. ``decode_tok_s_median`` and ``decode_tok_s_min`` show the spread over
    repetitions; ``bandwidth_GBps_best`` is the single fastest GEMV call.

    ``threads=1`` by default, so that runs on a shared machine are comparable; the speed at
    other thread counts differs (measure 1 and :func:`labkit.machine.facts.usable_cores`). The
    probe and the decode always use the same thread count.

    The roofline assumes the weights come from main memory. ``llc_bytes`` is the last-level
    cache the OS reports, and ``weights_fit_llc`` is True when the weights read per step are
    smaller than it: then part of them may be served from the cache and the "% of roofline"
    can exceed 100.

    ``hf_model`` (a Transformers model of the same weights, e.g. :func:`~labkit.inference.smollm2.load_smollm2_hf`)
    adds ``result["hf"]``: ``generate()`` timed as in :func:`time_hf_generate`, one call
    right after each of the loop's repetitions (same prompt, tokens, repetitions, threads and
    statistic, and the same moments of machine load). Batch 1 with the KV cache only.

    Returns a dict with the keys of ``bench decode --json`` plus details (tok/s min/max,
    time to first token, per-token latency, the bandwidth spread, threads, cache facts).
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if not isinstance(new_tokens, int) or new_tokens < 2:
        raise ValueError(f"new_tokens must be an integer >= 2 (one prefill + decode steps), "
                         f"got {new_tokens!r}")
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats!r}")
    if hf_model is not None and (batch_size != 1 or not kv_cache):
        raise ValueError("hf_model: the comparison with generate() is for batch_size=1 with "
                         "the KV cache on")
    prompt = bench_prompt(model, prompt_tokens)
    prompts = [prompt] * batch_size
    probes = []
    if bandwidth_GBps is None:
        probes.append(gemv_read_GBps(repeats=probe_repeats, threads=threads))
    runs, hf_medians = [], []
    hf_ids = torch.tensor([model.encode(prompt)], dtype=torch.long)
    for i in range(repeats + 1):
        gen = model.generate(prompts, new_tokens, kv_cache=kv_cache, stop_at_eos=False,
                             threads=threads)
        if hf_model is not None:
            with torch_threads(threads), torch.inference_mode():
                hf_steps = _hf_step_times(hf_model, hf_ids, new_tokens, model.tokenizer.pad_id)
        if i:   # call 0 is the warm-up of both
            runs.append(gen.timings)
            if hf_model is not None:
                hf_medians.append(statistics.median(hf_steps))
    if probes:
        # probe again after decoding, so the reference sees the same machine load
        probes.append(gemv_read_GBps(repeats=probe_repeats, threads=threads))
        # each probe scored by its median call, as each decode run by its median step
        bandwidth_GBps = max(p["median_GBps"] for p in probes)
        bw = {"best_GBps": max(p["best_GBps"] for p in probes),
              "median_GBps": statistics.median(p["median_GBps"] for p in probes)}
    else:
        bw = None
    # Per repetition: the median step (robust to a single disturbed step); across repetitions:
    # the best, i.e. the least disturbed, as for the bandwidth probe.
    tok_s = sorted(batch_size / statistics.median(t.step_s) for t in runs)
    decode_tok_s = tok_s[-1]
    weight_bytes = model.weight_bytes_per_token
    roofline = batch_size * bandwidth_GBps * 1e9 / weight_bytes
    llc = last_level_cache_bytes()
    return {
        "model": model.name, "dtype": model.dtype, "params": model.n_params,
        "weight_bytes": int(weight_bytes), "bandwidth_GBps": round(bandwidth_GBps, 2),
        "decode_tok_s": round(decode_tok_s, 2), "roofline_tok_s": round(roofline, 2),
        "pct_roofline": round(100.0 * decode_tok_s / roofline, 1),
        "batch_size": batch_size, "kv_cache": kv_cache, "threads": runs[0].threads,
        "prompt_tokens": runs[0].prompt_tokens, "new_tokens": new_tokens, "repeats": repeats,
        "decode_tok_s_min": round(tok_s[0], 2),
        "decode_tok_s_median": round(statistics.median(tok_s), 2),
        "tpot_ms": round(batch_size / decode_tok_s * 1e3, 2),
        "ttft_ms": round(statistics.median(t.ttft_s for t in runs) * 1e3, 2),
        "bandwidth_GBps_median": round(bw["median_GBps"], 2) if bw else None,
        "bandwidth_GBps_best": round(bw["best_GBps"], 2) if bw else None,
        "probe_bytes": probes[0]["bytes"] if probes else None,
        "probe_dram_bound": all(p["dram_bound"] for p in probes) if probes else None,
        "llc_bytes": llc,
        "weights_fit_llc": llc is not None and weight_bytes < llc,
        "hf": ({**{k: round(v, 2) for k, v in _rate_summary(hf_medians).items()},
                "threads": runs[0].threads, "new_tokens": new_tokens, "repeats": repeats}
               if hf_model is not None else None),
    }


def bench_prompt(model: LanguageModel, n_tokens: int) -> str:
    """A prompt of ``n_tokens`` tokens of plain English about Kubernetes (a sentence repeated
    and cut at a word boundary), for timing runs whose prompt length must be known. Where
    the tokenizer cannot land exactly on ``n_tokens``, the prompt is a token or two shorter."""
    return bench_text(model.encode, n_tokens)


def bench_text(encode: Callable[[str], list[int]], n_tokens: int) -> str:
    if isinstance(n_tokens, bool) or not isinstance(n_tokens, int) or n_tokens < 1:
        raise ValueError(f"prompt_tokens must be an integer >= 1, got {n_tokens!r}")
    words = ("A Kubernetes node runs pods, and each pod asks the scheduler for CPU and "
             "memory.").split()
    text, i = "", 0
    while True:
        candidate = (text + " " + words[i % len(words)]) if text else words[0]
        if len(encode(candidate)) > n_tokens:
            break
        text, i = candidate, i + 1
    if not text:   # a single word is already longer than n_tokens: cut characters
        text = words[0]
        while len(encode(text)) > n_tokens and len(text) > 1:
            text = text[:-1]
    return text

def _hf_step_times(hf_model, input_ids: torch.Tensor, new_tokens: int, pad_id: int
                   ) -> list[float]:
    """One greedy ``generate()`` call of exactly ``new_tokens`` tokens; the time of each
    decode step (``new_tokens - 1`` values), from a logits processor that records
    ``time.perf_counter()`` when the logits of each new token are ready."""
    from transformers import LogitsProcessor, LogitsProcessorList

    class _StepClock(LogitsProcessor):
        def __init__(self) -> None:
            self.stamps: list[float] = []

        def __call__(self, input_ids, scores):
            self.stamps.append(time.perf_counter())
            return scores

    clock = _StepClock()
    hf_model.generate(input_ids, attention_mask=torch.ones_like(input_ids),
                      max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                      pad_token_id=pad_id, logits_processor=LogitsProcessorList([clock]))
    if len(clock.stamps) != new_tokens:
        raise RuntimeError(f"generate() computed {len(clock.stamps)} tokens' logits, expected "
                           f"{new_tokens}; cannot time its steps")
    steps = [b - a for a, b in zip(clock.stamps, clock.stamps[1:])]
    if min(steps) <= 0:
        raise RuntimeError("a generate() step took no time: the clock is broken")
    return steps


def _rate_summary(step_medians: Sequence[float], batch_size: int = 1) -> dict:
    """tok/s from per-repetition median step times: best, median and worst repetition."""
    rates = sorted(batch_size / m for m in step_medians)
    return {"decode_tok_s": rates[-1], "decode_tok_s_median": statistics.median(rates),
            "decode_tok_s_min": rates[0], "tpot_ms": batch_size / rates[-1] * 1e3}


def time_hf_generate(hf_model, tokenizer: Tokenizer, *, new_tokens: int = 32,
                     prompt_tokens: int = 16, repeats: int = 5, threads: int | None = 1,
                     prompt: str | None = None) -> dict:
    """Decode speed of Transformers' ``generate()`` (greedy, its own KV cache), timed exactly
    as :func:`decode_benchmark` times the course's loop.

    A logits processor records ``time.perf_counter()`` each time ``generate()`` has computed
    the logits of a new token, so the gaps between consecutive records are the decode steps
    (``new_tokens - 1`` per call; the prefill is left out, as in :func:`decode_benchmark`).
    After one warm-up call, ``repeats`` calls each give a median step; ``decode_tok_s`` is the
    best of those (the least disturbed), ``decode_tok_s_median`` their median and
    ``decode_tok_s_min`` the worst: the same statistic as :func:`decode_benchmark`.
    (``decode_benchmark(..., hf_model=...)`` interleaves the two, which is fairer still on a
    busy machine.)

    ``prompt=None`` uses :func:`bench_prompt`'s text of ``prompt_tokens`` tokens, the prompt
    :func:`decode_benchmark` decodes. Raises RuntimeError if ``generate()`` did not compute
    one set of logits per token or a step took no time (a broken timer, not a fast model).
    """
    if isinstance(new_tokens, bool) or not isinstance(new_tokens, int) or new_tokens < 2:
        raise ValueError(f"new_tokens must be an integer >= 2, got {new_tokens!r}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an integer >= 1, got {repeats!r}")
    if prompt is None:
        prompt = bench_text(tokenizer.encode, prompt_tokens)
    input_ids = torch.tensor([tokenizer.encode(prompt)], dtype=torch.long)
    with torch_threads(threads), torch.inference_mode():
        used = torch.get_num_threads()
        _hf_step_times(hf_model, input_ids, new_tokens, tokenizer.pad_id)
        medians = [statistics.median(_hf_step_times(hf_model, input_ids, new_tokens,
                                                    tokenizer.pad_id))
                   for _ in range(repeats)]
    return {**_rate_summary(medians), "threads": used, "new_tokens": new_tokens,
            "repeats": repeats, "prompt_tokens": int(input_ids.shape[1])}


#: Exactly the keys ``python -m labkit bench decode --json`` prints.
BENCH_KEYS: tuple[str, ...] = ("model", "dtype", "params", "weight_bytes", "bandwidth_GBps",
                               "decode_tok_s", "roofline_tok_s", "pct_roofline")


def bench_decode_cli(argv: list[str]) -> int:
    """``python -m labkit bench decode``: decode speed against the bandwidth roofline.

    Measures, in one run, the GEMV memory bandwidth and the decode speed, and prints them (or
    with ``--json`` one JSON object with exactly the keys of :data:`BENCH_KEYS`). Returns the
    exit code (0; 2 for bad options, which argparse reports).
    """
    parser = argparse.ArgumentParser(
        prog="python -m labkit bench decode",
        description="Decode speed of a course model against this machine's memory-bandwidth "
                    "roofline (bandwidth / weight bytes read per token), measured in one run.")
    parser.add_argument("--model", choices=MODEL_NAMES, default="smollm2")
    parser.add_argument("--dtype", choices=MODEL_DTYPES, default="fp32")
    parser.add_argument("--batch-size", type=int, default=1, help="prompts decoded together")
    parser.add_argument("--no-kv-cache", action="store_true",
                        help="recompute the whole sequence at every step")
    parser.add_argument("--tokens", type=int, default=32,
                        help="tokens generated per repetition (>= 2; default 32)")
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed repetitions; the best median step is reported (default 5)")
    parser.add_argument("--threads", type=int, default=1,
                        help="PyTorch threads for the probe and the decode (default 1)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    for name in ("batch_size", "repeats", "threads", "prompt_tokens"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.tokens < 2:
        parser.error("--tokens must be >= 2")
    model = load_model(args.model, args.dtype)
    result = decode_benchmark(model, batch_size=args.batch_size, kv_cache=not args.no_kv_cache,
                              new_tokens=args.tokens, prompt_tokens=args.prompt_tokens,
                              repeats=args.repeats, threads=args.threads)
    if args.json:
        print(json.dumps({k: result[k] for k in BENCH_KEYS}))
        return 0
    print(f"{model!r}")
    print(f"memory bandwidth (GEMV probe over {result['probe_bytes'] / 2**20:.0f} MiB, "
          f"{result['threads']} thread(s)): {result['bandwidth_GBps']:.1f} GB/s (the better "
          f"probe's median call; fastest call {result['bandwidth_GBps_best']:.1f})")
    if not result["probe_dram_bound"]:
        print("note: the probe is smaller than 4 x the last-level cache; it may read the cache")
    if result["weights_fit_llc"]:
        print(f"note: the weights ({result['weight_bytes'] / 1e6:.0f} MB) are smaller than the "
              f"last-level cache ({result['llc_bytes'] / 1e6:.0f} MB): part of each step may be "
              f"read from the cache, and the % of roofline can exceed 100")
    print(f"weights read per decode step: {result['weight_bytes'] / 1e6:.1f} MB "
          f"-> roofline {result['roofline_tok_s']:.1f} tok/s at batch {result['batch_size']}")
    print(f"decode ({'KV cache on' if result['kv_cache'] else 'KV cache off'}, "
          f"{result['new_tokens']} tokens x {result['repeats']}): best "
          f"{result['decode_tok_s']:.1f} tok/s (median {result['decode_tok_s_median']:.1f}, min "
          f"{result['decode_tok_s_min']:.1f}), {result['tpot_ms']:.1f} ms/token, time to first "
          f"token {result['ttft_ms']:.1f} ms")
    print(f"= {result['pct_roofline']:.0f} % of the roofline")
    return 0
