"""Deprecated: moved to :mod:`labkit.planning.memory` (issue 18); kept for one release."""

from labkit.deprecated import warn_moved

warn_moved("labkit.memory",
           "labkit.planning.memory")

from labkit.planning.memory import BYTES_PER_PARAM  # noqa: E402,F401
from labkit.planning.memory import bytes_per_param  # noqa: E402,F401
from labkit.planning.memory import deployable_gpus  # noqa: E402,F401
from labkit.planning.memory import Deployment  # noqa: E402,F401
from labkit.planning.memory import fits  # noqa: E402,F401
from labkit.planning.memory import gpus_needed  # noqa: E402,F401
from labkit.planning.memory import kv_cache_bytes  # noqa: E402,F401
from labkit.planning.memory import LOADERS  # noqa: E402,F401
from labkit.planning.memory import measure_load_memory  # noqa: E402,F401
from labkit.planning.memory import normalize_dtype  # noqa: E402,F401
from labkit.planning.memory import process_memory  # noqa: E402,F401
from labkit.planning.memory import tensor_bytes  # noqa: E402,F401
from labkit.planning.memory import tensor_parallel_ok  # noqa: E402,F401
from labkit.planning.memory import training_breakdown  # noqa: E402,F401
from labkit.planning.memory import training_bytes  # noqa: E402,F401
from labkit.planning.memory import TRAINING_RECIPES  # noqa: E402,F401
from labkit.planning.memory import weight_bytes  # noqa: E402,F401
