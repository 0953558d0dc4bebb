"""torch.distributed on one machine: ranks, collectives and DDP training.

:func:`run_ranks` starts ``world_size`` processes on 127.0.0.1 with the gloo backend on a free
port (:func:`labkit.machine.net.free_port`), runs a function in each and returns what each
rank returned. The rank functions here: :func:`collectives_demo` (all-reduce, all-gather, a
tensor-parallel linear layer), :func:`allreduce_benchmark` (bandwidth against message size)
and :func:`ddp_train` (DistributedDataParallel training of the tiny model, with the step split
into compute and communication), which :func:`train_single` reproduces in one process with
the same global batch. Imports :mod:`labkit.machine` (``net``, ``scratch``); torch and the
tiny model's modules on use.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from labkit.machine.net import free_port
from labkit.machine.scratch import scratch_dir


def _rank_main(rank: int, fn: Callable, world_size: int, port: int, args: tuple,
               out_dir: str, threads: int) -> None:
    """Body of each rank's process: join the group, run ``fn``, save what it returned."""
    import datetime

    import torch
    import torch.distributed as dist

    torch.set_num_threads(threads)
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                       "RANK": str(rank), "WORLD_SIZE": str(world_size),
                       "LOCAL_RANK": str(rank)})
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world_size, timeout=datetime.timedelta(seconds=60))
    try:
        try:
            result = fn(rank, world_size, *args)
        except BaseException:
            import traceback

            (Path(out_dir) / f"rank{rank}.error").write_text(traceback.format_exc())
            raise
        dist.barrier()
    finally:
        dist.destroy_process_group()
    torch.save(result, Path(out_dir) / f"rank{rank}.pt")


class RankError(RuntimeError):
    """A rank of :func:`run_ranks` raised; the message holds its traceback."""


def run_ranks(fn: Callable, world_size: int = 2, *, args: Sequence = (),
              timeout_s: float = 120.0, threads: int = 1,
              start_method: str | None = None) -> list:
    """Run ``fn(rank, world_size, *args)`` in ``world_size`` processes joined by gloo.

    Each process gets ``MASTER_ADDR=127.0.0.1``, a free ``MASTER_PORT``, ``RANK`` and
    ``WORLD_SIZE`` (what torchrun would set), joins the process group (the rendezvous) and
    runs ``fn`` with ``threads`` PyTorch threads. Returns what each rank returned, in rank
    order; return plain data (numbers, strings, lists, dicts, tensors).

    Processes are forked on Linux (fast; ``fn`` may be defined in a notebook) and spawned
    elsewhere (``fn`` must then be importable). An exception in a rank is raised here with
    its traceback (:class:`RankError`, naming the rank that failed first); after
    ``timeout_s`` the ranks are killed and TimeoutError is raised.
    Nothing is left behind: every rank has exited when this returns.
    """
    import torch
    import torch.multiprocessing as mp

    if not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be a positive integer, got {world_size!r}")
    method = start_method or ("fork" if sys.platform.startswith("linux") else "spawn")
    with scratch_dir(prefix="ranks-") as out:
        context = mp.start_processes(
            _rank_main, args=(fn, world_size, free_port(), tuple(args), str(out), threads),
            nprocs=world_size, join=False, start_method=method)
        deadline = time.monotonic() + timeout_s
        try:
            while not context.join(timeout=0.2):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the {world_size} ranks did not finish within "
                                       f"{timeout_s:.0f} s (a rank stuck in a collective?)")
        except (mp.ProcessRaisedException, mp.ProcessExitedException) as err:
            errors = sorted(out.glob("rank*.error"), key=lambda p: p.stat().st_mtime)
            if not errors:
                raise
            first = errors[0]       # the first rank to fail; the others usually failed after
            raise RankError(f"{first.stem} raised first:\n{first.read_text()}") from err
        finally:
            for proc in context.processes:
                if proc.is_alive():
                    proc.kill()
                proc.join(5)
        return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(world_size)]


