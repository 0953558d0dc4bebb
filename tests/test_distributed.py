"""The labkit.distributed package and labkit.check.distributed, and the chapter 06 manifests.

The deprecated old path (names of the flat module) is tested in
tests/test_storage_distributed_shims.py.

Fast: the arithmetic, the shards and the checks run in milliseconds; the torch.distributed
tests fork 2 gloo ranks (well under a second each, a few seconds for the DDP comparison);
one test starts a real local Ray (about 5-30 s on 2 cores) to prove that the session shuts
Ray down when the code inside it fails, and that the process table is clean afterwards.
"""

from __future__ import annotations

import copy
import importlib.metadata
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from labkit import k8s
from labkit.check import LabCheckError
from labkit.check import distributed as check
from labkit.distributed import processes
from labkit.distributed.cli import main
from labkit.distributed.parallelism import (amdahl_parallel_fraction, efa_GBps,
                                            gradient_sync_seconds, make_shards, min_nodes,
                                            parallelism_plan, pipeline_bubble,
                                            ring_allreduce_seconds, sharded_training_bytes)
from labkit.distributed.processes import (cleanup_dead_sessions, _is_ray_process, _owner_alive,
                                          OWNER_FILE, owner_tag, ray_processes, SESSION_ENV,
                                          write_owner_file)
from labkit.distributed.ranks import (allreduce_benchmark, collectives_demo, compare_losses,
                                      ddp_train, RankError, run_ranks, train_single)
from labkit.distributed.ray_work import corpus_prompts, _noop, _remote
from labkit.distributed.session import (default_num_cpus, _MAX_TEMP_PATH, RAY_MAX_CPUS,
                                        RAY_OBJECT_STORE_BYTES, ray_session, _ray_temp_dir,
                                        RaySession, shutdown_all)
from labkit.planning import catalog, memory

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = {kind: ROOT / "book" / "manifests" / f"06-{kind}.yaml"
             for kind in ("raycluster", "rayjob", "pytorchjob", "jobset")}


# -- shards, prompts, Amdahl -----------------------------------------------------------------
@pytest.mark.parametrize("n,k", [(7, 3), (16, 4), (5, 5), (10, 1), (17, 4)])
def test_make_shards_is_balanced_ordered_and_complete(n, k):
    shards = make_shards(list(range(n)), k)
    assert len(shards) == k
    assert [x for s in shards for x in s] == list(range(n))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_make_shards_rejects_impossible_requests():
    with pytest.raises(ValueError, match="non-empty"):
        make_shards([1, 2], 3)
    with pytest.raises(ValueError, match="positive"):
        make_shards([1, 2], 0)


def test_corpus_prompts_are_deterministic_and_cycle():
    a, b = corpus_prompts(500, words=5), corpus_prompts(500, words=5)
    assert a == b and len(a) == 500
    assert all(len(p.split()) == 5 for p in a)
    assert len(set(a)) < 500          # more prompts than corpus lines: they repeat


def test_amdahl_fraction():
    assert amdahl_parallel_fraction(2.0, 2) == pytest.approx(1.0)
    assert amdahl_parallel_fraction(1.0, 2) == pytest.approx(0.0)
    assert amdahl_parallel_fraction(1.5, 2) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        amdahl_parallel_fraction(1.5, 1)


# -- memory and network arithmetic --------------------------------------------------------------
def test_zero_stages_follow_the_zero_paper():
    n, d = 7e9, 8
    full = memory.training_bytes(n)               # 16 bytes/param, mixed precision AdamW
    stages = [sharded_training_bytes(n, dp=d, zero_stage=z)["total"] for z in range(4)]
    assert stages[0] == full
    assert stages[1] == pytest.approx(n * (2 + 2 + 12 / d))
    assert stages[2] == pytest.approx(n * (2 + (2 + 12) / d))
    assert stages[3] == pytest.approx(full / d)
    assert stages == sorted(stages, reverse=True)


