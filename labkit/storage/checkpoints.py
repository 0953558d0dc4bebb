"""Saving and loading checkpoints: ``torch.save`` against safetensors, full loads against mmap.

:func:`bench_checkpoint` times each format and load for any ``state_dict``. Write only inside
a scratch folder (:func:`labkit.machine.scratch.scratch_dir`). Imports torch (safetensors on use),
:mod:`~labkit.storage.measures` and :mod:`~labkit.storage.pagecache`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from labkit.machine.dtypes import tensor_bytes
from labkit.machine.timing import Samples
from labkit.storage.measures import Throughput
from labkit.storage.pagecache import drop_file_cache, fsync_path


def state_dict_bytes(state_dict: Mapping[str, torch.Tensor]) -> int:
    """Bytes of tensor data in ``state_dict`` (shared storage counted once; values that are not
    tensors are skipped): :func:`labkit.machine.dtypes.tensor_bytes` of its tensors."""
    return tensor_bytes([t for t in state_dict.values() if isinstance(t, torch.Tensor)])


def _for_safetensors(state_dict: Mapping[str, torch.Tensor]
                     ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors safetensors can store: contiguous, no shared memory.

    Exact duplicates (tied weights) are dropped and returned as ``{dropped: kept}``, as
    ``safetensors.torch.save_model`` does; other overlapping views are cloned.
    """
    out: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    exact: dict[tuple, str] = {}
    storages: set[int] = set()
    for k, t in state_dict.items():
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"state_dict[{k!r}] is a {type(t).__name__}; safetensors stores "
                             f"tensors only (move other values into metadata)")
        t = t.detach()
        ptr = t.untyped_storage().data_ptr()
        key = (ptr, t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)
        if key in exact and t.numel() > 0:
            aliases[k] = exact[key]
            continue
        exact[key] = k
        if (ptr in storages and t.numel() > 0) or not t.is_contiguous() or \
                t.untyped_storage().nbytes() != t.numel() * t.element_size():
            t = t.contiguous().clone()
        storages.add(ptr)
        out[k] = t
    return out, aliases


def save_checkpoint(state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike,
                    fmt: str = "torch") -> Throughput:
    """Save ``state_dict`` as ``fmt`` (``"torch"``: ``torch.save``; ``"safetensors"``) and
    fsync it; returns bytes on disk and seconds (including the fsync)."""
    if fmt not in ("torch", "safetensors"):
        raise ValueError(f"fmt must be 'torch' or 'safetensors', got {fmt!r}")
    if fmt == "safetensors":
        from safetensors.torch import save_file

        tensors, aliases = _for_safetensors(state_dict)
        t0 = time.perf_counter()
        save_file(tensors, os.fspath(path), metadata={f"alias:{k}": v for k, v in aliases.items()})
    else:
        t0 = time.perf_counter()
        torch.save(dict(state_dict), path)
    fsync_path(path)
    seconds = time.perf_counter() - t0
    return Throughput(os.path.getsize(path), seconds, 1, label=f"save {fmt}")


def _touch(t: torch.Tensor) -> int:
    """Read one byte per 4 KiB page of ``t``'s data (faults in every page of an mmap)."""
    if t.numel() == 0:
        return 0
    flat = t.detach().reshape(-1)
    if not flat.is_contiguous():
        return int(flat.sum().item() != 0)
    return int(flat.view(torch.uint8)[::4096].sum().item())


def load_checkpoint(path: str | os.PathLike, fmt: str = "torch", *, mmap: bool = False
                    ) -> dict[str, torch.Tensor]:
    """Load a checkpoint written by :func:`save_checkpoint` (weights only, on CPU).

    ``mmap=True`` maps the file instead of reading it: the load returns at once and pages
    are read when first touched (``torch.load(mmap=True)``; safetensors' ``safe_open`` always
    maps the file and copies each tensor out). Tied weights dropped by safetensors are
    restored from the file's metadata.
    """
    if fmt == "torch":
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    if fmt == "safetensors":
        from safetensors import safe_open

        out = {}
        with safe_open(os.fspath(path), framework="pt", device="cpu") as f:
            for k in f.keys():
                out[k] = f.get_tensor(k)
            meta = f.metadata() or {}
        for k, v in meta.items():
            if k.startswith("alias:") and v in out:
                out[k[len("alias:"):]] = out[v]
        return out
    raise ValueError(f"fmt must be 'torch' or 'safetensors', got {fmt!r}")


def _same(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> bool:
    if set(a) != set(b):
        return False
    for k, v in a.items():
        if isinstance(v, torch.Tensor):
            if not (isinstance(b[k], torch.Tensor) and torch.equal(v.detach().cpu(), b[k])):
                return False
        elif v != b[k]:
            return False
    return True


def bench_checkpoint(state_dict: Mapping[str, torch.Tensor], folder: str | os.PathLike, *,
                     formats: Sequence[str] = ("torch", "safetensors"), cache: str = "cold",
                     repeats: int = 3, verify: bool = True) -> list[dict]:
    """Time saving and loading ``state_dict`` in each format, ``repeats`` times each.

    Operations: ``save`` (with fsync); ``load``; and for ``torch`` also ``load mmap``
    (``torch.load(mmap=True)``). Every load is timed until each page of every tensor has
    been touched, so lazy loads are charged for the bytes they read: ``torch.load`` copies
    the whole file into new memory, while ``load mmap`` and safetensors (whose ``safe_open``
    maps the file) fault pages in on first touch instead of copying them. ``cache="cold"``
    drops the file from the page cache before each load.
    ``verify`` checks once that every loaded tensor equals the original (RuntimeError if
    not). Returns rows ``{"format", "op", "seconds": Samples, "MBps": Samples, "file_bytes"}``;
    MB/s is file bytes per second. Accepts any ``state_dict`` of tensors; needs free space of
    about twice its size in ``folder``.
    """
    if cache not in ("cold", "warm"):
        raise ValueError(f"cache must be 'cold' or 'warm', got {cache!r}")
    if not state_dict:
        raise ValueError("state_dict is empty")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for fmt in formats:
        path = folder / ("ckpt.pt" if fmt == "torch" else "ckpt.safetensors")
        ops = ["save", "load"] + (["load mmap"] if fmt == "torch" else [])
        times: dict[str, list[float]] = {op: [] for op in ops}
        size = 0
        for rep in range(repeats):
            w = save_checkpoint(state_dict, path, fmt)
            size = w.nbytes
            times["save"].append(w.seconds)
            for op in ops[1:]:
                if cache == "cold":
                    drop_file_cache(path)
                elif rep == 0:
                    path.read_bytes()
                t0 = time.perf_counter()
                sd = load_checkpoint(path, fmt, mmap=(op == "load mmap"))
                for t in sd.values():  # mapped pages are read only when touched
                    if isinstance(t, torch.Tensor):
                        _touch(t)
                times[op].append(time.perf_counter() - t0)
                if verify and rep == 0 and not _same(state_dict, sd):
                    raise RuntimeError(f"{fmt} {op}: the loaded tensors differ from the saved "
                                       f"ones; the checkpoint file is corrupt or the format "
                                       f"changed a tensor")
                del sd
        for op in ops:
            rows.append({"format": fmt, "op": op, "seconds": Samples(times[op], "s"),
                         "MBps": Samples([size / s / 1e6 for s in times[op]], "MB/s"),
                         "file_bytes": size})
        path.unlink()
    return rows
