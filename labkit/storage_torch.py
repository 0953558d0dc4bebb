"""Deprecated: split into :mod:`labkit.storage.dataloading` (DataLoader benchmark) and
:mod:`labkit.storage.checkpoints` (checkpoint formats) (issue 18); this shim goes in the next
release."""

import warnings

from labkit.storage.checkpoints import (bench_checkpoint, load_checkpoint,  # noqa: F401
                                        save_checkpoint, state_dict_bytes)
from labkit.storage.dataloading import (LAYOUTS, SampleDataset, SampleSet,  # noqa: F401
                                        bench_dataloader, steady_rate, write_samples)
from labkit.storage.measures import KiB, Stats, Throughput  # noqa: F401
from labkit.storage.pagecache import drop_file_cache  # noqa: F401

warnings.warn("labkit.storage_torch is deprecated; import from labkit.storage.dataloading or "
              "labkit.storage.checkpoints (issue 18)", DeprecationWarning, stacklevel=2)