def test_tensor_and_pipeline_parallelism_split_everything():
    n = 70e9
    split = sharded_training_bytes(n, tp=8, pp=4)
    assert split["total"] == pytest.approx(memory.training_bytes(n) / 32)
    with pytest.raises(ValueError):
        sharded_training_bytes(n, zero_stage=4)
    with pytest.raises(ValueError):
        sharded_training_bytes(n, dp=0)


def test_parallelism_plan_uses_the_catalog():
    rows = {r["layout"]: r for r in parallelism_plan(7e9, "p4d.24xlarge", 1)}
    gpu = catalog.gpu_memory_gb("A100-40GB")
    assert all(r["gpu_GB"] == gpu and r["gpus"] == 8 for r in rows.values())
    assert not rows["data parallel (DDP)"]["fits"]      # 112 GB on a 40 GB GPU
    assert rows["ZeRO-3 / FSDP"]["fits"]                # 14 GB per GPU
    assert rows["ZeRO-3 / FSDP"]["per_gpu_GB"] == pytest.approx(14.0)


def test_min_nodes_for_70b():
    p4d = min_nodes(70e9, "p4d.24xlarge", "zero3")
    p5 = min_nodes(70e9, "p5.48xlarge", "zero3")
    assert (p4d, p5) == (5, 3)                          # 1,120 GB over 8 GPUs per node
    assert min_nodes(70e9, "p5.48xlarge", "tp-pp") == p5
    assert min_nodes(70e9, "p5.48xlarge", "ddp", max_nodes=8) is None
    assert min_nodes(70e9, "p5.48xlarge", "tp-dp", max_nodes=8) is None
    with pytest.raises(ValueError, match="zero3"):
        min_nodes(70e9, "p5.48xlarge", "ZeRO-3")


def test_efa_bandwidth_is_cited_and_ring_formula():
    assert efa_GBps("p5.48xlarge") == catalog.instance("p5.48xlarge")["network_Gbps"] / 8
    with pytest.raises(ValueError, match="EFA"):
        efa_GBps("g6.xlarge")
    assert ring_allreduce_seconds(1e9, 2, 1.0) == pytest.approx(1.0)
    assert ring_allreduce_seconds(1e9, 1, 1.0) == 0
    slow = gradient_sync_seconds(70e9, "p4d.24xlarge", 8)
    fast = gradient_sync_seconds(70e9, "p5.48xlarge", 8)
    assert slow / fast == pytest.approx(8.0)            # 3200 vs 400 Gbps


def test_pipeline_bubble():
    assert pipeline_bubble(1, 8) == 0
    assert pipeline_bubble(4, 16) == pytest.approx(3 / 19)


# -- torch.distributed on 127.0.0.1 -----------------------------------------------------------
def test_collectives_and_tensor_parallel_layers():
    ranks = run_ranks(collectives_demo, 2)
    assert [r["rank"] for r in ranks] == [0, 1]
    assert all(r["all_reduce_sum"] == 3.0 for r in ranks)
    assert all(r["all_gather"] == [0.0, 1.0] for r in ranks)
    assert all(r["column_parallel_max_error"] == 0.0 for r in ranks)
    assert all(r["row_parallel_max_error"] < 1e-3 for r in ranks)
    assert len({r["pid"] for r in ranks} | {os.getpid()}) == 3


def _fails_on_rank_1(rank, world):
    if rank == 1:
        raise RuntimeError("boom on rank 1")
    return rank


def _sleeps(rank, world):
    import time

    time.sleep(30)


def test_run_ranks_reports_a_failing_rank_and_times_out():
    with pytest.raises(RankError, match="(?s)rank1 raised first.*boom on rank 1"):
        run_ranks(_fails_on_rank_1, 2)
    with pytest.raises(TimeoutError):
        run_ranks(_sleeps, 2, timeout_s=1.0)


