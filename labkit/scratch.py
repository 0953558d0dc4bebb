"""Deprecated: moved to :mod:`labkit.machine.scratch` (issue 18); kept for one release."""

from labkit.deprecated import warn_moved

warn_moved("labkit.scratch", "labkit.machine.scratch")

from labkit.machine.scratch import (DEFAULT_LIMIT_BYTES, check_free_space,  # noqa: E402,F401
                                    scratch_dir, scratch_root)
