"""Deprecated: moved to :mod:`labkit.storage.fio` (issue 18); kept for one release."""

from labkit.deprecated import warn_moved

warn_moved("labkit.storage_fio", "labkit.storage.fio")

from labkit.storage.fio import (FIO_INSTALL, FIO_INSTALL_HINT, FIO_PERCENTILES,  # noqa: E402,F401
                                REQUIRE_TOOLS_ENV, FioJobResult, FioMissingError, ensure_fio,
                                fio_message, fio_path, fio_required, fio_version, job_file_text,
                                parse_fio_json, rand_read_job, run_fio, seq_read_job)
