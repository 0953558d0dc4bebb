"""Tests of labkit.catalog and of the cited data file behind it (labkit/data/hardware.json)."""

from __future__ import annotations

import re

import pytest

from labkit.planning import catalog

ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _check_sources(entry: dict) -> None:
    sources = entry["sources"]
    assert isinstance(sources, list) and sources, f"{entry['name']}: no sources"
    for src in sources:
        assert src["url"].startswith("https://"), f"{entry['name']}: source is not https: {src}"
        assert src["title"].strip(), f"{entry['name']}: source without a title"
        assert ISO_DATE.match(src["retrieved"]), f"{entry['name']}: bad retrieved date {src}"
        for field in src.get("fields", []):
            assert field in entry, f"{entry['name']}: source cites unknown field {field!r}"


@pytest.mark.parametrize("name", catalog.accelerators())
def test_accelerator_entries_are_complete_and_cited(name):
    acc = catalog.accelerator(name)
    for key in catalog.ACCELERATOR_KEYS:
        assert key in acc, f"{name}: missing {key}"
    assert acc["memory_GB"] > 0
    for key in ("memory_bandwidth_GBps", "bf16_dense_TFLOPS", "fp8_dense_TFLOPS"):
        assert acc[key] is None or acc[key] > 0, f"{name}: {key}={acc[key]!r}"
    _check_sources(acc)


@pytest.mark.parametrize("name", catalog.instances())
def test_instance_entries_are_complete_and_cited(name):
    inst = catalog.instance(name)
    for key in catalog.INSTANCE_KEYS:
        assert key in inst, f"{name}: missing {key}"
    assert inst["accelerator"] in catalog.accelerators(), f"{name}: unknown accelerator"
    assert isinstance(inst["efa"], bool)
    assert inst["vcpus"] > 0 and inst["memory_GiB"] > 0 and inst["accelerator_count"] > 0
    assert inst["network_Gbps"] is None or inst["network_Gbps"] > 0
    if inst["network_Gbps"] is None:
        assert inst["network_up_to"], f"{name}: no baseline and no 'up to' figure"
    _check_sources(inst)


@pytest.mark.parametrize("name", catalog.instances())
def test_total_accelerator_memory_is_count_times_per_device(name):
    inst = catalog.instance(name)
    per_device = catalog.gpu_memory_gb(inst["accelerator"])
    assert inst["accelerator_memory_GB_total"] == pytest.approx(inst["accelerator_count"] * per_device)


def test_every_listed_instance_type_is_present():
    expected = {"p5.48xlarge", "p5e.48xlarge", "p4d.24xlarge", "p4de.24xlarge", "p3.2xlarge",
                "p3dn.24xlarge", "g5.xlarge", "g5.12xlarge", "g5.48xlarge", "g6.xlarge",
                "g6.12xlarge", "g6e.xlarge", "g6e.12xlarge", "inf2.xlarge", "inf2.48xlarge",
                "trn1.32xlarge", "trn2.48xlarge", "p6-b200.48xlarge", "p6-b300.48xlarge",
                "g7e.2xlarge", "g7e.48xlarge"}
    assert expected <= set(catalog.instances())


@pytest.mark.parametrize("instance_type, accelerator, count, per_device_gb", [
    ("p4d.24xlarge", "A100-40GB", 8, 40),     # the draft's "p4d: A100 40/80 GB" is wrong ...
    ("p4de.24xlarge", "A100-80GB", 8, 80),    # ... the 80 GB A100s are p4de
    ("p3dn.24xlarge", "V100-32GB", 8, 32),    # 32 GB V100s are only in p3dn
    ("p3.2xlarge", "V100-16GB", 1, 16),
    ("g5.xlarge", "A10G", 1, 24),
    ("p5.48xlarge", "H100", 8, 80),
    ("p5e.48xlarge", "H200", 8, 141),
    ("g6.xlarge", "L4", 1, 24),
    ("g6e.xlarge", "L40S", 1, 48),
    ("inf2.48xlarge", "Inferentia2", 12, 32),
    ("trn1.32xlarge", "Trainium", 16, 32),
    ("trn2.48xlarge", "Trainium2", 16, 96),
    ("p6-b200.48xlarge", "B200", 8, 180),     # Blackwell, sold by AWS at the course date
    ("p6-b300.48xlarge", "B300", 8, 270),
    ("g7e.2xlarge", "RTX PRO 6000", 1, 96),
])
def test_published_reference_points(instance_type, accelerator, count, per_device_gb):
    inst = catalog.instance(instance_type)
    assert inst["accelerator"] == accelerator
    assert inst["accelerator_count"] == count
    assert catalog.gpu_memory_gb(instance_type) == per_device_gb
    assert catalog.gpu_memory_gb(accelerator) == per_device_gb


