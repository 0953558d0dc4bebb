import pytest

from labkit.planning import catalog, sharing


@pytest.mark.parametrize("gpu", list(sharing.MIG_PROFILES))
def test_mig_profiles_match_the_gpu_memory_and_the_seven_slice_limit(gpu):
    total = catalog.gpu_memory_gb(gpu)
    profiles = sharing.mig_profiles(gpu)
    assert max(p.max_instances for p in profiles) == catalog.accelerator(gpu)["mig_max_instances"] == 7
    for p in profiles:
        # the name's GB is NVIDIA's rounding of (memory eighths / 8) x the GPU's memory
        assert abs(p.memory_gb - p.memory_eighths / 8 * total) <= 1.0, p
        assert p.max_instances * p.compute_sevenths <= 7 and p.max_instances * p.memory_eighths <= 8
        assert p.resource == f"nvidia.com/mig-{p.name}"
    assert profiles[-1].memory_eighths == 8 and profiles[-1].compute_sevenths == 7


def test_no_mig_on_l4():
    with pytest.raises(ValueError, match="time-slicing"):
        sharing.mig_profiles("L4")


def test_smallest_profile_prefers_fewer_sms_on_a_tie():
    assert sharing.smallest_mig_profile(9.0, "H100").name == "1g.10gb"
    assert sharing.smallest_mig_profile(15.0, "H100").name == "1g.20gb"   # not 2g.20gb
    assert sharing.smallest_mig_profile(25.0, "H100").name == "3g.40gb"
    assert sharing.smallest_mig_profile(90.0, "H100") is None


def test_copies_per_gpu():
    assert sharing.copies_per_gpu(15, "H100", 80, "mig") == 4        # 1g.20gb x 4
    assert sharing.copies_per_gpu(15, "H100", 80, "time-slicing") == 5
    assert sharing.copies_per_gpu(15, "H100", 80, "mps") == 5
    assert sharing.copies_per_gpu(90, "H100", 80, "mig") == 0
    with pytest.raises(ValueError, match="sharing scheme"):
        sharing.copies_per_gpu(15, "H100", 80, "vgpu")
    with pytest.raises(ValueError, match="need_gb"):
        sharing.copies_per_gpu(0, "H100", 80, "mig")


EVENTS = [("a", 18), ("b", 18), ("c", 18), ("d", 18), ("a", 8), ("b", 2)]   # a grows first


def test_time_slicing_fails_the_tenant_that_finds_the_pool_full():
    res = sharing.simulate_allocations(EVENTS, 80, "time-slicing")
    assert [r["ok"] for r in res] == [True] * 5 + [False]      # a grew; b pays
    assert res[-1]["tenant"] == "b" and res[-1]["used_gb"] == 18


@pytest.mark.parametrize("scheme", ["mps", "mig"])
def test_a_cap_or_a_slice_fails_the_tenant_that_grew(scheme):
    res = sharing.simulate_allocations(EVENTS, 80, scheme, limit_gb=20)
    assert [r["ok"] for r in res] == [True] * 4 + [False, True]
    assert res[4]["tenant"] == "a"


def test_a_cap_is_required():
    with pytest.raises(ValueError, match="limit_gb"):
        sharing.simulate_allocations(EVENTS, 80, "mig")


def test_one_small_kernel_all_the_time_is_full_util_and_little_sm_activity():
    kernels = [(i * 0.001, 0.001, 4) for i in range(1000)]        # back to back, 4 SMs each
    c = sharing.busy_vs_sm_active(kernels, n_sms=132, window_s=1.0)
    assert c["gpu_util"] == pytest.approx(1.0)
    assert c["sm_active"] == pytest.approx(4 / 132)


def test_overlapping_kernels_add_sms_up_to_the_total():
    c = sharing.busy_vs_sm_active([(0, 0.5, 100), (0, 0.5, 100)], n_sms=132, window_s=1.0)
    assert c["gpu_util"] == pytest.approx(0.5)
    assert c["sm_active"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match=">= 0"):
        sharing.busy_vs_sm_active([(0, -1, 1)], n_sms=132, window_s=1.0)
