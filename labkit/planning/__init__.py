"""Planning: arithmetic and simulations for sizing a cluster.

============  ================================================================================
module        holds
============  ================================================================================
``memory``    bytes of weights, KV cache and training state; process memory of a model load
``catalog``   the cited accelerator and instance catalog (``labkit/data/hardware.json``),
              ``gpu_bandwidth_GBps``
``capacity``  models, replicas and nodes: what fits where, and how many are needed
``queueing``  queue and autoscaling simulations (latency percentiles, SLO violations)
``decide``    the decision guide: accelerator, instance and serving setup for a workload
``gang``      gang (all-or-nothing) admission against Pod-by-Pod scheduling, simulated
``sharing``   sharing one GPU (MIG, time-slicing, MPS): copies per GPU, who runs out of memory
============  ================================================================================

Imports only :mod:`labkit.machine` and itself.
"""
