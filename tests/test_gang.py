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


# -- the manifests of gang admission: Kueue queues (chapter 06), LeaderWorkerSet (chapter 09) --
from pathlib import Path

import yaml

from labkit import k8s

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book" / "manifests"
QUEUED = ["06-pytorchjob.yaml", "06-jobset.yaml", "06-kueue-rayjob.yaml"]


def _docs(name):
    return k8s.load_manifests(BOOK / name)


def _pod_sets(doc):
    """(replicas, Pod spec) of every Pod set of a RayJob, PyTorchJob or JobSet."""
    spec = doc["spec"]
    if doc["kind"] == "RayJob":
        cluster = spec["rayClusterSpec"]
        yield 1, cluster["headGroupSpec"]["template"]["spec"]
        for group in cluster["workerGroupSpecs"]:
            yield group["replicas"], group["template"]["spec"]
    elif doc["kind"] == "PyTorchJob":
        for replica in spec["pytorchReplicaSpecs"].values():
            yield replica["replicas"], replica["template"]["spec"]
    else:
        for job in spec["replicatedJobs"]:
            yield job["replicas"] * job["template"]["spec"]["parallelism"], \
                job["template"]["spec"]["template"]["spec"]


def _request_totals(doc):
    totals = {}
    for replicas, pod in _pod_sets(doc):
        for container in pod["containers"]:
            for name, value in container["resources"]["requests"].items():
                totals[name] = totals.get(name, 0) + replicas * k8s.parse_quantity(value)
    return totals


def _queues():
    docs = _docs("06-kueue-queues.yaml")
    by_kind = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    return by_kind


def _quota(cluster_queue):
    (group,) = cluster_queue["spec"]["resourceGroups"]
    (flavor,) = group["flavors"]
    return group["coveredResources"], {r["name"]: r for r in flavor["resources"]}


def test_every_queued_job_names_a_local_queue_and_fits_one_team_quota():
    queues = _queues()
    local_names = {q["metadata"]["name"] for q in queues["LocalQueue"]}
    for name in QUEUED:
        (doc,) = _docs(name)
        assert doc["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] in local_names, name
        totals = _request_totals(doc)
        for cq in queues["ClusterQueue"]:
            covered, quota = _quota(cq)
            assert set(totals) <= set(covered), (name, set(totals) - set(covered))
            for resource, amount in totals.items():
                assert amount <= k8s.parse_quantity(quota[resource]["nominalQuota"]), (name, resource)


def test_cohort_quota_never_exceeds_what_the_node_pool_may_launch():
    queues = _queues()
    (flavor,) = queues["ResourceFlavor"]
    pools = {d["metadata"]["name"]: d for d in _docs("08-nodepools.yaml") if d["kind"] == "NodePool"}
    pool = pools[flavor["spec"]["nodeLabels"]["karpenter.sh/nodepool"]]
    node = flavor["spec"]["nodeLabels"]["node.kubernetes.io/instance-type"]
    assert node in pool["spec"]["template"]["spec"]["requirements"][0]["values"]
    cohorts = {cq["spec"]["cohortName"] for cq in queues["ClusterQueue"]}
    assert len(cohorts) == 1
    gpus = sum(k8s.parse_quantity(_quota(cq)[1]["nvidia.com/gpu"]["nominalQuota"])
               for cq in queues["ClusterQueue"])
    assert gpus <= k8s.parse_quantity(pool["spec"]["limits"]["nvidia.com/gpu"])
    taints = {(t["key"], t.get("value")) for t in pool["spec"]["template"]["spec"]["taints"]}
    tolerated = {(t["key"], t.get("value")) for t in flavor["spec"]["tolerations"]}
    assert taints <= tolerated


def test_kueue_configuration_switches_on_what_the_manifests_need():
    (config_map,) = _docs("06-kueue-config.yaml")
    config = yaml.safe_load(config_map["data"]["controller_manager_config.yaml"])
    assert config["apiVersion"] == "config.kueue.x-k8s.io/v1beta2"
    frameworks = set(config["integrations"]["frameworks"])
    assert {"kubeflow.org/pytorchjob", "ray.io/rayjob", "jobset.x-k8s.io/jobset",
            "leaderworkerset.x-k8s.io/leaderworkerset"} <= frameworks
    assert config["fairSharing"]["preemptionStrategies"]
    assert config["waitForPodsReady"]["timeout"] == "10m"


def test_leaderworkerset_pod_templates_are_strict_kubernetes():
    import kubernetes_validate

    (lws, service) = _docs("09-leaderworkerset-vllm.yaml")
    template = lws["spec"]["leaderWorkerTemplate"]
    for key in ("leaderTemplate", "workerTemplate"):
        wrapper = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"},
                   "template": template[key]}
        for version in k8s.checked_versions():
            kubernetes_validate.validate(wrapper, version, strict=True)
    leader_labels = template["leaderTemplate"]["metadata"]["labels"]
    assert service["spec"]["selector"] == {"leaderworkerset.sigs.k8s.io/name": lws["metadata"]["name"],
                                           **leader_labels}
