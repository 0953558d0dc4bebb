"""Machine: facts about this computer and how the course measures on it.

===================  ==========================================================================
module               holds
===================  ==========================================================================
``timing``           :class:`~labkit.machine.timing.Samples` (the one type for repeated
                     measurements), ``timeit``, ``throughput``, ``percentile``, formatting
``dtypes``           precision names, bytes per parameter, torch dtypes, ``tensor_bytes``
``scratch``          scratch folders: checked for free space first, always removed
``net``              ``free_port``
``facts``            CPU model, flags, cache sizes, usable cores, device, torch threads
``probes``           bandwidth and FLOP probes with explicit names (``stream_copy_GBps``,
                     ``gemv_read_GBps``, ``matmul_flops``)
``tools``            finders for external tools (fio, Chromium) and the Python version check
``doctor``           ``python -m labkit doctor``: is this machine ready for the course?
===================  ==========================================================================

This package is the bottom layer: it imports nothing else of ``labkit``.
"""
