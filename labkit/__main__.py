"""Command line of the course: ``python -m labkit doctor``, ``python -m labkit bench NAME``,
``python -m labkit serve`` and ``python -m labkit route``.

Each benchmark lives in the module that owns its machinery and is registered in
:data:`BENCHES` as ``"module:function"``; the function takes the remaining arguments
(a list of strings) and returns the process exit code. Benchmarks print one JSON object
when given ``--json``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: bench name -> "module:function(argv) -> int"; the module is imported only when asked for.
BENCHES: dict[str, str] = {
    "decode": "labkit.inference.decode_bench:bench_decode_cli",
    "quant": "labkit.inference.quant_bench:bench_quant_cli",
    "storage": "labkit.storage.bench:bench_storage_cli",
    "serve": "labkit.serving.bench:bench_serve_cli",
    "route": "labkit.serving.routebench:bench_route_cli",
}


def _run_bench(name: str, argv: list[str]) -> int:
    if name not in BENCHES:
        print(f"labkit: unknown benchmark {name!r}; choose one of: {', '.join(sorted(BENCHES))}",
              file=sys.stderr)
        return 2
    module_name, func_name = BENCHES[name].split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and (err.name == module_name or module_name.startswith(err.name + ".")):
            print(f"labkit: benchmark {name!r} is not available in this version of the course "
                  f"({module_name} is missing). Update the repository and run `make setup`.",
                  file=sys.stderr)
        else:
            print(f"labkit: benchmark {name!r} needs the Python package {err.name!r}, which is not "
                  "installed in this environment. Run `make setup` (it installs the pinned "
                  "requirements into .venv) and use .venv/bin/python.", file=sys.stderr)
        return 2
    return int(getattr(module, func_name)(argv) or 0)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m labkit``; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m labkit", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    doctor = sub.add_parser("doctor", help="check that this machine can run the course")
    doctor.add_argument("--json", action="store_true", help="print the checks as one JSON object")
    doctor.add_argument("--skip-kernel", action="store_true",
                        help="do not start a Jupyter kernel (faster; for unit tests)")
    bench = sub.add_parser("bench", help="run one of the course's benchmarks")
    bench.add_argument("name", help=f"one of: {', '.join(sorted(BENCHES))}")
    bench.add_argument("args", nargs=argparse.REMAINDER, help="options of that benchmark (try --help)")
    sub.add_parser("serve", help="run the course's inference server (try `serve --help`)")
    sub.add_parser("route", help="route requests over replicas of the server (try `route --help`)")
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["serve"]:
        from labkit.serving.process import serve_cli

        return serve_cli(argv[1:])
    if argv[:1] == ["route"]:
        from labkit.serving.router import route_cli

        return route_cli(argv[1:])
    args = parser.parse_args(argv)
    if args.command == "doctor":
        from labkit.machine import doctor as doctor_module

        return doctor_module.main(json_output=args.json, check_kernel=not args.skip_kernel)
    return _run_bench(args.name, args.args)


if __name__ == "__main__":
    sys.exit(main())
