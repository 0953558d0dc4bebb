"""Deprecated: the server moved to :mod:`labkit.serving` (one module per concept).

``from labkit import serve`` keeps working for one release, with a DeprecationWarning; use
``from labkit.serving import start_server, ServerConfig, create_app`` (or the modules
:mod:`labkit.serving.process`, ``.frontend``, ``.config`` …) instead.
"""

import warnings

from labkit.serving.bench import bench_serve, bench_serve_cli  # noqa: F401
from labkit.serving.config import BATCHING, ENGINES, MODELS, ServerConfig  # noqa: F401
from labkit.serving.frontend import create_app  # noqa: F401
from labkit.serving.metrics import Metrics  # noqa: F401
from labkit.serving.process import (EXPOSED_WARNING, LOG_PREFIX, SWITCH_INTERVAL_S,  # noqa: F401
                                    ServerProcess, free_port, option_flags, serve, serve_cli,
                                    start_server, sweep_logs, switch_interval_s)
from labkit.serving.protocol import RequestError  # noqa: F401

warnings.warn("labkit.serve moved to labkit.serving (labkit.serving.start_server, "
              "labkit.serving.create_app, ...); this alias goes away in the next release",
              DeprecationWarning, stacklevel=2)

if __name__ == "__main__":  # pragma: no cover - ``python -m labkit.serve`` as before
    import sys

    sys.exit(serve_cli(sys.argv[1:]))