def test_allreduce_benchmark_rows():
    (rows, _) = run_ranks(allreduce_benchmark, 2, args=((4096, 2**20), 2))
    assert [r["bytes"] for r in rows] == [4096, 2**20]
    assert all(r["algbw_GBps"] > 0 and r["busbw_GBps"] == r["algbw_GBps"] for r in rows)


def test_ddp_matches_one_process_with_the_same_global_batch():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = train_single(steps=3, global_batch=8, seq_len=32)
    finally:
        torch.set_num_threads(before)
    ranks = run_ranks(ddp_train, 2, args=(3, 8, 32, 0, 3e-3, 2))
    assert ranks[0]["losses"] == ranks[1]["losses"]          # both report the global mean
    assert compare_losses(single["losses"], ranks[0]["losses"]) < 1e-4
    assert (single["params"] - ranks[0]["params"]).abs().max().item() < 1e-3
    assert ranks[0]["grad_bytes"] == 4 * single["n_params"]
    assert ranks[0]["local_batch"] == 4
    with pytest.raises(ValueError, match="length"):
        compare_losses([1.0], [1.0, 2.0])


# -- checks ----------------------------------------------------------------------------------------
def test_check_min_task_ms():
    check.check_min_task_ms(10.0, 1.0)
    with pytest.raises(LabCheckError, match="overhead"):
        check.check_min_task_ms(1.0, 1.0)


def test_check_make_shards_feedback():
    check.check_make_shards(make_shards)

    def unbalanced(items, n):
        size = -(-len(items) // n)
        return [items[i * size:(i + 1) * size] for i in range(n)]

    def lossy(items, n):
        size = len(items) // n
        return [items[i * size:(i + 1) * size] for i in range(n)]

    with pytest.raises(LabCheckError, match="sizes"):
        check.check_make_shards(unbalanced)
    with pytest.raises(LabCheckError, match="missing"):
        check.check_make_shards(lossy)


def test_check_parallel_fraction_and_failures():
    check.check_parallel_fraction(amdahl_parallel_fraction(1.4, 2), 1.4, 2)
    with pytest.raises(LabCheckError, match="Solve"):
        check.check_parallel_fraction(0.4, 1.4, 2)
    check.check_permanent_failure(0.2 ** 4, 0.2, 3)
    with pytest.raises(LabCheckError, match="first attempt"):
        check.check_permanent_failure(0.2 ** 3, 0.2, 3)


def test_check_actor_options_explains_each_missing_option():
    check.check_actor_options({"max_restarts": 1, "max_task_retries": 1})
    with pytest.raises(LabCheckError, match="ActorDiedError"):
        check.check_actor_options({"max_task_retries": 1})
    with pytest.raises(LabCheckError, match="ActorUnavailableError"):
        check.check_actor_options({"max_restarts": 1})
    with pytest.raises(LabCheckError, match="only"):
        check.check_actor_options({"max_restarts": 1, "max_task_retries": 1, "num_cpus": 1})
    good = {"failed": 0, "errors": [], "completed": 4, "pids": [1, 2], "killed_pid": 1,
            "recovery_s": 2.0, "options": {}}
    check.check_actor_survived(good, 4)
    with pytest.raises(LabCheckError, match="failed"):
        check.check_actor_survived({**good, "failed": 2, "errors": ["ActorDiedError"]}, 4)


# -- manifests -------------------------------------------------------------------------------
def _doc(kind):
    (doc,) = k8s.load_manifests(MANIFESTS[kind])
    return doc


def _pod_templates(kind, doc):
    spec = doc["spec"]
    if kind == "raycluster":
        cluster = spec
    elif kind == "rayjob":
        cluster = spec["rayClusterSpec"]
    if kind in ("raycluster", "rayjob"):
        yield cluster["headGroupSpec"]["template"]
        for group in cluster["workerGroupSpecs"]:
            yield group["template"]
    elif kind == "pytorchjob":
        for replica in spec["pytorchReplicaSpecs"].values():
            yield replica["template"]
    else:
        for job in spec["replicatedJobs"]:
            yield job["template"]["spec"]["template"]


@pytest.mark.parametrize("kind", sorted(MANIFESTS))
def test_manifest_validates_and_its_pod_templates_are_strict_kubernetes(kind):
    import kubernetes_validate

    assert k8s.validate_file(MANIFESTS[kind]) == [f"{_doc(kind)['kind']}/"
                                                  f"{_doc(kind)['metadata']['name']}"]
    for template in _pod_templates(kind, _doc(kind)):
        pod_template = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"},
                        "template": template}
        kubernetes_validate.validate(pod_template, k8s.K8S_VERSION, strict=True)
    if kind == "jobset":
        for job in _doc(kind)["spec"]["replicatedJobs"]:
            as_job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "t"},
                      "spec": job["template"]["spec"]}
            kubernetes_validate.validate(as_job, k8s.K8S_VERSION, strict=True)


