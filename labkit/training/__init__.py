"""Training: the course's small training jobs (chapter 02).

==========  ===============================================================================
module      holds
==========  ===============================================================================
``loop``    :class:`~labkit.training.loop.TrainRun`, ``train``, ``resume``, checkpoints, a
            simulated crash, the tiny corpus as tokens
``memory``  ``measure_training_memory``: the bytes of one training step, phase by phase
==========  ===============================================================================

May import :mod:`labkit.machine`, :mod:`labkit.planning` and :mod:`labkit.inference`.

The names the old module ``labkit.training`` had (``train``, ``TrainRun``, ...) still resolve
here for one release, with a DeprecationWarning naming their new module.
"""

from labkit.deprecated import moved_getattr

_OLD_NAMES = {name: "labkit.training.loop" for name in (
    "SimulatedCrash", "corpus_tokens", "random_batch", "TrainRun", "train", "latest_checkpoint",
    "resume")}
_OLD_NAMES["measure_training_memory"] = "labkit.training.memory"

__getattr__ = moved_getattr(__name__, _OLD_NAMES)