def collectives_demo(rank: int, world_size: int, width: int = 64) -> dict:
    """Rank function: the collectives data, tensor and pipeline parallelism are made of.

    - ``all_reduce`` of each rank's ``rank + 1``: every rank ends with the sum;
    - ``all_gather`` of each rank's number: every rank ends with the list;
    - a **column-parallel** linear layer: each rank holds ``1/world`` of the output rows of
      ``W``, computes its slice of ``x Wᵀ``, and an all-gather rebuilds the full output;
    - a **row-parallel** linear layer: each rank holds ``1/world`` of the input columns and
      the matching slice of ``x``; an all-reduce sums the partial products.

    Returns the sums, the gathered list, the largest difference of each parallel layer from
    the unsplit one, and the bytes each rank received for them.
    """
    import torch
    import torch.distributed as dist

    value = torch.tensor([float(rank + 1)])
    dist.all_reduce(value)
    gathered = [torch.zeros(1) for _ in range(world_size)]
    dist.all_gather(gathered, torch.tensor([float(rank)]))
    gen = torch.Generator().manual_seed(0)   # every rank builds the same full layer
    weight = torch.randn(width * world_size, width * world_size, generator=gen)
    x = torch.randn(8, width * world_size, generator=gen)
    full = x @ weight.T
    local = x @ weight.chunk(world_size, dim=0)[rank].T          # my output columns
    parts = [torch.empty_like(local) for _ in range(world_size)]
    dist.all_gather(parts, local)
    column = torch.cat(parts, dim=1)
    partial = x.chunk(world_size, dim=1)[rank] @ weight.chunk(world_size, dim=1)[rank].T
    dist.all_reduce(partial)
    return {"rank": rank, "world_size": world_size, "all_reduce_sum": value.item(),
            "all_gather": [g.item() for g in gathered],
            "column_parallel_max_error": (column - full).abs().max().item(),
            "row_parallel_max_error": (partial - full).abs().max().item(),
            "column_bytes_received": local.numel() * local.element_size() * (world_size - 1),
            "weight_bytes_per_rank": weight.numel() * weight.element_size() // world_size,
            "pid": os.getpid()}