def test_chapter_03_pytorchjob_pod_templates_are_strict_kubernetes():
    import kubernetes_validate

    path = ROOT / "book" / "manifests" / "03-pytorchjob.yaml"
    (doc,) = k8s.load_manifests(path)
    assert k8s.validate_file(path) == [f"PyTorchJob/{doc['metadata']['name']}"]
    for template in _pod_templates("pytorchjob", doc):
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "PodTemplate",
                                      "metadata": {"name": "t"}, "template": template},
                                     k8s.K8S_VERSION, strict=True)


@pytest.mark.parametrize("kind,path,typo", [
    ("raycluster", ["spec", "workerGroupSpecs", 1], "maxReplica"),
    ("rayjob", ["spec"], "shutdownAfterJobFinish"),
    ("pytorchjob", ["spec", "runPolicy"], "cleanPodPolicies"),
    ("jobset", ["spec", "failurePolicy"], "maxRestart"),
])
def test_schemas_reject_unknown_fields(kind, path, typo):
    doc = copy.deepcopy(_doc(kind))
    target = doc
    for key in path:
        target = target[key]
    target[typo] = 1
    with pytest.raises(ValueError, match=typo):
        k8s.validate_manifest(doc)


def test_pytorchjob_webhook_rules():
    doc = copy.deepcopy(_doc("pytorchjob"))
    doc["spec"]["pytorchReplicaSpecs"]["Master"] = {
        **doc["spec"]["pytorchReplicaSpecs"]["Worker"], "replicas": 2}
    with pytest.raises(ValueError, match="Master"):
        k8s.validate_manifest(doc)
    doc = copy.deepcopy(_doc("pytorchjob"))
    doc["spec"]["pytorchReplicaSpecs"]["Chief"] = doc["spec"]["pytorchReplicaSpecs"]["Worker"]
    with pytest.raises(ValueError, match="Chief"):
        k8s.validate_manifest(doc)


@pytest.mark.parametrize("kind", ["raycluster", "rayjob"])
def test_ray_worker_groups_are_bounded_and_gpu_groups_tolerate_the_taint(kind):
    doc = _doc(kind)
    cluster = doc["spec"] if kind == "raycluster" else doc["spec"]["rayClusterSpec"]
    assert cluster["rayVersion"] == importlib.metadata.version("ray")   # the pinned Ray
    for group in cluster["workerGroupSpecs"]:
        assert 0 <= group["minReplicas"] <= group.get("replicas", 0) <= group["maxReplicas"]
        pod = group["template"]["spec"]
        limits = pod["containers"][0]["resources"]["limits"]
        if "nvidia.com/gpu" in limits:
            assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} \
                in pod["tolerations"]
            family = pod["nodeSelector"]["karpenter.k8s.aws/instance-family"]
            node = catalog.instance(f"{family}.xlarge")
            requests = pod["containers"][0]["resources"]["requests"]
            assert k8s.parse_quantity(requests["memory"]) < node["memory_GiB"] * 2**30
            assert float(requests["cpu"]) < node["vcpus"]


