"""The course's cited table of accelerators and EC2 instance types.

Every published hardware figure the course uses (accelerator memory and bandwidth, dense
tensor-core TFLOPS, accelerators per instance, vCPUs, memory, network, EFA) lives in one data
file, ``labkit/data/hardware.json``, and every entry there carries its sources (URL, title,
retrieval date). This module only reads that file: no network, no global state beyond a
cached parse of the packaged JSON.

Units and conventions (also written in the file's ``_meta.read_me``):

* ``memory_GB`` is accelerator memory per device *as the vendor publishes it* (NVIDIA: GB;
  the AWS Neuron docs: GiB, see ``memory_unit_published``).
* ``memory_bandwidth_GBps`` is peak memory bandwidth per device in GB/s.
* ``bf16_dense_TFLOPS`` / ``fp8_dense_TFLOPS`` are *dense* peaks (no structured sparsity);
  ``None`` where the device has no such format or the vendor publishes no figure, or publishes
  one without saying whether it is dense (kept in ``published_unqualified_TFLOPS``).
* ``mig_max_instances`` (NVIDIA GPUs only) is how many MIG instances one GPU can be split
  into, 0 for none (NVIDIA's MIG user guide).
* ``network_Gbps`` is the instance's baseline bandwidth as the EC2 API reports it;
  ``network_published`` is AWS's headline figure and ``network_up_to`` marks "up to" bursts.

Example::

    >>> from labkit.planning import catalog
    >>> catalog.gpu_memory_gb("A10G")
    24.0
    >>> catalog.instance("p4d.24xlarge")["accelerator"]
    'A100-40GB'
"""

from __future__ import annotations

import copy
import json
from functools import lru_cache
from importlib import resources

ACCELERATOR_KEYS = ("name", "vendor", "memory_GB", "memory_bandwidth_GBps", "bf16_dense_TFLOPS",
                    "fp8_dense_TFLOPS", "sources")
INSTANCE_KEYS = ("name", "accelerator", "accelerator_count", "accelerator_memory_GB_total", "vcpus",
                 "memory_GiB", "network_Gbps", "efa", "sources")


@lru_cache(maxsize=1)
def _data() -> dict:
    text = resources.files("labkit").joinpath("data", "hardware.json").read_text(encoding="utf-8")
    return json.loads(text)


def _key(name: str) -> str:
    """Lookup key: case-insensitive, ignoring spaces, hyphens and underscores."""
    return "".join(ch for ch in name.lower() if ch not in " -_")


def _find(section: str, name: str, what: str) -> dict:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{what} name must be a non-empty string, got {name!r}")
    entries = _data()[section]
    wanted = _key(name)
    for entry in entries:
        if wanted in {_key(n) for n in [entry["name"], *entry.get("aliases", [])]}:
            return copy.deepcopy(entry)
    known = ", ".join(e["name"] for e in entries)
    raise ValueError(f"unknown {what} {name!r}; known {what}s: {known}")


def metadata() -> dict:
    """The data file's ``_meta`` block: retrieval date, conventions, the draft's corrected errors."""
    return copy.deepcopy(_data()["_meta"])


def accelerators() -> list[str]:
    """Names of the accelerators in the catalog, in file order (e.g. ``"H100"``, ``"A10G"``)."""
    return [entry["name"] for entry in _data()["accelerators"]]


def accelerator(name: str) -> dict:
    """One accelerator's published facts and sources, as a fresh dict.

    Keys always present: ``name, vendor, memory_GB, memory_bandwidth_GBps, bf16_dense_TFLOPS,
    fp8_dense_TFLOPS, sources`` (plus ``variant``, ``memory_type``, ``fp16_dense_TFLOPS``,
    ``published_sparse_TFLOPS``, ``notes``, ``mig_max_instances`` for NVIDIA GPUs and, where a
    value was derived, ``derived``).

    Args:
        name: catalog name or alias, case-insensitive (``"a100 80gb"`` finds ``"A100-80GB"``).

    Raises:
        ValueError: the name is unknown; the message lists the known names.
    """
    return _find("accelerators", name, "accelerator")


def instances() -> list[str]:
    """EC2 instance type names in the catalog, in file order (e.g. ``"p5.48xlarge"``)."""
    return [entry["name"] for entry in _data()["instances"]]


def instance(name: str) -> dict:
    """One EC2 instance type's published facts and sources, as a fresh dict.

    Keys always present: ``name, accelerator, accelerator_count, accelerator_memory_GB_total,
    vcpus, memory_GiB, network_Gbps, efa, sources`` (plus ``family``, ``network_published``,
    ``network_up_to``, ``efa_interfaces``, ``derived`` and usually ``notes``). ``accelerator``
    is a name that :func:`accelerator` accepts. ``network_Gbps`` is ``None`` where AWS
    publishes only an "up to" figure and no baseline (p3.2xlarge).

    Raises:
        ValueError: the instance type is unknown; the message lists the known names.
    """
    return _find("instances", name, "instance type")


def gpu_memory_gb(name: str) -> float:
    """Accelerator memory per device, as published, for an accelerator *or* an instance type.

    ``gpu_memory_gb("L4")`` and ``gpu_memory_gb("g6.xlarge")`` both give 24.0. Neuron devices
    are published in GiB (see ``accelerator(name)["memory_unit_published"]``).

    Raises:
        ValueError: neither an accelerator nor an instance type in the catalog has this name.
    """
    try:
        return float(accelerator(name)["memory_GB"])
    except ValueError:
        pass
    try:
        acc_name = instance(name)["accelerator"]
    except ValueError:
        raise ValueError(f"unknown accelerator or instance type {name!r}; accelerators: "
                         f"{', '.join(accelerators())}; instance types: "
                         f"{', '.join(instances())}") from None
    return float(accelerator(acc_name)["memory_GB"])


#: Accelerators without bf16 Tensor Cores (Turing, Volta; see the catalog's notes).
NO_BF16 = frozenset({"T4", "V100-16GB", "V100-32GB"})


def runs_natively(accelerator_name: str, dtype: str) -> bool:
    """Whether ``accelerator_name`` runs ``dtype`` natively: bf16 not on T4/V100; fp8 where a
    dense or an unqualified fp8 figure is cited (the RTX PRO 6000's datasheet does not say dense
    or sparse); fp32, fp16, int8 and int4 everywhere (as storage formats at least)."""
    from labkit.planning import memory

    name = memory.normalize_dtype(dtype)
    acc = accelerator(accelerator_name)
    if name == "bf16":
        return acc["name"] not in NO_BF16
    if name == "fp8":
        return (acc["fp8_dense_TFLOPS"] is not None
                or "fp8" in (acc.get("published_unqualified_TFLOPS") or {}))
    return True


def gpu_bandwidth_GBps(name: str) -> tuple[float, str]:
    """Peak memory bandwidth of accelerator ``name`` from the course catalog, and where the
    figure comes from: the vendor's (``"cited"``) or, where the vendor publishes none (A10G),
    the catalog's clearly marked third-party figure (``"third-party"``)."""
    entry = accelerator(name)
    if entry.get("memory_bandwidth_GBps"):
        return float(entry["memory_bandwidth_GBps"]), "cited"
    unofficial = entry.get("unofficial", {}).get("memory_bandwidth_GBps")
    if unofficial:
        return float(unofficial), "third-party"
    raise ValueError(f"the catalog has no memory bandwidth for {name}")
