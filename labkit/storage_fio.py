"""Deprecated: moved to :mod:`labkit.storage.fio` (issue 18); this shim goes in the next release."""

import warnings

from labkit.storage.fio import (FIO_INSTALL, FIO_INSTALL_HINT, FIO_PERCENTILES,  # noqa: F401
                                REQUIRE_TOOLS_ENV, FioJobResult, FioMissingError, ensure_fio,
                                fio_message, fio_path, fio_required, fio_version, job_file_text,
                                parse_fio_json, rand_read_job, run_fio, seq_read_job)

warnings.warn("labkit.storage_fio is deprecated; import from labkit.storage.fio (issue 18)",
              DeprecationWarning, stacklevel=2)
