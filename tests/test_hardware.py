import pytest
import torch

from labkit.machine import facts as hw, probes, tools

KEYS = {"cpu_model", "cpu_flags", "logical_cores", "usable_cores", "llc_MiB", "memory_total_GiB",
        "memory_available_GiB", "disk_free_GiB", "disk_path", "os", "python", "torch",
        "torch_threads", "cuda_available", "cuda_device", "device"}


def test_machine_facts_has_every_key():
    facts = hw.machine_facts()
    assert set(facts) == KEYS
    assert facts["usable_cores"] >= 1 and facts["memory_total_GiB"] > 0
    assert facts["torch"] == torch.__version__
    assert "usable cores" in hw.describe_machine(facts)


def test_pick_device(monkeypatch):
    monkeypatch.delenv("LABKIT_DEVICE", raising=False)
    assert hw.pick_device() == ("cuda" if torch.cuda.is_available() else "cpu")
    assert hw.pick_device("cpu") == "cpu"
    monkeypatch.setenv("LABKIT_DEVICE", "cpu")
    assert hw.pick_device() == "cpu"
    with pytest.raises(ValueError, match="use 'cpu', 'cuda' or 'auto'"):
        hw.pick_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA"):
            hw.pick_device("cuda")


def test_memory_bandwidth_smoke():
    """Smoke check: it runs and returns GB/s, not B/s or TB/s. The range cannot judge the
    machine; the unit and the thread handling are what this test can catch."""
    torch_threads = __import__("torch").get_num_threads()
    gbps = probes.stream_copy_GBps(size_mib=64, repeats=3, threads=1)
    assert 0.5 < gbps < 20_000
    assert __import__("torch").get_num_threads() == torch_threads    # restored
    with pytest.raises(ValueError, match="size_mib"):
        probes.stream_copy_GBps(size_mib=1)
    with pytest.raises(ValueError, match="threads"):
        probes.stream_copy_GBps(size_mib=64, threads=0)


def test_cache_sizes_and_probe_size(monkeypatch):
    sizes = hw.cache_sizes()
    assert all(isinstance(level, int) and size > 0 for level, size in sizes.items())
    llc = hw.last_level_cache_bytes()
    assert llc == (sizes[max(sizes)] if sizes else None)
    facts = hw.machine_facts()
    assert facts["llc_MiB"] == (None if llc is None else round(llc / 2**20, 1))
    monkeypatch.setattr(probes, "last_level_cache_bytes", lambda: None)
    assert probes.probe_size_mib(256, arrays=2) == 256
    monkeypatch.setattr(probes, "last_level_cache_bytes", lambda: 480 * 2**20)
    assert probes.probe_size_mib(256, arrays=2) == 960     # 2 arrays = 4 x 480 MiB


@pytest.mark.parametrize("dtype", ["fp32", "bf16", "int8"])
def test_matmul_flops_smoke(dtype):
    # smoke check: a positive rate in GFLOP/s; it cannot tell a fast machine from a slow one
    assert 0.01 < probes.matmul_flops(dtype, n=128, repeats=2) < 5e6


def test_matmul_flops_rejects_unsupported():
    with pytest.raises(ValueError, match="int4"):
        probes.matmul_flops("int4")
    with pytest.raises(ValueError, match="n must be"):
        probes.matmul_flops("fp32", n=4)
    with pytest.raises(ValueError, match="threads"):
        probes.matmul_flops("fp32", n=64, threads=0)


def test_matmul_flops_threads_are_restored():
    import torch

    before = torch.get_num_threads()
    assert probes.matmul_flops("fp32", n=64, repeats=1, threads=1) > 0
    assert torch.get_num_threads() == before


def test_tools():
    assert tools.tool_path("sh")
    assert tools.tool_path("definitely-not-a-tool-xyz") is None
    assert tools.python_ok((3, 0)) and not tools.python_ok((99, 0))


def test_find_chromium_prefers_the_environment(monkeypatch):
    monkeypatch.setenv("CHROMIUM", "/opt/my-chrome")
    assert tools.find_chromium() == "/opt/my-chrome"
    monkeypatch.delenv("CHROMIUM")
    monkeypatch.setattr(tools, "tool_path", lambda name: "/usr/bin/x" if name == "google-chrome" else None)
    assert tools.find_chromium() == "/usr/bin/x"


def test_torch_threads_sets_and_restores():
    before = torch.get_num_threads()
    with hw.torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="positive integer"):
        with hw.torch_threads(0):
            pass


def test_gemv_probe_reports_its_working_set():
    out = probes.gemv_read_GBps(size_mib=64, repeats=2, threads=1)
    assert out["bytes"] >= 60 * 2**20 and out["threads"] == 1
    assert out["worst_GBps"] <= out["median_GBps"] <= out["best_GBps"]
