"""The cited storage figures of the course (AWS storage options) and what they imply.

:func:`storage_figures` reads ``labkit/data/storage.json`` (every figure with its source and
retrieval date); :func:`storage_table` and :func:`storage_sources` are the chapter's tables;
:func:`fleet_load_seconds` **derives** how long a fleet of Pods takes to read one checkpoint.
Imports only :mod:`~labkit.storage.measures`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from labkit.storage.measures import MiB


def storage_figures(path: str | os.PathLike | None = None) -> dict:
    """The cited storage figures of the course (AWS storage options), from one data file.

    Reads ``labkit/data/storage.json``: ``{"_meta": ..., "options": [...]}``; every option has
    text fields for the chapter's table (``throughput``, ``scaling``, ``latency``,
    ``cost_class``, ``semantics``), numeric fields for estimates, and ``sources`` (URL,
    title, retrieval date, the fields each supports). Raises RuntimeError if the file is
    missing or malformed.
    """
    if path is None:
        path = Path(__file__).resolve().parent.parent / "data" / "storage.json"
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise RuntimeError(f"{path} is missing; reinstall the course (`make setup`)") from err
    except json.JSONDecodeError as err:
        raise RuntimeError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(data.get("options"), list):
        raise RuntimeError(f"{path} has no 'options' list")
    return data


def storage_option(key: str) -> dict:
    """One storage option's cited figures by key (``"s3"``, ``"efs"``, ``"fsx_lustre"``...).

    Raises ValueError naming the known keys.
    """
    options = storage_figures()["options"]
    for opt in options:
        if opt["key"] == key:
            return dict(opt)
    raise ValueError(f"unknown storage option {key!r}; known: "
                     f"{', '.join(o['key'] for o in options)}")


#: Columns of :func:`storage_table` (for ``labkit.plots.Table``).
TABLE_COLUMNS = ("option", "type", "throughput (cited)", "how it scales", "latency (cited)",
                 "cost class", "access semantics")


def storage_table() -> list[list[str]]:
    """Rows for the chapter's cited comparison table, one per option (see TABLE_COLUMNS)."""
    return [[o["name"], o["type"], o["throughput"], o["scaling"], o["latency"],
             o["cost_class"], o["semantics"]] for o in storage_figures()["options"]]


def storage_sources() -> list[list[str]]:
    """Rows ``[option, title, url, retrieved]`` for every source of the cited table."""
    return [[o["name"], s["title"], s["url"], s["retrieved"]]
            for o in storage_figures()["options"] for s in o["sources"]]


