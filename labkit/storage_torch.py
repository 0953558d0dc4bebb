"""Deprecated: split into :mod:`labkit.storage.dataloading` (the DataLoader benchmark) and
:mod:`labkit.storage.checkpoints` (checkpoint formats) (issue 18); kept for one release."""

from labkit.deprecated import warn_moved

warn_moved("labkit.storage_torch", "labkit.storage.dataloading and labkit.storage.checkpoints")

from labkit.machine.timing import Samples as Stats  # noqa: E402,F401
from labkit.storage.checkpoints import (bench_checkpoint, load_checkpoint,  # noqa: E402,F401
                                        save_checkpoint, state_dict_bytes)
from labkit.storage.dataloading import (LAYOUTS, SampleDataset, SampleSet,  # noqa: E402,F401
                                        bench_dataloader, steady_rate, write_samples)
from labkit.storage.measures import KiB, Throughput  # noqa: E402,F401
from labkit.storage.pagecache import drop_file_cache  # noqa: E402,F401