def test_rayjob_runs_the_labs_script():
    entry = _doc("rayjob")["spec"]["entrypoint"].split()
    assert entry[:4] == ["python", "-m", "labkit.distributed", "batch-inference"]
    with pytest.raises(SystemExit) as exit_:      # the CLI accepts the entrypoint's options
        main(entry[3:] + ["--help"])
    assert exit_.value.code == 0


def test_rayjob_asks_for_more_gpu_actors_than_it_starts_with():
    """The autoscaling the manifest describes happens only if actors wait for a GPU."""
    spec = _doc("rayjob")["spec"]
    entry = spec["entrypoint"].split()
    workers = int(entry[entry.index("--workers") + 1])
    gpus_each = float(entry[entry.index("--gpus-per-worker") + 1])
    (group,) = [g for g in spec["rayClusterSpec"]["workerGroupSpecs"]
                if "nvidia.com/gpu" in g["template"]["spec"]["containers"][0]["resources"]
                ["limits"]]
    gpus_per_pod = int(group["template"]["spec"]["containers"][0]["resources"]["limits"]
                       ["nvidia.com/gpu"])
    assert group["replicas"] * gpus_per_pod < workers * gpus_each      # some actors wait
    assert workers * gpus_each <= group["maxReplicas"] * gpus_per_pod   # and can all run


def test_pytorchjob_uses_an_elastic_rendezvous_that_can_re_form():
    spec = _doc("pytorchjob")["spec"]
    elastic = spec["elasticPolicy"]
    assert elastic["rdzvBackend"] == "c10d" and elastic["maxRestarts"] >= 1
    (worker,) = spec["pytorchReplicaSpecs"].values()          # workers only: no static master
    assert elastic["minReplicas"] == elastic["maxReplicas"] == worker["replicas"]
    container = worker["template"]["spec"]["containers"][0]
    assert "--master-addr" not in " ".join(container["command"])  # torchrun reads PET_*
    assert {"name": "pytorchjob-port", "containerPort": 23456} in container["ports"]


@pytest.mark.parametrize("kind", ["pytorchjob", "jobset"])
def test_training_jobs_stay_off_spot_and_the_inference_pool(kind):
    for template in _pod_templates(kind, _doc(kind)):
        pod = template["spec"]
        assert pod["nodeSelector"]["karpenter.sh/capacity-type"] == "on-demand"
        assert pod["nodeSelector"]["workload"] == "training"
        env = {e["name"]: e["value"] for e in pod["containers"][0].get("env", [])}
        assert env.get("NCCL_DEBUG") == "INFO"       # the log says whether NET/OFI (EFA) is used


