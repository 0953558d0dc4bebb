import pytest
import torch

from labkit import hardware

KEYS = {"cpu_model", "cpu_flags", "logical_cores", "usable_cores", "llc_MiB", "memory_total_GiB",
        "memory_available_GiB", "disk_free_GiB", "disk_path", "os", "python", "torch",
        "torch_threads", "cuda_available", "cuda_device", "device"}


def test_machine_facts_has_every_key():
    facts = hardware.machine_facts()
    assert set(facts) == KEYS
    assert facts["usable_cores"] >= 1 and facts["memory_total_GiB"] > 0
    assert facts["torch"] == torch.__version__
    assert "usable cores" in hardware.describe_machine(facts)


def test_pick_device(monkeypatch):
    monkeypatch.delenv("LABKIT_DEVICE", raising=False)
    assert hardware.pick_device() == ("cuda" if torch.cuda.is_available() else "cpu")
    assert hardware.pick_device("cpu") == "cpu"
    monkeypatch.setenv("LABKIT_DEVICE", "cpu")
    assert hardware.pick_device() == "cpu"
    with pytest.raises(ValueError, match="use 'cpu', 'cuda' or 'auto'"):
        hardware.pick_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA"):
            hardware.pick_device("cuda")


def test_memory_bandwidth_smoke():
    """Smoke check: it runs and returns GB/s, not B/s or TB/s. The range cannot judge the
    machine; the unit and the thread handling are what this test can catch."""
    torch_threads = __import__("torch").get_num_threads()
    gbps = hardware.measure_memory_bandwidth(size_mib=64, repeats=3, threads=1)
    assert 0.5 < gbps < 20_000
    assert __import__("torch").get_num_threads() == torch_threads    # restored
    with pytest.raises(ValueError, match="size_mib"):
        hardware.measure_memory_bandwidth(size_mib=1)
    with pytest.raises(ValueError, match="threads"):
        hardware.measure_memory_bandwidth(size_mib=64, threads=0)


def test_cache_sizes_and_probe_size(monkeypatch):
    sizes = hardware.cache_sizes()
    assert all(isinstance(level, int) and size > 0 for level, size in sizes.items())
    llc = hardware.last_level_cache_bytes()
    assert llc == (sizes[max(sizes)] if sizes else None)
    facts = hardware.machine_facts()
    assert facts["llc_MiB"] == (None if llc is None else round(llc / 2**20, 1))
    monkeypatch.setattr(hardware, "last_level_cache_bytes", lambda: None)
    assert hardware.probe_size_mib(256, arrays=2) == 256
    monkeypatch.setattr(hardware, "last_level_cache_bytes", lambda: 480 * 2**20)
    assert hardware.probe_size_mib(256, arrays=2) == 960     # 2 arrays = 4 x 480 MiB


@pytest.mark.parametrize("dtype", ["fp32", "bf16", "int8"])
def test_matmul_flops_smoke(dtype):
    # smoke check: a positive rate in GFLOP/s; it cannot tell a fast machine from a slow one
    assert 0.01 < hardware.measure_matmul_flops(dtype, n=128, repeats=2) < 5e6


def test_matmul_flops_rejects_unsupported():
    with pytest.raises(ValueError, match="int4"):
        hardware.measure_matmul_flops("int4")
    with pytest.raises(ValueError, match="n must be"):
        hardware.measure_matmul_flops("fp32", n=4)
    with pytest.raises(ValueError, match="threads"):
        hardware.measure_matmul_flops("fp32", n=64, threads=0)


def test_matmul_flops_threads_are_restored():
    import torch

    before = torch.get_num_threads()
    assert hardware.measure_matmul_flops("fp32", n=64, repeats=1, threads=1) > 0
    assert torch.get_num_threads() == before


def test_tools():
    assert hardware.tool_path("sh")
    assert hardware.tool_path("definitely-not-a-tool-xyz") is None
    assert hardware.python_ok((3, 0)) and not hardware.python_ok((99, 0))
