"""Distributed computing for the course: Ray (locally and on KubeRay) and torch.distributed.

=============================  ================================================================
module                         what it holds
=============================  ================================================================
:mod:`~.processes`             finding, marking and ending the processes of local Ray sessions
:mod:`~.session`               :class:`~labkit.distributed.session.RaySession`: Ray started
                               the course's way, always shut down (locally, or on the cluster
                               in ``RAY_ADDRESS``)
:mod:`~.ray_work`              what tasks, actors and ``ray.put`` cost; batch inference over
                               shards with Ray actors; actor restarts and task retries
:mod:`~.ranks`                 torch.distributed: ``run_ranks`` (gloo on 127.0.0.1),
                               collectives, all-reduce bandwidth, DDP training
:mod:`~.parallelism`           arithmetic: shards, Amdahl's law, memory per GPU under
                               DP/TP/PP/ZeRO, ring all-reduce time, pipeline bubble
:mod:`~.cli`                   ``python -m labkit.distributed {batch-inference,ddp}``
=============================  ================================================================

Imports point down this list: ``session`` builds on ``processes``; ``ray_work`` on
``processes``; ``cli`` on every other module; ``ranks`` and ``parallelism`` stand alone.
Outside the package: :mod:`labkit.machine` (``scratch``, ``net``, ``timing``, ``facts``),
:mod:`labkit.planning` (``catalog``, ``memory``) and, inside functions, the tiny model's
modules in :mod:`labkit.inference` and :mod:`labkit.training`.
Importing the package imports neither Ray nor torch; import what you use from its module
(``from labkit.distributed.session import RaySession``).

Deprecated: the names of the old flat module ``labkit.distributed`` (``distributed.run_ranks``,
``distributed.RaySession``, ...) still resolve here for one release, with a DeprecationWarning
that names their new home.
"""

from __future__ import annotations

from labkit.deprecated import moved_getattr

#: the old flat module's names, by the module that holds each now
_MOVES = (
    ("labkit.distributed.processes", "SESSION_ENV OWNER_ENV OWNER_FILE cleanup_dead_sessions "
                                     "ray_processes"),
    ("labkit.distributed.session", "RAY_NUM_CPUS RAY_MAX_CPUS RAY_OBJECT_STORE_BYTES "
                                   "ShutdownReport default_num_cpus RaySession shutdown_all "
                                   "ray_session"),
    ("labkit.distributed.ray_work", "ray_overheads object_store_rates corpus_prompts ShardWorker "
                                    "InferenceRun start_shard_workers stop_actors batch_inference "
                                    "serial_inference run_actor_kill run_flaky_tasks"),
    ("labkit.machine.net", "free_port"),
    ("labkit.distributed.ranks", "RankError run_ranks collectives_demo allreduce_benchmark "
                                 "tiny_config training_batches train_single ddp_train "
                                 "compare_losses"),
    ("labkit.distributed.parallelism", "make_shards amdahl_parallel_fraction "
                                       "sharded_training_bytes parallelism_plan LAYOUTS min_nodes "
                                       "efa_GBps ring_allreduce_seconds gradient_sync_seconds "
                                       "pipeline_bubble"),
    ("labkit.distributed.cli", "main"),
)

#: old name of ``labkit.distributed`` -> the module that holds it now
_HOME = {name: module for module, names in _MOVES for name in names.split()}

__getattr__ = moved_getattr(__name__, _HOME)