def test_precision_support_matches_the_architecture():
    # FP8 tensor cores arrived with Hopper/Ada; BF16 with Ampere.
    for name in ("A100-40GB", "A100-80GB", "A10G", "T4", "V100-16GB", "V100-32GB"):
        assert catalog.accelerator(name)["fp8_dense_TFLOPS"] is None, name
    for name in ("T4", "V100-16GB", "V100-32GB"):
        assert catalog.accelerator(name)["bf16_dense_TFLOPS"] is None, name
    h100 = catalog.accelerator("H100")
    assert h100["fp8_dense_TFLOPS"] == pytest.approx(2 * h100["bf16_dense_TFLOPS"], rel=0.01)
    # dense figures are half of NVIDIA's "with sparsity" figures
    assert h100["bf16_dense_TFLOPS"] == pytest.approx(h100["published_sparse_TFLOPS"]["bf16"] / 2)


def test_fp8_doubles_the_peak_only_where_the_vendor_says_so():
    # Hopper, Ada, Blackwell and Trainium2: fp8 dense = 2 x bf16 dense. Trainium and Inferentia2
    # run cFP8 at the bf16 rate (190 TFLOPS for both): fp8 saves bytes there, not time.
    for name in ("H100", "H200", "L4", "L40S", "B200", "B300", "Trainium2"):
        acc = catalog.accelerator(name)
        assert acc["fp8_dense_TFLOPS"] == pytest.approx(2 * acc["bf16_dense_TFLOPS"], rel=0.03), name
    for name in ("Trainium", "Inferentia2"):
        acc = catalog.accelerator(name)
        assert acc["fp8_dense_TFLOPS"] == acc["bf16_dense_TFLOPS"] == 190, name


def test_mig_support_is_recorded_for_every_nvidia_gpu():
    for name in catalog.accelerators():
        acc = catalog.accelerator(name)
        if acc["vendor"] != "NVIDIA":
            assert "mig_max_instances" not in acc, name
            continue
        assert isinstance(acc["mig_max_instances"], int), name
        assert any("mig_max_instances" in s.get("fields", []) for s in acc["sources"]), name
    mig = {n: catalog.accelerator(n).get("mig_max_instances") for n in catalog.accelerators()}
    assert all(mig[n] == 7 for n in ("A100-40GB", "A100-80GB", "H100", "H200", "B200", "B300"))
    assert mig["RTX PRO 6000"] == 4
    assert all(mig[n] == 0 for n in ("T4", "A10G", "L4", "L40S", "V100-16GB", "V100-32GB"))


def test_unqualified_vendor_tflops_are_not_stored_as_dense():
    rtx = catalog.accelerator("RTX PRO 6000")    # NVIDIA does not say dense or sparse
    assert rtx["bf16_dense_TFLOPS"] is None and rtx["fp8_dense_TFLOPS"] is None
    assert rtx["published_unqualified_TFLOPS"]["bf16"] == 1000
    assert rtx["memory_bandwidth_GBps"] == 1597


def test_blackwell_prices_are_cited_with_their_own_date():
    from labkit.planning import capacity
    for name in ("p6-b200.48xlarge", "p6-b300.48xlarge", "g7e.2xlarge", "g7e.48xlarge"):
        price = capacity.on_demand_price(name)
        assert price["price_date"] == "2026-07-20", name
        assert "1d927085dd81a9df9301e613f371dac5b4d16bfe" in price["sources"][0]["url"], name


def test_efa_flags():
    for name in ("p5.48xlarge", "p5e.48xlarge", "p4d.24xlarge", "trn1.32xlarge", "trn2.48xlarge",
                 "p6-b200.48xlarge", "p6-b300.48xlarge", "g7e.48xlarge"):
        assert catalog.instance(name)["efa"] is True, name
    for name in ("g5.xlarge", "g6.xlarge", "inf2.xlarge", "inf2.48xlarge", "p3.2xlarge",
                 "g7e.2xlarge"):
        assert catalog.instance(name)["efa"] is False, name


def test_lookup_is_case_and_separator_insensitive():
    assert catalog.accelerator("a100 80gb")["name"] == "A100-80GB"
    assert catalog.accelerator("h100 sxm")["name"] == "H100"
    assert catalog.instance("P5.48XLARGE")["name"] == "p5.48xlarge"


def test_returned_dicts_are_copies():
    catalog.accelerator("L4")["memory_GB"] = 1
    assert catalog.gpu_memory_gb("L4") == 24


@pytest.mark.parametrize("func", [catalog.accelerator, catalog.instance, catalog.gpu_memory_gb])
def test_unknown_names_raise_with_the_known_names(func):
    with pytest.raises(ValueError) as err:
        func("nonexistent-9000")
    assert "nonexistent-9000" in str(err.value)
    assert "H100" in str(err.value) or "p5.48xlarge" in str(err.value)


@pytest.mark.parametrize("bad", ["", "   ", None, 42])
def test_empty_or_non_string_names_raise(bad):
    with pytest.raises(ValueError):
        catalog.accelerator(bad)


def test_metadata_records_the_draft_corrections():
    meta = catalog.metadata()
    assert ISO_DATE.match(meta["retrieved"])
    assert "p4de" in meta["draft_corrections"]["p4d"]
    assert "p3dn" in meta["draft_corrections"]["p3"]