def test_jobset_comment_names_the_host_the_command_uses():
    text = MANIFESTS["jobset"].read_text()
    args = " ".join(_doc("jobset")["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]
                    ["spec"]["containers"][0]["args"])
    host = args.split("--master-addr=")[1].split()[0]
    assert host == "tiny-gpt-ddp-ddp-nodes-0-0.tiny-gpt-ddp" and host in text.split("apiVersion")[0]


@pytest.mark.parametrize("kind", ["pytorchjob", "jobset"])
def test_training_jobs_fit_their_nodes(kind):
    for template in _pod_templates(kind, _doc(kind)):
        pod = template["spec"]
        node = catalog.instance(pod["nodeSelector"]["node.kubernetes.io/instance-type"])
        requests = pod["containers"][0]["resources"]["requests"]
        assert int(requests["nvidia.com/gpu"]) <= node["accelerator_count"]
        assert int(requests["vpc.amazonaws.com/efa"]) <= node["efa_interfaces"]
        assert k8s.parse_quantity(requests["memory"]) < node["memory_GiB"] * 2**30
        text = " ".join(pod["containers"][0].get("command", []) +
                        pod["containers"][0].get("args", []))
        assert "torchrun" in text and "labkit.distributed ddp" in text


# -- Ray: a real local session ----------------------------------------------------------------
def test_ray_temp_dir_falls_back_to_a_short_path(monkeypatch, tmp_path):
    deep = tmp_path / ("x" * 60)
    monkeypatch.setenv("LABKIT_SCRATCH", str(deep))
    with _ray_temp_dir(0) as folder:
        assert len(str(folder)) <= _MAX_TEMP_PATH
        assert folder.exists()
    assert not folder.exists()


def test_ray_session_shuts_down_on_errors_and_leaves_no_process(monkeypatch):
    pytest.importorskip("ray")
    import ray

    callbacks = []
    shell = SimpleNamespace(events=SimpleNamespace(
        register=lambda event, fn: callbacks.append(fn),
        unregister=lambda event, fn: callbacks.remove(fn)))
    monkeypatch.setattr("IPython.get_ipython", lambda: shell)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    env_before = {k: os.environ.get(k) for k in ("RAY_AUTH_TOKEN", SESSION_ENV)}

    session = RaySession()
    with pytest.raises(ZeroDivisionError):
        with session:
            info = session.describe()
            assert info["mode"] == "local" and info["cpus"] == 2
            assert info["object_store_bytes"] == RAY_OBJECT_STORE_BYTES
            temp = Path(info["temp_dir"])
            assert temp.exists() and len(str(temp)) <= _MAX_TEMP_PATH
            assert ray.get(_remote(_noop).remote(41)) == 41
            assert session.processes(), "a running session has processes"
            with pytest.raises(RuntimeError, match="already running"):
                RaySession().start()
            assert session.close_on_cell_error(keep_running_on=(KeyError,))
            callbacks[0](SimpleNamespace(error_in_exec=KeyError("kept"),
                                         error_before_exec=None))
            assert session.active and ray.is_initialized()
            1 / 0
    assert not session.active and not ray.is_initialized()
    assert session.last_report.leftover == () and session.last_report.temp_removed
    assert not temp.exists()
    assert ray_processes(session.id) == []
    assert callbacks == []                                  # the hook was removed
    assert {k: os.environ.get(k) for k in env_before} == env_before
    assert not (Path.home() / ".ray" / "auth_token").exists() or env_before["RAY_AUTH_TOKEN"]


def test_ray_processes_are_recognised_by_their_executable_not_by_a_folder_name():
    ray_dir = "/venv/lib/python3.11/site-packages/ray"
    assert _is_ray_process("raylet", ["/x/raylet", "--raylet_socket_name=s"], ray_dir)
    assert _is_ray_process("ray::IDLE", ["ray::IDLE"], ray_dir)
    assert _is_ray_process("python", ["/venv/bin/python", "-u",
                                           f"{ray_dir}/_private/log_monitor.py"], ray_dir)
    # a course cloned under a folder called "ray": its own servers are not Ray's
    assert not _is_ray_process("python", ["/home/me/ray/course/.venv/bin/python", "-m",
                                               "labkit.serve", "--port", "8000"], ray_dir)
    assert not _is_ray_process("python", ["/usr/bin/python", "/home/me/ray/run.py"],
                                    ray_dir)
    assert not _is_ray_process("bash", ["bash", "-c", "ls /tmp/ray/"], ray_dir)


def test_owner_tags_tell_a_dead_owner_from_a_live_one():
    import subprocess
    import sys

    me = owner_tag()
    assert _owner_alive(me)
    pid, started = me.split(":")
    assert not _owner_alive(f"{pid}:{float(started) - 100:.3f}")   # pid reused
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5)"])
    tag = owner_tag(child.pid)
    assert _owner_alive(tag)
    child.wait()
    assert not _owner_alive(tag)
    assert not _owner_alive("not a tag")


