"""``python -m labkit bench storage``: the storage benchmark of the course.

:func:`run_benchmark` writes one scratch file and measures cold sequential 1 MiB reads and
random 4 KiB reads against fio, then small files against one file;
:func:`bench_storage_cli` is its command line. Sits above ``compare``, ``smallfiles`` and
``context``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from labkit.machine import scratch
from labkit.storage.compare import compare_rand_read, compare_seq_read
from labkit.storage.context import machine_context
from labkit.storage.disk import DEFAULT_FILE_BYTES, MAX_DEFAULT_BYTES, write_file
from labkit.storage.fio import FIO_INSTALL_HINT
from labkit.storage.measures import GiB, KiB, MiB
from labkit.storage.smallfiles import small_vs_big


#: Keys of ``python -m labkit bench storage --json``, in this order.
BENCH_KEYS = ("path", "file_bytes", "seq_read_MBps", "fio_seq_read_MBps", "seq_read_ratio",
              "rand4k_iops", "fio_rand4k_iops", "rand4k_ratio", "small_files_MBps",
              "big_file_MBps")


def _round(x: float | None, nd: int = 1) -> float | None:
    if x is None or x != x:
        return None
    return round(x, nd)


def run_benchmark(*, file_bytes: int = DEFAULT_FILE_BYTES, root: str | os.PathLike | None = None,
                  repeats: int = 3, rand_ops: int = 4000, n_files: int = 4000,
                  small_file_bytes: int = 4 * KiB, method: str = "auto",
                  progress=None) -> tuple[dict, dict]:
    """The storage benchmark; returns (the JSON summary with :data:`BENCH_KEYS`, the details).

    On one scratch file of ``file_bytes``: cold sequential 1 MiB reads and random 4 KiB reads
    at queue depth 1, each against fio on the same file, alternating, ``repeats`` times
    (medians); then ``n_files`` small files against one file of the same total (cold).
    Everything is removed afterwards.
    """
    if file_bytes < 4 * MiB:
        raise ValueError(f"file_bytes must be at least 4 MiB, got {file_bytes}")
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    say = progress or (lambda msg: None)
    small_total = n_files * small_file_bytes
    need = file_bytes + 2 * small_total + 64 * KiB * n_files // 16
    root = Path(root) if root is not None else scratch.scratch_root()
    with scratch.scratch_dir(need, prefix="labkit-storage-", root=root) as d:
        f = d / "bench.bin"
        say(f"writing {file_bytes / MiB:.0f} MiB test file in {d} ...")
        w = write_file(f, file_bytes, 1 * MiB)
        say(f"sequential cold reads, 1 MiB, {repeats}x (Python and fio alternating) ...")
        seq = compare_seq_read(f, 1 * MiB, cache="cold", method=method, repeats=repeats)
        say(f"random 4 KiB reads at QD1, {rand_ops} per run, {repeats}x ...")
        rnd = compare_rand_read(f, ops=rand_ops, method=method, repeats=repeats)
        say(f"{n_files} small files of {small_file_bytes} B against one file ...")
        sb = small_vs_big(d / "files", n_files=n_files, file_bytes=small_file_bytes,
                          caches=("cold",), repeats=repeats)
        ctx = machine_context(d)
        ctx["path"] = str(root.absolute())
    small = next(r for r in sb["rows"] if r["layout"] == "small files")
    big = next(r for r in sb["rows"] if r["layout"] == "one big file")
    summary = {
        "path": str(Path(root).absolute()),
        "file_bytes": file_bytes,
        "seq_read_MBps": _round(seq.python.median),
        "fio_seq_read_MBps": _round(seq.fio.median) if seq.fio else None,
        "seq_read_ratio": _round(seq.ratio.median, 3) if seq.ratio else None,
        "rand4k_iops": int(round(rnd.python.median)),
        "fio_rand4k_iops": int(round(rnd.fio.median)) if rnd.fio else None,
        "rand4k_ratio": _round(rnd.ratio.median, 3) if rnd.ratio else None,
        "small_files_MBps": _round(small["MBps"].median),
        "big_file_MBps": _round(big["MBps"].median),
    }
    details = {"write": w, "seq": seq, "rand": rnd, "small_vs_big": sb, "context": ctx}
    return summary, details


def _parse_size(text: str) -> int:
    """'256M', '1G', '512MiB', '4096' -> bytes (binary units)."""
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    mult = {"K": KiB, "M": MiB, "G": GiB}
    try:
        if t and t[-1] in mult:
            return int(float(t[:-1]) * mult[t[-1]])
        return int(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 256M or 1G)") from None


def bench_storage_cli(argv: list[str]) -> int:
    """``python -m labkit bench storage [--json] [--size 256M] [--path DIR] ...``.

    Prints one JSON object with :data:`BENCH_KEYS` when given ``--json`` (MB/s = 10**6 B/s;
    fio fields are null without fio, and a note on stderr says how to install it); otherwise
    a readable report. Returns 0 on success, 1 when it cannot run (for example too little
    free space), 2 on bad options.
    """
    p = argparse.ArgumentParser(
        prog="python -m labkit bench storage",
        description="Disk throughput (cold 1 MiB sequential reads, random 4 KiB reads at QD1, "
                    "small files vs one file), each against fio on the same file.")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--size", type=_parse_size, default=DEFAULT_FILE_BYTES,
                   help="test file size, e.g. 256M (default), at most 1G")
    p.add_argument("--path", default=None,
                   help="scratch folder (default: $LABKIT_SCRATCH or <repo>/.scratch)")
    p.add_argument("--repeats", type=int, default=5, help="repetitions, medians reported")
    p.add_argument("--rand-ops", type=int, default=4000, help="random reads per repetition")
    p.add_argument("--small-files", type=int, default=4000, help="number of small files")
    p.add_argument("--small-file-size", type=_parse_size, default=4 * KiB,
                   help="size of each small file (default 4K)")
    p.add_argument("--method", choices=("auto", "direct", "buffered"), default="auto",
                   help="cold reads with O_DIRECT, or buffered after dropping the page cache")
    try:
        args = p.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    if args.size > MAX_DEFAULT_BYTES:
        print(f"labkit bench storage: --size is at most {MAX_DEFAULT_BYTES // GiB} GiB (the "
              f"course's scratch budget; the file is read with O_DIRECT or after dropping its "
              f"pages, so it need not exceed RAM)", file=sys.stderr)
        return 2
    progress = None if args.json else (lambda m: print(m, flush=True))
    try:
        summary, details = run_benchmark(
            file_bytes=args.size, root=args.path, repeats=args.repeats, rand_ops=args.rand_ops,
            n_files=args.small_files, small_file_bytes=args.small_file_size,
            method=args.method, progress=progress)
    except (RuntimeError, ValueError, OSError) as err:
        print(f"labkit bench storage: {err}", file=sys.stderr)
        return 1
    if details["seq"].fio is None:
        print(f"labkit bench storage: {FIO_INSTALL_HINT}", file=sys.stderr)
    if args.json:
        print(json.dumps({k: summary[k] for k in BENCH_KEYS}))
        return 0
    ctx = details["context"]
    print("\nmachine:", ", ".join(f"{k}={v}" for k, v in ctx.items()))
    print(f"\n{details['write']}")
    print(details["seq"])
    print(details["rand"])
    lat = details["rand"].details
    if "python_latency_us" in lat:
        print("  Python latency (µs):", _lat_line(lat["python_latency_us"]))
    if "fio_latency_us" in lat:
        print("  fio latency (µs):   ", _lat_line(lat["fio_latency_us"]))
    sb = details["small_vs_big"]
    print(f"\n{sb['n_files']} small files of {sb['file_bytes']} B vs one file, cold:")
    for r in sb["rows"]:
        extra = f", {r['files_per_s']}" if r["files_per_s"] else ""
        print(f"  {r['layout']:>13}: {r['MBps']}{extra}")
    for (cache, t), pen in sb["penalty"].items():
        print(f"  one big file is {pen:.0f}x faster ({cache}, {t} thread(s))")
    w = sb["write"]
    print(f"  write + flush: small files {w['small'].MBps:.1f} MB/s, one file "
          f"{w['big'].MBps:.0f} MB/s")
    print("\nsummary:", json.dumps({k: summary[k] for k in BENCH_KEYS}))
    return 0


def _lat_line(lat: dict) -> str:
    return ", ".join(f"{k} {v:.0f}" for k, v in lat.items())
