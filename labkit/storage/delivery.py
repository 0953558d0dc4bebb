"""Model delivery and cold start: how fast weights get from a file into memory, and what a
140 GB model's cold start on EKS is made of.

Two halves:

* **Measured** (:func:`measure_delivery`): load a safetensors file (SmolLM2's, prepared under
  ``$LABKIT_CACHE``) cold (its pages dropped from the page cache) and warm, three ways:
  ``read()`` into one page-aligned buffer with 1 thread, the same with N threads over byte
  ranges (what a model streamer does), and safetensors' own ``safe_open`` (a memory map, then
  one copy per tensor). Every figure stands next to a reference measured in the same run: fio's
  sequential read of the same file for cold loads, a one-thread page-cache copy for warm ones.
* **Derived** (:func:`cold_start_terms`): node launch + image pull + weights load + engine
  start for one new node, per delivery option (weights in the image, an image volume, Mountpoint
  for Amazon S3, the Run:ai Model Streamer from S3, FSx for Lustre), from cited per-connection,
  per-instance and per-volume throughput (:data:`CITED`, ``labkit/data/storage.json`` and
  ``labkit/data/hardware.json``). Node launch and engine start are *assumptions* you pass in:
  no AWS page publishes them for your instance, model and engine.

Units: ``MBps`` is 10**6 bytes per second; sizes in bytes; times in seconds.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from labkit.machine.scratch import scratch_dir
from labkit.machine.timing import Samples
from labkit.planning import catalog
from labkit.storage import cited, compare, disk, fio, pagecache
from labkit.storage.measures import MiB

__all__ = ["CITED", "SOURCES", "DTYPES", "weights_files", "read_header", "load_parallel",
           "load_safe_open", "drop_cached", "measure_delivery", "median_MBps", "image_pull_seconds",
           "weights_load", "cold_start_terms", "DELIVERY_OPTIONS", "TCP_CLIENT_GBPS",
           "REFERENCE_BYTES"]

#: safetensors dtype names -> torch dtype names.
DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
          "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8",
          "BOOL": "bool"}

#: Cited figures this module adds to the course's storage and hardware data (checked 2026-12-05).
CITED = {
    "streamer_concurrency_object_store": 8,     # RUNAI_STREAMER_CONCURRENCY default, S3
    "streamer_concurrency_file_system": 16,     # the same, file system
    "streamer_chunk_MiB_object_store": 8,       # RUNAI_STREAMER_CHUNK_BYTESIZE default, S3
    "mountpoint_part_MiB": 8,                   # --read-part-size default (8,306,688 bytes)
    "fast_image_pull_min_root_MiBps": 600,      # nodeadm FastImagePull: at least 600 MiB/s
    "fast_image_pull_max_root_MiBps": 1000,     # "higher values up to 1000 MiB/s" may help
}

#: Where each entry of :data:`CITED` (and the facts in chapter 07's delivery section) comes from.
SOURCES = [
    {"title": "Run:ai Model Streamer: environment variables (pinned commit)",
     "url": "https://github.com/run-ai/runai-model-streamer/blob/"
            "78266cd1e1d628ac4383069ac86ebdd2cf31f2ef/docs/src/env-vars.md",
     "retrieved": "2026-12-05",
     "fields": ["streamer_concurrency_object_store", "streamer_concurrency_file_system",
                "streamer_chunk_MiB_object_store"]},
    {"title": "vLLM: Loading models with Run:ai Model Streamer (--load-format runai_streamer)",
     "url": "https://docs.vllm.ai/en/stable/models/extensions/runai_model_streamer/",
     "retrieved": "2026-12-05", "fields": []},
    {"title": "Mountpoint for Amazon S3: configuration, performance (pinned commit)",
     "url": "https://github.com/awslabs/mountpoint-s3/blob/"
            "58817cab2fc3020a422d8aa14049a86b296f4498/doc/CONFIGURATION.md",
     "retrieved": "2026-12-05", "fields": ["mountpoint_part_MiB"]},
    {"title": "Amazon EKS AMI nodeadm: enabling fast image pull (pinned commit)",
     "url": "https://github.com/awslabs/amazon-eks-ami/blob/"
            "81fec2e895854f599974fe4d3d72f61c0a9aaffa/nodeadm/doc/examples.md",
     "retrieved": "2026-12-05",
     "fields": ["fast_image_pull_min_root_MiBps", "fast_image_pull_max_root_MiBps"]},
    {"title": "Kubernetes: Use an Image Volume With a Pod (v1.35 beta, enabled by default)",
     "url": "https://kubernetes.io/docs/tasks/configure-pod-container/image-volumes",
     "retrieved": "2026-12-05", "fields": []},
    {"title": "Amazon EKS: Run AI/ML inference workloads (SOCI parallel pull, model streaming)",
     "url": "https://docs.aws.amazon.com/eks/latest/userguide/ml-inference.html",
     "retrieved": "2026-12-05", "fields": []},
]


# --------------------------------------------------------------------------- measured


def weights_files(folder: str | os.PathLike | None = None) -> list[Path]:
    """The ``*.safetensors`` files of the prepared SmolLM2 (``$LABKIT_CACHE``), sorted.

    ``folder`` overrides where to look. Raises FileNotFoundError saying how to prepare them.
    """
    if folder is None:
        from labkit.inference import smollm2  # torch import only when needed
        folder = smollm2.smollm2_dir()
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no .safetensors file in {folder}: prepare SmolLM2 with "
                                f"`python -c 'from labkit.inference.smollm2 import prepare_smollm2; prepare_smollm2()'` "
                                f"(or `make setup`), or set LABKIT_CACHE to where it is")
    return files


def read_header(path: str | os.PathLike) -> tuple[int, dict]:
    """``(data_start, tensors)`` of a safetensors file: where the tensor bytes begin, and
    ``{name: {"dtype", "shape", "data_offsets"}}`` (offsets relative to ``data_start``).

    Raises ValueError if the file is not safetensors.
    """
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path} is too short to be a safetensors file")
        (n,) = struct.unpack("<Q", raw)
        if n > 100 * 2**20:
            raise ValueError(f"{path}: header of {n} bytes; not a safetensors file")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path}: header is not JSON ({err}); not a safetensors file") from err
    header.pop("__metadata__", None)
    return 8 + n, header


def load_parallel(path: str | os.PathLike, threads: int = 1, *, out=None) -> dict:
    """Load every tensor of a safetensors file the way a model streamer does: ``threads``
    threads each ``pread`` one contiguous byte range into one page-aligned buffer, then every
    tensor is a zero-copy view of that buffer (``torch.frombuffer``).

    ``out``: a writable buffer to reuse (at least the size of the tensor data, e.g.
    :func:`labkit.storage.pagecache.aligned_buffer`), as a streamer reuses its CPU buffer; by
    default a fresh one is allocated (its first touch costs a page fault per page). Returns
    ``{name: tensor}``; the tensors keep the buffer alive. ValueError if threads < 1 or ``out``
    is too small.
    """
    import torch

    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    start, header = read_header(path)
    size = os.path.getsize(path) - start
    buf = pagecache.aligned_buffer(max(size, 1)) if out is None else out
    if len(buf) < size:
        raise ValueError(f"out holds {len(buf)} bytes; {path} needs {size}")
    step = math.ceil(size / threads / 4096) * 4096        # whole pages per thread
    fd = os.open(path, os.O_RDONLY)
    try:
        def read_range(lo: int) -> int:
            view, done = memoryview(buf)[lo:min(lo + step, size)], 0
            while done < len(view):
                n = os.preadv(fd, [view[done:]], start + lo + done)
                if n <= 0:
                    raise OSError(f"{path}: short read at byte {start + lo + done}")
                done += n
            view.release()
            return done
        with ThreadPoolExecutor(threads) as pool:
            got = sum(pool.map(read_range, range(0, size, step)))
    finally:
        os.close(fd)
    if got != size:
        raise OSError(f"{path}: read {got} of {size} bytes")
    out = {}
    for name, t in header.items():
        lo, hi = t["data_offsets"]
        dtype = getattr(torch, DTYPES[t["dtype"]])
        if hi == lo:                                    # an empty tensor has no bytes
            out[name] = torch.empty(t["shape"], dtype=dtype)
            continue
        flat = torch.frombuffer(buf, dtype=dtype, count=(hi - lo) // dtype.itemsize, offset=lo)
        out[name] = flat.view(t["shape"])
    return out


def load_safe_open(path: str | os.PathLike, *, touch: bool = True) -> dict:
    """Load every tensor with safetensors' ``safe_open``, which maps the file (``mmap``): the
    tensors are views of the page cache, and a page is read from the disk only when first
    touched. ``touch=True`` reads one byte of every page so that the load is complete (what a
    copy to the GPU would do anyway). Returns ``{name: tensor}``; while they live, the file's
    pages stay mapped (and cannot be dropped from the page cache).
    """
    import torch
    from safetensors import safe_open

    with safe_open(os.fspath(path), framework="pt") as f:
        out = {name: f.get_tensor(name) for name in f.keys()}
    if touch:
        for t in out.values():
            if t.numel():
                t.reshape(-1).view(torch.uint8)[::4096].sum()
    return out


def drop_cached(path: str | os.PathLike) -> tuple[bool, float | None]:
    """Drop ``path`` from the page cache and check it: ``(dropped, cached_fraction_after)``.

    ``dropped`` is False where dropping is impossible (no ``posix_fadvise``: macOS, Windows)
    or did not work (more than 10 % of the pages still resident, e.g. another process holds
    them mapped or reads the file at the same time). The fraction is ``None`` where ``mincore``
    is unavailable (then ``dropped`` trusts ``posix_fadvise``).
    """
    try:
        pagecache.drop_file_cache(path)
    except (RuntimeError, OSError):
        return False, pagecache.cached_fraction(path)
    frac = pagecache.cached_fraction(path)
    return (frac is None or frac <= 0.10), frac


def _warm(path) -> None:
    frac = pagecache.cached_fraction(path)
    if frac is None or frac < 0.99:            # not all in RAM yet: read it once
        disk.read_file(path, 4 * MiB, cache="warm")


#: The references read at most this much of the file (enough to leave the caches, and quick).
REFERENCE_BYTES = 256 * 2**20


def measure_delivery(path: str | os.PathLike, threads: tuple[int, ...] = (1, 2), *,
                     repeats: int = 3, workdir: str | os.PathLike | None = None,
                     private_copy: bool = False) -> dict:
    """Measured load times of one safetensors file, cold and warm, with references.

    Methods: ``read, N thread(s)`` (:func:`load_parallel`) for each N in ``threads``, and
    ``safe_open (mmap)`` (:func:`load_safe_open`, every page touched); the reads reuse one
    destination buffer, faulted in before timing (as a streamer reuses its CPU buffer). Each cold (page cache dropped) and warm,
    ``repeats`` times, interleaved. References, measured in the same run: fio's sequential
    buffered 1 MiB read of the same file, cold (a Python read loop where fio is missing), and
    a one-thread 1 MiB page-cache copy into an aligned buffer (warm), each over the first
    :data:`REFERENCE_BYTES` of the file. ``workdir``: where fio
    writes its job file (default: a fresh scratch folder).

    Returns ``{"file_bytes", "rows", "cold_ok", "cached_after_drop", "ref_cold_MBps",
    "ref_cold_source", "ref_warm_MBps"}``; each row has ``method``, ``cache``, ``seconds``
    (a :class:`labkit.machine.timing.Samples`), ``MBps`` (median) and ``of_reference``. When the page
    cache cannot be dropped, ``cold_ok`` is False and the "cold" rows are not cold.

    ``private_copy=True`` measures a byte-identical copy in a scratch folder (free space
    checked first, removed afterwards; ``copied_from`` names the original): on a shared
    machine another process may be reading the original, which refills its page cache.
    """
    if repeats < 1 or not threads or min(threads) < 1:
        raise ValueError("need repeats >= 1 and threads a non-empty tuple of counts >= 1")
    path = Path(path)
    size = path.stat().st_size
    if private_copy:
        with scratch_dir(size, root=workdir, prefix="labkit-delivery-") as folder:
            copy = folder / path.name
            shutil.copyfile(path, copy)
            result = measure_delivery(copy, threads, repeats=repeats, workdir=folder)
        result["copied_from"] = str(path)
        return result
    buf = pagecache.aligned_buffer(size)                 # reused by every read, faulted in once
    memoryview(buf)[::4096] = bytes(len(range(0, size, 4096)))
    methods = {f"read, {n} thread{'s' if n > 1 else ''}":
               (lambda n=n: load_parallel(path, n, out=buf)) for n in threads}
    methods["safe_open (mmap)"] = lambda: load_safe_open(path)
    times = {(m, c): [] for m in methods for c in ("cold", "warm")}
    cold_ok, fractions = True, []
    for _ in range(repeats):
        for cache in ("cold", "warm"):
            for name, load in methods.items():
                if cache == "cold":
                    for attempt in range(3):       # another process may be reading the file
                        ok, frac = drop_cached(path)
                        if ok:
                            break
                        time.sleep(0.05)
                    cold_ok, fractions = cold_ok and ok, fractions + [frac]
                else:
                    _warm(path)
                t0 = time.perf_counter()
                tensors = load()
                times[(name, cache)].append(time.perf_counter() - t0)
                del tensors
    ref_bytes = min(size, REFERENCE_BYTES)
    ref_warm = disk.read_file(path, MiB, cache="warm", limit_bytes=ref_bytes).MBps
    by_fio = None
    if fio.fio_path() is not None and size >= MiB:
        with scratch_dir(16 * MiB, root=workdir, prefix="labkit-delivery-") as d:
            by_fio = compare.fio_seq_read(path, MiB, cache="cold", method="buffered",
                                          size=ref_bytes, workdir=d)
    if by_fio is not None:
        ref_cold, source = by_fio.MBps, "fio, 1 MiB sequential, buffered, QD1"
    else:
        ref_cold = disk.read_file(path, MiB, cache="cold", method="buffered",
                                  limit_bytes=ref_bytes).MBps
        source = "Python 1 MiB read loop (fio not installed, or the file is under 1 MiB)"
    rows = []
    for (name, cache), secs in times.items():
        st = Samples(secs, "s")
        mbps = size / st.median / 1e6
        ref = ref_cold if cache == "cold" else ref_warm
        rows.append({"method": name, "cache": cache, "seconds": st, "MBps": mbps,
                     "of_reference": mbps / ref})
    known = [f for f in fractions if f is not None]
    return {"file_bytes": size, "rows": rows, "cold_ok": cold_ok,
            "cached_after_drop": max(known) if known else None,
            "ref_cold_MBps": ref_cold, "ref_cold_source": source, "ref_warm_MBps": ref_warm}


# --------------------------------------------------------------------------- derived


#: What one TCP client (one network card) is assumed to reach, as in chapter 07's fleet table:
#: S3's cited per-instance limit is 100 Gb/s; a p5's 3,200 Gb/s is EFA spread over many cards.
TCP_CLIENT_GBPS = 100

#: Delivery options of :func:`cold_start_terms`, in plot order.
DELIVERY_OPTIONS = ("image", "image_volume_cached", "mountpoint_s3", "streamer_default",
                    "streamer_64", "fsx_lustre")


def image_pull_seconds(image_bytes: float, *, root_MiBps: float, network_Gbps: float) -> dict:
    """Derived lower bound on pulling an image of ``image_bytes`` onto a node's root volume.

    containerd downloads each compressed layer into its content store and unpacks it into a
    snapshot: for weights (which barely compress) that writes the bytes about twice to the root
    volume. So ``seconds = max(2 x bytes / root volume rate, bytes / network rate)``; decompression
    and registry limits only add to it. Returns ``{"seconds", "bound", "formula"}``.
    """
    if image_bytes < 0 or root_MiBps <= 0 or network_Gbps <= 0:
        raise ValueError("need image_bytes >= 0, root_MiBps > 0 and network_Gbps > 0")
    disk_s = 2 * image_bytes / (root_MiBps * 2**20)
    net_s = image_bytes / (network_Gbps * 1e9 / 8)
    bound = "root volume writes" if disk_s >= net_s else "instance network"
    return {"seconds": max(disk_s, net_s), "bound": bound,
            "formula": f"max(2 x {image_bytes / 1e9:.0f} GB / {root_MiBps:,.0f} MiB/s, "
                       f"{image_bytes / 1e9:.0f} GB / {network_Gbps:,.0f} Gb/s)"}


def weights_load(model_bytes: float, option: str, *, instance: str = "p5.48xlarge",
                 root_MiBps: float = 1000, fsx_capacity_TiB: float = 48.0) -> dict:
    """Derived seconds to read ``model_bytes`` of weights on one new node, per option.

    The client's network is the instance's, at most :data:`TCP_CLIENT_GBPS` (one network
    card). ``image``/``image_volume_cached``: from the root volume (``root_MiBps``; a file
    just pulled may still be in the page cache, so this is the conservative case).
    ``mountpoint_s3``: Mountpoint targets the instance's network bandwidth, so as many 85 MB/s connections as that
    needs, capped by S3's 100 Gb/s per instance. ``streamer_default``/``streamer_64``: the Run:ai
    streamer with its default object-store concurrency (8) or 64 connections. ``fsx_lustre``:
    one client on a PERSISTENT-1000 file system of ``fsx_capacity_TiB`` (TCP, no EFA). Returns
    ``{"seconds", "MBps", "bound", "formula"}``.
    """
    net_Gbps = min(catalog.instance(instance)["network_Gbps"], TCP_CLIENT_GBPS)
    if option in ("image", "image_volume_cached"):
        rate = root_MiBps * 2**20 / 1e6
        return {"seconds": model_bytes / 1e6 / rate, "MBps": rate, "bound": "root volume read",
                "formula": f"{model_bytes / 1e9:.0f} GB / {root_MiBps:,.0f} MiB/s"}
    if option == "mountpoint_s3":
        target_MBps = min(net_Gbps, cited.storage_option("s3")["per_client_Gbps"]) * 125
        conns = math.ceil(target_MBps / cited.storage_option("s3")["per_connection_MBps"])
        est = cited.fleet_load_seconds(model_bytes, 1, "mountpoint_s3", client_Gbps=net_Gbps,
                                         connections=conns, range_MB=8)
    elif option in ("streamer_default", "streamer_64"):
        conns = CITED["streamer_concurrency_object_store"] if option == "streamer_default" else 64
        est = cited.fleet_load_seconds(model_bytes, 1, "s3", client_Gbps=net_Gbps,
                                         connections=conns,
                                         range_MB=CITED["streamer_chunk_MiB_object_store"])
    elif option == "fsx_lustre":
        est = cited.fleet_load_seconds(model_bytes, 1, "fsx_lustre", client_Gbps=net_Gbps,
                                         fsx_capacity_TiB=fsx_capacity_TiB)
    else:
        raise ValueError(f"unknown option {option!r}; known: {', '.join(DELIVERY_OPTIONS)}")
    return {"seconds": est["seconds"], "MBps": est["per_pod_MBps"], "bound": est["bound"],
            "formula": est["formula"]}


def cold_start_terms(model_bytes: float = 140e9, *, instance: str = "p5.48xlarge",
                     node_s: float, engine_s: float, engine_image_bytes: float,
                     root_MiBps: float = 1000, fsx_capacity_TiB: float = 48.0,
                     options: tuple[str, ...] = DELIVERY_OPTIONS) -> list[dict]:
    """Cold start of one new node serving a model of ``model_bytes``, one row per option.

    Each row: ``option``, ``node_s`` (assumption: launch until Ready), ``pull_s`` (engine image,
    plus the weights where they travel in the image; zero for the weights of an image volume
    already on the node), ``weights_s`` (:func:`weights_load`), ``engine_s`` (assumption:
    warm-up and graph capture), ``total_s`` and the ``formula`` of each derived term.
    """
    if node_s < 0 or engine_s < 0 or engine_image_bytes < 0 or model_bytes <= 0:
        raise ValueError("need node_s, engine_s, engine_image_bytes >= 0 and model_bytes > 0")
    net_Gbps = min(catalog.instance(instance)["network_Gbps"], TCP_CLIENT_GBPS)
    rows = []
    for opt in options:
        in_image = model_bytes if opt == "image" else 0.0
        pull = image_pull_seconds(engine_image_bytes + in_image, root_MiBps=root_MiBps,
                                  network_Gbps=net_Gbps)
        load = weights_load(model_bytes, opt, instance=instance, root_MiBps=root_MiBps,
                            fsx_capacity_TiB=fsx_capacity_TiB)
        total = node_s + pull["seconds"] + load["seconds"] + engine_s
        rows.append({"option": opt, "node_s": node_s, "pull_s": pull["seconds"],
                     "weights_s": load["seconds"], "engine_s": engine_s, "total_s": total,
                     "pull_formula": pull["formula"], "weights_formula": load["formula"],
                     "weights_bound": load["bound"]})
    return rows


def median_MBps(result: dict, method: str, cache: str) -> float:
    """The median MB/s of one row of :func:`measure_delivery`'s result (KeyError if absent)."""
    for row in result["rows"]:
        if (row["method"], row["cache"]) == (method, cache):
            return row["MBps"]
    raise KeyError(f"no row {method!r}/{cache!r}; rows: "
                   f"{sorted({(r['method'], r['cache']) for r in result['rows']})}")