_KILLED_OWNER = r"""
import pathlib, subprocess, sys, tempfile, time
from labkit.distributed.processes import write_owner_file
from labkit.distributed.session import RaySession
from labkit.machine.scratch import scratch_root

session = RaySession()
session.start()
# What a kernel killed mid-session can leave besides Ray's own processes (which may or may not
# outlive it): a process carrying the session's marks that does not die with its owner (as
# Ray's agents did in the review), and a retry-marker folder of run_flaky_tasks.
orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                          start_new_session=True)
retries = tempfile.mkdtemp(prefix="ray-retries-", dir=scratch_root())
write_owner_file(pathlib.Path(retries))
print(session.id, session.temp_dir, retries, orphan.pid, flush=True)
time.sleep(600)
"""


def test_the_next_start_cleans_up_after_a_killed_owner(monkeypatch, tmp_path):
    """A process that owns a Ray session is SIGKILLed mid-way (as a kernel killed by a time
    limit); the next RaySession start ends every process and removes every folder of that
    session, and nothing of a live session."""
    pytest.importorskip("ray")
    import signal
    import subprocess
    import sys

    import psutil

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("LABKIT_SCRATCH", str(tmp_path / "scratch"))
    (tmp_path / "scratch").mkdir()
    script = tmp_path / "owner.py"
    script.write_text(_KILLED_OWNER)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    owner = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                             env=env)
    try:
        line = owner.stdout.readline().split()
        assert len(line) == 4, f"the owner did not start its session: {line}"
        dead_id, temp, retries, orphan_pid = line[0], Path(line[1]), Path(line[2]), int(line[3])
        dead_pids = {row["pid"] for row in ray_processes(dead_id)}
        assert dead_pids, "the owner's session runs"
        assert (temp / OWNER_FILE).exists() and (retries / OWNER_FILE).exists()
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
    assert psutil.pid_exists(orphan_pid) and temp.exists() and retries.exists()  # left behind

    def running(pid):
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    with ray_session() as session:
        assert orphan_pid in session.cleaned["pids"]
        assert {str(temp), str(retries)} <= set(session.cleaned["folders"])
        assert not running(orphan_pid) and not any(running(pid) for pid in dead_pids)
        assert ray_processes(dead_id) == [] and not temp.exists() and not retries.exists()
        assert session.processes() and Path(session.temp_dir).exists()
        assert cleanup_dead_sessions() == {"pids": [], "folders": []}  # live: untouched
        assert session.processes()
    assert ray_processes(session.id) == []


def test_cleanup_touches_only_folders_marked_by_a_dead_owner(monkeypatch, tmp_path):
    import json

    monkeypatch.setenv("LABKIT_SCRATCH", str(tmp_path))
    monkeypatch.setattr(processes.tempfile, "gettempdir", lambda: str(tmp_path))
    foreign = tmp_path / "ray-someone-else"            # no owner file: not the course's
    live = tmp_path / "ray-live"
    dead = tmp_path / "ray-dead"
    other = tmp_path / "labkit-dead"                    # not a Ray folder
    for folder in (foreign, live, dead, other):
        folder.mkdir()
    write_owner_file(live, "live")
    for folder in (dead, other):
        (folder / OWNER_FILE).write_text(json.dumps({"owner": "999999999:1.000"}))
    result = cleanup_dead_sessions()
    assert result == {"pids": [], "folders": [str(dead)]}
    assert foreign.exists() and live.exists() and other.exists() and not dead.exists()


def test_default_cpus_follow_the_usable_cores(monkeypatch):
    from labkit.machine import facts

    for cores, want in [(1, 2), (2, 2), (3, 3), (16, RAY_MAX_CPUS)]:
        monkeypatch.setattr(facts, "usable_cores", lambda c=cores: c)
        assert default_num_cpus() == want
        assert RaySession().num_cpus == want
    assert RaySession(num_cpus=1).num_cpus == 1


def test_shutdown_all_without_sessions_is_a_no_op():
    assert shutdown_all() == []