def fleet_load_seconds(total_bytes: float, pods: int, option: str, *,
                       client_Gbps: float = 100.0, connections: int = 64,
                       range_MB: float = 16.0, fsx_capacity_TiB: float = 48.0,
                       fsx_cached: bool = False,
                       ebs_MiBps: float | None = None,
                       ebs_instance_Gbps: float | None = None) -> dict:
    """Derived: seconds until each of ``pods`` Pods has read ``total_bytes`` from ``option``.

    All Pods start together and read the same files (a model checkpoint). The rate of one Pod
    is the smallest of its own limits (the client's network, ``client_Gbps``; a per-client or
    per-volume cap; for S3-style stores ``connections`` x the cited per-connection rate) and
    its share of the option's aggregate limit (EFS per-file-system throughput; FSx for Lustre
    ``fsx_capacity_TiB`` x the cited MB/s per TiB; S3's GET rate per prefix x ``range_MB``).

    FSx for Lustre is PERSISTENT-1000. By default every read is served from the file servers'
    disks (disk baseline, 1,000 MB/s per TiB: the conservative case). With ``fsx_cached=True``
    the Pods read the same checkpoint at once, so the file servers read it from disk once and
    serve the other copies from their RAM cache: the shared limit becomes the network baseline
    (2,600 MB/s per TiB), and the disks must still deliver one copy at 1,000 MB/s per TiB
    (AWS: reads from the in-memory or SSD cache are limited by network throughput). ValueError
    if the checkpoint is larger than the cited RAM cache (GiB per TiB x capacity).

    EBS volumes are one per Pod (no sharing), already filled and initialised. Their
    throughput is a choice: ``ebs_MiBps`` (gp3: 125 MiB/s by default in AWS, here
    ``provisioned_MiBps`` = 1,000 unless given, at most the cited maximum; io2: its cited
    maximum), and the instance's EBS bandwidth ``ebs_instance_Gbps`` caps it when given.
    Returns ``{"option", "name", "seconds", "per_pod_MBps", "bound", "formula"}``. Raises
    ValueError for the instance store (data must be copied there first) and for bad
    arguments.
    """
    if total_bytes <= 0 or pods < 1 or client_Gbps <= 0 or connections < 1 or range_MB <= 0:
        raise ValueError("need total_bytes > 0, pods >= 1, client_Gbps > 0, connections >= 1 "
                         "and range_MB > 0")
    if ebs_instance_Gbps is not None and ebs_instance_Gbps <= 0:
        raise ValueError("ebs_instance_Gbps must be > 0 (or None)")
    opt = storage_option(option)
    if option == "instance_store":
        raise ValueError("the instance store is where a node keeps its own copy; fill it from "
                         "S3 or FSx first, then it reads at local NVMe speed")
    if fsx_cached and option != "fsx_lustre":
        raise ValueError(f"fsx_cached applies to fsx_lustre only, not {option!r}")
    if ebs_MiBps is not None and option not in ("ebs_gp3", "ebs_io2"):
        raise ValueError(f"ebs_MiBps applies to EBS options only, not {option!r}")
    client = client_Gbps * 1e9 / 8 / 1e6  # MB/s
    limits: dict[str, float] = {"client network": client}
    aggregate = None
    if option in ("s3", "mountpoint_s3", "s3_express"):
        per_conn = storage_option("s3")["per_connection_MBps"]
        limits["parallel GETs"] = connections * per_conn
        limits["per-instance S3 limit"] = opt["per_client_MBps"]
        rate_key = "get_per_s_default" if option == "s3_express" else "get_per_s_per_prefix"
        src = opt if option == "s3_express" else storage_option("s3")
        aggregate = ("request rate", src[rate_key] * range_MB)
    elif option == "efs":
        limits["per-client limit"] = opt["per_client_MBps"]
        aggregate = ("file system throughput", opt["aggregate_MBps"])
    elif option == "fsx_lustre":
        disk = fsx_capacity_TiB * opt["aggregate_MBps_per_TiB"]
        if fsx_cached:
            tier = opt["per_unit_MBps_per_TiB"].index(opt["aggregate_MBps_per_TiB"])
            cache_bytes = fsx_capacity_TiB * opt["cache_GiB_RAM_per_TiB"][tier] * 2**30
            if total_bytes > cache_bytes:
                raise ValueError(f"fsx_cached: {total_bytes / 1e9:.0f} GB does not fit the file "
                                 f"servers' RAM cache ({cache_bytes / 1e9:.0f} GB at "
                                 f"{fsx_capacity_TiB:g} TiB)")
            limits["file system disks, one copy for all Pods"] = disk
            aggregate = ("file system network (cached reads)",
                         fsx_capacity_TiB * opt["network_baseline_MBps_per_TiB"][tier])
        else:
            aggregate = ("file system disk throughput", disk)
    elif option in ("ebs_gp3", "ebs_io2"):
        low = opt.get("baseline_MiBps", 0)
        MiBps = ebs_MiBps if ebs_MiBps is not None else opt.get("provisioned_MiBps",
                                                                 opt["max_MiBps"])
        if not low <= MiBps <= opt["max_MiBps"]:
            raise ValueError(f"{option}: ebs_MiBps must be within {low}-{opt['max_MiBps']} "
                             f"MiB/s (cited), got {MiBps}")
        limits[f"volume at {MiBps:,.0f} MiB/s"] = MiBps * MiB / 1e6
        if ebs_instance_Gbps is not None:
            limits["instance EBS bandwidth"] = ebs_instance_Gbps * 1e9 / 8 / 1e6
    else:  # a new option in the data file without a model here
        raise ValueError(f"no load model for {option!r}")
    bound, rate = min(limits.items(), key=lambda kv: kv[1])
    if aggregate is not None and aggregate[1] / pods < rate:
        bound, rate = f"shared {aggregate[0]} / {pods} Pods", aggregate[1] / pods
    seconds = total_bytes / 1e6 / rate
    formula = f"{total_bytes / 1e9:.0f} GB / {rate:,.0f} MB/s ({bound})"
    return {"option": option, "name": opt["name"], "seconds": seconds, "per_pod_MBps": rate,
            "bound": bound, "formula": formula}
