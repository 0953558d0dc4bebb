"""labkit.planning.gang: gang admission against Pod-by-Pod scheduling (a simulation)."""

import numpy as np
import pytest

from labkit.planning import gang


def test_gang_finishes_more_jobs_and_holds_nothing_idle():
    for seed in range(5):
        runs = gang.compare(12, 8, 1, seed=seed)
        pods, whole = runs["pod by pod"], runs["gang"]
        assert whole.jobs_per_hour > pods.jobs_per_hour
        assert whole.idle_held_gpu_hours == 0 and whole.timeouts == 0
        assert pods.idle_held_gpu_hours > 0.1 * 12 * 24     # over a tenth of the cluster-day
        assert pods.timeouts > 0


def test_gang_runs_one_job_at_a_time_at_full_size():
    run = gang.simulate(12, 8, 1, gang=True)
    running, held = run.timeline[:, 1], run.timeline[:, 2]
    assert set(running) <= {0, 8} and not held.any()


def test_the_effect_needs_contention_a_cluster_of_16_behaves_the_same():
    runs = gang.compare(16, 8, 1, seed=3)
    pods, whole = runs["pod by pod"], runs["gang"]
    assert pods.finished == whole.finished
    assert pods.idle_held_gpu_hours == whole.idle_held_gpu_hours == 0
    assert pods.running_gpu_hours == pytest.approx(whole.running_gpu_hours)


def test_accounting_adds_up_and_is_deterministic():
    a = gang.simulate(12, 8, 1, gang=False, seed=7)
    b = gang.simulate(12, 8, 1, gang=False, seed=7)
    assert a.finished == b.finished and a.idle_held_gpu_hours == b.idle_held_gpu_hours
    assert np.array_equal(a.timeline, b.timeline)
    assert a.free_gpu_hours >= -1e-9
    total = a.running_gpu_hours + a.idle_held_gpu_hours + a.free_gpu_hours
    assert total == pytest.approx(12 * 24)
    assert (a.timeline[:, 1] + a.timeline[:, 2] <= 12).all()
    assert a.at(0.0) == (int(a.timeline[1, 1]), int(a.timeline[1, 2]))


def test_two_pods_of_four_hold_accelerators_but_cannot_deadlock_two_jobs():
    runs = gang.compare(12, 8, 4)
    assert runs["pod by pod"].idle_held_gpu_hours > 0
    assert runs["pod by pod"].finished == runs["gang"].finished


def test_durations_are_the_same_in_both_modes():
    d = gang.job_durations(2, 5, 1.0, seed=0)
    assert d.shape == (2, 5) and ((0.8 <= d) & (d <= 1.2)).all()


@pytest.mark.parametrize("kwargs,match", [
    (dict(cluster_gpus=4, job_gpus=8), "never fits"),
    (dict(job_gpus=8, pod_gpus=3), "multiple of pod_gpus"),
    (dict(cluster_gpus=0), "positive whole number"),
    (dict(timeout_h=0), "timeout_h"),
    (dict(backoff_h=-1), "backoff_h"),
])
def test_bad_input_says_what_to_do(kwargs, match):
    with pytest.raises(ValueError, match=match):
        gang.simulate(gang=False, **kwargs)