def allreduce_benchmark(rank: int, world_size: int,
                        sizes_bytes: Sequence[int] = tuple(4 ** k for k in range(5, 14)),
                        repeats: int = 5) -> list[dict]:
    """Rank function: time ``all_reduce`` (sum) of float32 tensors of each size.

    Every rank enters each timed call together (a barrier first). Returns, for each size,
    ``bytes``, ``min_s`` and ``median_s`` of this rank, ``algbw_GBps`` (bytes / best time)
    and ``busbw_GBps`` (× 2(n−1)/n, the bytes each rank really sends in a ring; equal to
    algbw for 2 ranks: the convention of NVIDIA's nccl-tests).
    """
    import torch
    import torch.distributed as dist

    rows = []
    for size in sizes_bytes:
        x = torch.ones(max(1, int(size) // 4))
        for _ in range(2):
            dist.all_reduce(x)
        times = []
        for _ in range(repeats):
            dist.barrier()
            start = time.perf_counter()
            dist.all_reduce(x)
            times.append(time.perf_counter() - start)
        n_bytes = x.numel() * 4
        best = min(times)
        factor = 2 * (world_size - 1) / world_size if world_size > 1 else 1.0
        rows.append({"bytes": n_bytes, "min_s": best,
                     "median_s": sorted(times)[len(times) // 2],
                     "algbw_GBps": n_bytes / best / 1e9,
                     "busbw_GBps": n_bytes / best / 1e9 * factor})
    return rows


def tiny_config():
    """The tiny model's architecture (:class:`labkit.inference.config.DecoderConfig`)."""
    from labkit.inference.config import DecoderConfig
    from labkit.inference.language_model import DATA_DIR, TINY_FILES

    meta = json.loads((DATA_DIR / TINY_FILES["config"]).read_text())
    return DecoderConfig.from_dict(meta["config"])


def training_batches(steps: int, global_batch: int, seq_len: int, seed: int = 0) -> list:
    """``steps`` global batches ``(x, y)`` of the tiny model's corpus, the same for every
    caller with the same seed: a data-parallel rank takes its slice of each."""
    import torch

    from labkit.training import loop

    data = loop.corpus_tokens()
    gen = torch.Generator().manual_seed(seed)
    return [loop.random_batch(data, global_batch, seq_len, gen) for _ in range(steps)]


def _new_tiny_model(seed: int):
    from labkit.inference.decoder import Decoder, init_weights

    return init_weights(Decoder(tiny_config()), seed=seed).train()


def _lm_loss(net, x, y):
    import torch.nn.functional as F

    logits = net(x)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def _train_step(net, opt, x, y):
    """One optimizer step of ``net`` on ``(x, y)``: the loss tensor and the seconds it took."""
    start = time.perf_counter()
    loss = _lm_loss(net, x, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()            # under DDP, the gradients are all-reduced (averaged) here
    opt.step()
    return loss, time.perf_counter() - start


def train_single(steps: int = 8, global_batch: int = 16, seq_len: int = 64, seed: int = 0,
                 lr: float = 3e-3) -> dict:
    """Train the tiny model (fresh weights, ``seed``) in this process with AdamW on the
    global batches of :func:`training_batches`: the reference for :func:`ddp_train`.

    Returns ``losses`` (per step), ``step_s`` (per step), ``params`` (all parameters
    afterwards, one flat tensor) and ``n_params``.
    """
    import torch

    net = _new_tiny_model(seed)
    opt = torch.optim.AdamW(net.parameters(), lr=lr)
    losses, times = [], []
    for x, y in training_batches(steps, global_batch, seq_len, seed):
        loss, seconds = _train_step(net, opt, x, y)
        times.append(seconds)
        losses.append(loss.item())
    params = torch.cat([p.detach().flatten() for p in net.parameters()])
    return {"losses": losses, "step_s": times, "params": params, "n_params": params.numel()}


def ddp_train(rank: int, world_size: int, steps: int = 8, global_batch: int = 16,
              seq_len: int = 64, seed: int = 0, lr: float = 3e-3,
              timing_steps: int = 4, device: str = "cpu") -> dict:
    """Rank function: data-parallel training of the tiny model with DistributedDataParallel.

    Every rank builds the same fresh model (``seed``), takes its ``1/world_size`` slice of
    each global batch of :func:`training_batches`, and DDP averages the gradients, so each
    step equals one step of :func:`train_single` on the whole global batch (up to the order
    of floating-point additions). ``losses`` are the global batch's mean loss.

    Then ``timing_steps`` more batches time one step three ways: ``compute_s`` (forward and
    backward under ``no_sync``: no exchange), ``synced_s`` (the same with DDP's gradient
    all-reduce, overlapped with the backward pass) and ``allreduce_s`` (the all-reduce of
    all gradients as one buffer of ``grad_bytes``). Rank 0 also returns ``params`` (flat,
    after the training steps) for comparison. ``device`` is where the model runs (``"cuda:0"``
    under torchrun on a GPU node; the process group must match: nccl for CUDA, gloo for CPU).
    """
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    if global_batch % world_size:
        raise ValueError(f"global_batch ({global_batch}) must be a multiple of the world "
                         f"size ({world_size})")
    net = _new_tiny_model(seed).to(device)    # same seed: every rank starts identical
    model = DDP(net, device_ids=[torch.device(device)] if device.startswith("cuda") else None)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    batches = training_batches(steps + timing_steps, global_batch, seq_len, seed)
    losses, step_s = [], []
    for x, y in batches[:steps]:
        x, y = x.chunk(world_size)[rank].to(device), y.chunk(world_size)[rank].to(device)
        loss, seconds = _train_step(model, opt, x, y)     # DDP averages the gradients
        step_s.append(seconds)
        mean = loss.detach().clone()
        dist.all_reduce(mean)       # the global batch's loss: mean of the ranks' means
        losses.append(mean.item() / world_size)
    params = torch.cat([p.detach().flatten().cpu() for p in net.parameters()])
    compute, synced, allreduce = [], [], []
    grads_bytes = 0
    for x, y in batches[steps:]:
        x, y = x.chunk(world_size)[rank].to(device), y.chunk(world_size)[rank].to(device)
        dist.barrier()
        start = time.perf_counter()
        with model.no_sync():      # forward + backward, no gradient exchange
            _lm_loss(model, x, y).backward()
        compute.append(time.perf_counter() - start)
        opt.zero_grad(set_to_none=True)
        dist.barrier()
        start = time.perf_counter()
        _lm_loss(model, x, y).backward()   # the same, with DDP's all-reduce
        synced.append(time.perf_counter() - start)
        flat = torch.cat([p.grad.flatten() for p in model.parameters()])
        grads_bytes = flat.numel() * flat.element_size()
        opt.zero_grad(set_to_none=True)
        dist.barrier()
        start = time.perf_counter()
        dist.all_reduce(flat)      # the exchange alone, one buffer
        allreduce.append(time.perf_counter() - start)
    return {"rank": rank, "losses": losses, "step_s": step_s,
            "params": params if rank == 0 else None, "n_params": params.numel(),
            "compute_s": compute, "synced_s": synced, "allreduce_s": allreduce,
            "grad_bytes": grads_bytes, "local_batch": global_batch // world_size}


def compare_losses(single: Sequence[float], ddp: Sequence[float]) -> float:
    """Largest absolute difference between two loss curves of the same length."""
    if len(single) != len(ddp) or not single:
        raise ValueError(f"loss curves differ in length ({len(single)} vs {len(ddp)})")
    return max(abs(a - b) for a, b in zip(single, ddp))
