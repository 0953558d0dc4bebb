"""Distributed computing for the course: Ray (locally and on KubeRay) and torch.distributed.

The command line, what the course's RayJob, PyTorchJob and JobSet run::

    python -m labkit.distributed batch-inference --workers 2    # Ray; RAY_ADDRESS respected
    python -m labkit.distributed batch-inference --workers 4 --gpus-per-worker 1   # the RayJob
    python -m labkit.distributed ddp --steps 8                   # 2 local gloo ranks, or
    torchrun --nproc-per-node=2 -m labkit.distributed ddp        # ranks from torchrun's env

Nothing here touches the network beyond 127.0.0.1 unless ``RAY_ADDRESS`` or torchrun say so.
Sits above every other module of :mod:`labkit.distributed`.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence

from labkit.distributed.parallelism import make_shards
from labkit.distributed.ranks import compare_losses, ddp_train, run_ranks, train_single
from labkit.distributed.ray_work import (batch_inference, corpus_prompts, start_shard_workers,
                                         stop_actors)
from labkit.distributed.session import ray_session


def _cli_batch_inference(args) -> dict:
    prompts = corpus_prompts(args.shards * args.prompts_per_shard)
    shards = make_shards(prompts, args.shards)
    with ray_session() as session:
        info = session.describe()
        workers = args.workers or max(1, int(info["gpus"] if args.gpus_per_worker else
                                             info["cpus"]))
        actors = start_shard_workers(workers, num_gpus=args.gpus_per_worker)
        try:
            run = batch_inference(shards, actors, args.new_tokens)
        finally:
            stop_actors(actors)
    return {"mode": info["mode"], "address": info["address"], "workers": run.workers,
            "shards": len(shards), "tokens": run.tokens, "wall_s": round(run.wall_s, 3),
            "tokens_per_s": round(run.tokens_per_s, 1), "pids": run.pids,
            "first_text": run.texts[0][0]}


def _cli_ddp(args) -> dict | None:
    import torch
    import torch.distributed as dist

    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:   # started by torchrun
        cuda = torch.cuda.is_available()
        local = int(os.environ.get("LOCAL_RANK", "0"))
        device = f"cuda:{local}" if cuda else "cpu"
        if cuda:
            torch.cuda.set_device(local)
        dist.init_process_group("nccl" if cuda else "gloo")
        try:
            rank, world = dist.get_rank(), dist.get_world_size()
            out = ddp_train(rank, world, args.steps, args.global_batch, args.seq_len, 0,
                            3e-3, 2, device)
        finally:
            dist.destroy_process_group()
        if rank != 0:          # every rank has the same losses; rank 0 reports them
            return None
        return {"world_size": world, "backend": "nccl" if cuda else "gloo",
                "device": device, "losses": [round(v, 5) for v in out["losses"]]}
    ranks = run_ranks(ddp_train, 2, args=(args.steps, args.global_batch, args.seq_len))
    torch.set_num_threads(1)   # like each rank: comparable, and no oversubscribed cores
    single = train_single(args.steps, args.global_batch, args.seq_len)
    return {"world_size": 2, "backend": "gloo", "losses": ranks[0]["losses"],
            "single_process_losses": single["losses"],
            "max_loss_difference": compare_losses(single["losses"], ranks[0]["losses"])}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m labkit.distributed {batch-inference,ddp} [options]``; prints JSON."""
    parser = argparse.ArgumentParser(prog="python -m labkit.distributed",
                                     description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    bi = sub.add_parser("batch-inference", help="the tiny model over shards on Ray actors "
                        "(local Ray, or the cluster in RAY_ADDRESS)")
    bi.add_argument("--workers", type=int, default=0, help="actors (default: one per CPU, "
                    "or per GPU with --gpus-per-worker, of the cluster as it is now; ask for "
                    "more on an autoscaling cluster and the waiting actors make Ray add "
                    "worker nodes)")
    bi.add_argument("--shards", type=int, default=16)
    bi.add_argument("--prompts-per-shard", type=int, default=8)
    bi.add_argument("--new-tokens", type=int, default=64)
    bi.add_argument("--gpus-per-worker", type=float, default=0)
    dd = sub.add_parser("ddp", help="DDP training of the tiny model (torchrun's ranks, or 2 "
                        "local gloo ranks compared with one process)")
    dd.add_argument("--steps", type=int, default=8)
    dd.add_argument("--global-batch", type=int, default=16)
    dd.add_argument("--seq-len", type=int, default=64)
    args = parser.parse_args(argv)
    result = _cli_batch_inference(args) if args.command == "batch-inference" else _cli_ddp(args)
    if result is not None:
        print(json.dumps(result, indent=2))
    return 0
