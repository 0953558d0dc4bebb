import pytest

from labkit.machine import timing as bench


def test_timeit_counts_calls_and_keeps_the_result():
    calls = []
    t = bench.timeit(lambda: calls.append(1) or len(calls), repeats=4, warmup=2, name="append")
    assert len(calls) == 6 and len(t.times_s) == 4 and t.result == 6
    assert t.min_s <= t.median_s <= t.max_s
    assert "append: median" in str(t)


def test_sync_is_called_for_every_call():
    synced = []
    bench.timeit(lambda: None, repeats=3, warmup=1, sync=lambda: synced.append(1))
    assert len(synced) == 4


@pytest.mark.parametrize("kwargs,match", [({"repeats": 0}, "repeats"), ({"warmup": -1}, "warmup")])
def test_timeit_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        bench.timeit(lambda: None, **kwargs)
    with pytest.raises(ValueError, match="callable"):
        bench.timeit(42)


def test_throughput_orders_best_median_worst():
    rate = bench.throughput(100, bench.timing("x", (1.0, 2.0, 4.0)))
    assert (rate.best, rate.median, rate.worst) == (100, 50, 25)
    assert rate.scaled(0.5).median == 25
    assert bench.timing("x", (2.0,)).rate(10).median == 5
    with pytest.raises(ValueError):
        bench.throughput(-1, bench.timing("x", (1.0,)))
    with pytest.raises(ValueError, match="no measurable time"):
        bench.throughput(1, bench.timing("x", (0.0,)))


def test_formatting():
    assert bench.format_seconds(0.0123) == "12.3 ms"
    assert bench.format_seconds(2) == "2 s"
    assert bench.format_seconds(5e-9) == "5 ns"
    assert bench.format_bytes(14e9) == "14 GB"
    assert bench.format_bytes(3 * 2**30, binary=True) == "3 GiB"
    with pytest.raises(ValueError):
        bench.format_bytes(-1)


def test_fit_power_law():
    k, c = bench.fit_power_law([1, 2, 4], [5, 10, 20])
    assert k == pytest.approx(1) and c == pytest.approx(5)
    with pytest.raises(ValueError, match="positive"):
        bench.fit_power_law([0, 1], [1, 2])
    with pytest.raises(ValueError, match="same length"):
        bench.fit_power_law([1, 2], [1])


def test_samples_median_min_max_percentile_and_empty():
    s = bench.Samples([4.0, 1.0, 3.0, 2.0], "MB/s")
    assert (s.median, s.min, s.max) == (2.5, 1.0, 4.0)
    assert s.percentile(0) == 1.0 and s.percentile(100) == 4.0
    assert s.percentile(50) == pytest.approx(2.5)
    assert "MB/s" in str(s) and s.as_dict()["values"] == [4.0, 1.0, 3.0, 2.0]
    empty = bench.Samples([])
    assert empty.median != empty.median and str(empty) == "n/a"


def test_percentile_matches_numpy():
    np = pytest.importorskip("numpy")
    xs = [0.3, 5.0, 1.2, 9.9, 2.2, 7.1]
    for q in (0, 10, 50, 90, 99, 100):
        assert bench.percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)))
    with pytest.raises(ValueError, match="between 0 and 100"):
        bench.percentile(xs, 101)


def test_free_port_is_bindable():
    import socket

    from labkit.machine.net import free_port

    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_tensor_bytes_dedupes_shared_storage_unless_asked_not_to():
    torch = pytest.importorskip("torch")
    from labkit.machine.dtypes import bytes_per_param, normalize_dtype, tensor_bytes, torch_dtype

    w = torch.zeros(4, 4)
    assert tensor_bytes({"embed": w, "head": w}) == 64
    assert tensor_bytes({"embed": w, "head": w}, dedupe=False) == 128
    assert tensor_bytes([w, w.t(), None]) == 64
    assert normalize_dtype("bfloat16") == "bf16" and bytes_per_param("int4") == 0.5
    assert torch_dtype("bf16") is torch.bfloat16
    with pytest.raises(ValueError, match="int8/int4"):
        torch_dtype("int8")
