"""Checks for Lab 7 (routing LLM traffic): specific feedback on each task.

Follows :mod:`labkit.check`: a check prints a success line (and returns it) when the answer is
right, and raises :class:`labkit.check.LabCheckError` saying what to look at when it is not.
References are recomputed from the learner's own measurements (a
:class:`~labkit.serving.loadgen.LoadResult` pair, or the dict
:func:`labkit.serving.routebench.bench_route` returns), so the checks hold on any machine; only
arithmetic, directions and the reading of a manifest are checked.

A ``bench_route`` result has one entry per policy (``round_robin``, ``least_outstanding``,
``prefix_aware``), each with ``ttft_p50_ms``, ``ttft_p95_ms``, ``req_per_s`` and
``prefix_hit_rate`` (a fraction).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from labkit.check import (LabCheckError, as_number, is_close, off_by, passed,
                          ratio_or_upside_down)

__all__ = ["POLICIES", "check_prefix_cache_ratio", "check_prefix_vs_round_robin",
           "check_miss_ratio", "check_least_outstanding_ratio", "check_when_least_outstanding",
           "check_replicas", "check_pool_reading", "LEAST_OUTSTANDING_CHOICES"]

#: the three routing policies of ``bench_route``, in the order of its result
POLICIES = ("round_robin", "least_outstanding", "prefix_aware")


def _row(result: Mapping, policy: str) -> Mapping:
    """One policy's entry of a ``bench_route`` result, or a clear error."""
    if not isinstance(result, Mapping) or policy not in result:
        raise LabCheckError(f"expected the dict bench_route returned, with a {policy!r} entry; "
                            f"run the bench_route cell first (got {type(result).__name__}).")
    return result[policy]


def _ttft(run, stat: str) -> float:
    """``ttft_mean_ms`` / ``ttft_p50_ms`` … of a LoadResult (or a dict with those keys)."""
    value = run[stat] if isinstance(run, Mapping) else getattr(run, stat)
    return float(value)


# -- Task 1: prefix caching on one server ------------------------------------------------------
def check_prefix_cache_ratio(value, cached, uncached) -> str:
    """Task 1: mean time to first token with prefix caching over without (``cached`` and
    ``uncached`` are the two streamed :class:`~labkit.serving.loadgen.LoadResult`, or dicts
    with ``ttft_mean_ms``, ``ttft_p50_ms`` and ``p50_ms``)."""
    got = as_number("cache_ratio", value)
    on, off = _ttft(cached, "ttft_mean_ms"), _ttft(uncached, "ttft_mean_ms")
    if not (on > 0 and off > 0):
        raise LabCheckError("a run has no time to first token: run both loads with "
                            "stream=True first.")
    want = on / off
    done = ratio_or_upside_down(
        got, want, f"the first token came in {got:.2f}x the time with prefix caching: the "
        f"shared prefix was prefilled once, then read from the cache.",
        "upside down: divide the mean TTFT with caching by the one without (a number below 1 "
        "means caching helped).")
    if done:
        return done
    if is_close(got, on * 1e-3 / off) or is_close(got, on / (off * 1e-3)):
        raise LabCheckError("one TTFT is in seconds and the other in milliseconds: take "
                            "ttft_mean_ms of both runs.")
    if is_close(got, off - on) or is_close(got, on - off):
        raise LabCheckError("that is a difference in milliseconds; the question asks for a "
                            "ratio (with caching / without).")
    if is_close(got, 1 - want):
        raise LabCheckError("that is the share of TTFT saved (1 - ratio); give the ratio itself, "
                            "with caching / without.")
    p50_on, p50_off = _ttft(cached, "ttft_p50_ms"), _ttft(uncached, "ttft_p50_ms")
    if p50_off and is_close(got, p50_on / p50_off) and not is_close(want, p50_on / p50_off):
        raise LabCheckError("that is the ratio of the median TTFTs; the task asks for the mean "
                            "(ttft_mean_ms).")
    lat_on, lat_off = _ttft(cached, "p50_ms"), _ttft(uncached, "p50_ms")
    if lat_off and is_close(got, lat_on / lat_off) and not is_close(want, lat_on / lat_off):
        raise LabCheckError("that is the ratio of whole-request latencies, which include the "
                            "decode steps caching does not shorten; take the time to first "
                            "token (ttft_mean_ms).")
    raise LabCheckError(f"cache_ratio = {got:.3g}, expected {want:.3g}{off_by(got, want)} = "
                        f"mean TTFT with caching ({on:.1f} ms) / without ({off:.1f} ms).")


# -- Tasks 2 and 3: ratios between policies ----------------------------------------------------
def _policy_ratio(name: str, got: float, result: Mapping, num: str, den: str,
                  stat: str = "ttft_p50_ms") -> float:
    """Check ``got`` against ``result[num][stat] / result[den][stat]``; recognise the inverse,
    the other percentile, the other rows, throughput and hit-rate ratios. Returns the ratio."""
    rows = {p: _row(result, p) for p in POLICIES}
    want = rows[num][stat] / rows[den][stat]
    if is_close(got, want):
        return want
    label = {"ttft_p50_ms": "p50", "ttft_p95_ms": "p95"}
    if is_close(got, 1 / want):
        raise LabCheckError(f"upside down: {num} over {den} (below 1 means {num} is faster).")
    other = "ttft_p95_ms" if stat == "ttft_p50_ms" else "ttft_p50_ms"
    if is_close(got, rows[num][other] / rows[den][other]):
        raise LabCheckError(f"that is the {label[other]} ratio; the task asks for "
                            f"the {label[stat]} TTFT ({stat}).")
    for a in POLICIES:
        for b in POLICIES:
            if a != b and (a, b) != (num, den) and (
                    is_close(got, rows[a][stat] / rows[b][stat])):
                if (a, b) == (den, num):
                    continue
                raise LabCheckError(f"that is {a} / {b}; the task compares {num} with {den} "
                                    f"(result[{num!r}][{stat!r}] / result[{den!r}][{stat!r}]).")
    rps = rows[num]["req_per_s"] / rows[den]["req_per_s"]
    if is_close(got, rps) or is_close(got, 1 / rps):
        raise LabCheckError("that is a ratio of throughputs (req_per_s); the task asks about "
                            f"the time to first token ({stat}).")
    hits = (rows[num]["prefix_hit_rate"], rows[den]["prefix_hit_rate"])
    if all(hits) and (is_close(got, hits[0] / hits[1]) or is_close(got, hits[1] / hits[0])):
        raise LabCheckError("that is a ratio of hit rates; the hit rates explain the answer, "
                            f"but the task asks for the ratio of {stat}.")
    raise LabCheckError(f"{name} = {got:.3g}, expected {want:.3g}{off_by(got, want)} = "
                        f"result[{num!r}][{stat!r}] ({rows[num][stat]:.1f} ms) / "
                        f"result[{den!r}][{stat!r}] ({rows[den][stat]:.1f} ms).")


def _over_round_robin(name: str, value, result: Mapping, policy: str):
    """``value`` checked as ``policy``'s p50 TTFT over round-robin's (:func:`_policy_ratio`);
    returns it as a number with the two rows of ``result``."""
    got = as_number(name, value)
    _policy_ratio(name, got, result, policy, "round_robin")
    return got, result[policy], result["round_robin"]


def check_prefix_vs_round_robin(value, result: Mapping) -> str:
    """Task 2: prefix-aware p50 TTFT over round-robin p50 TTFT, from one ``bench_route`` run."""
    got, pa, rr = _over_round_robin("prefix_vs_rr", value, result, "prefix_aware")
    return passed(f"prefix-aware routing: {got:.2f}x round-robin's median TTFT, with prefix "
                  f"hit rates of {pa['prefix_hit_rate']:.0%} against {rr['prefix_hit_rate']:.0%}.")


def check_miss_ratio(value, result: Mapping) -> str:
    """Task 2: how many times more prompt tokens round-robin had to prefill than prefix-aware
    routing: ``(1 - rr hit rate) / (1 - prefix-aware hit rate)`` (hit rates are fractions)."""
    got = as_number("miss_ratio", value)
    rr, pa = (_row(result, p)["prefix_hit_rate"] for p in ("round_robin", "prefix_aware"))
    if pa >= 1:
        raise LabCheckError("the prefix-aware hit rate is 100 %: no token was prefilled, so the "
                            "ratio is undefined; run bench_route with more tenants.")
    want = (1 - rr) / (1 - pa)
    done = ratio_or_upside_down(
        got, want, f"round-robin prefilled {got:.1f}x the prompt tokens prefix-aware routing "
        f"did: that work is what its first tokens waited for.",
        "upside down: round-robin's miss rate over prefix-aware's (it misses more, so the "
        "ratio is above 1).")
    if done:
        return done
    if rr and pa and (is_close(got, pa / rr) or is_close(got, rr / pa)):
        raise LabCheckError("that is a ratio of hit rates; the prefill work is what the cache "
                            "missed: miss rate = 1 - hit rate.")
    if is_close(got, pa - rr) or is_close(got, 100 * (pa - rr)) or is_close(got, rr - pa):
        raise LabCheckError("that is a difference of hit rates; the question asks how many "
                            "times more tokens were prefilled: (1 - rr) / (1 - pa).")
    if is_close(got, (100 - rr) / (100 - pa)) and not is_close(want, (100 - rr) / (100 - pa)):
        raise LabCheckError("the hit rates are fractions (0 to 1), not percentages: the miss "
                            "rate is 1 - hit rate.")
    raise LabCheckError(f"miss_ratio = {got:.3g}, expected {want:.3g}{off_by(got, want)} = "
                        f"(1 - {rr:.3f}) / (1 - {pa:.3f}), round-robin's miss rate over "
                        f"prefix-aware's.")


def check_least_outstanding_ratio(value, result: Mapping) -> str:
    """Task 3: least-outstanding p50 TTFT over round-robin p50 TTFT, same ``bench_route`` run."""
    got, lo, rr = _over_round_robin("lo_vs_rr", value, result, "least_outstanding")
    return passed(f"least-outstanding: {got:.2f}x round-robin's median TTFT; its prefix hit rate "
                  f"({lo['prefix_hit_rate']:.0%}) is round-robin's kind ({rr['prefix_hit_rate']:.0%}): "
                  f"it balances counts, it does not know prefixes.")


#: Task 3's question, when does least-outstanding beat round-robin? (the right one is "b")
LEAST_OUTSTANDING_CHOICES = {
    "a": "when many requests share a long prefix",
    "b": "when requests differ widely in cost (short and long answers) or replicas differ in "
         "speed, so equal counts are unequal work",
    "c": "when every request costs the same and the replicas are identical",
    "d": "never: round-robin spreads requests perfectly evenly",
}


def check_when_least_outstanding(answer) -> str:
    """Task 3: one letter of :data:`LEAST_OUTSTANDING_CHOICES`."""
    if answer is Ellipsis or answer is None or str(answer).strip() == "":
        raise LabCheckError(f"when_lo_helps is still {answer!r}: replace it with one letter, "
                            f"'a' to 'd'.")
    letter = str(answer).strip().lower().strip("()").strip()
    hints = {
        "a": "least-outstanding counts requests in flight; it never looks at a prompt, so its "
             "hit rate is round-robin's kind (see the table). Prefixes need prefix-aware routing.",
        "c": "with identical requests and replicas, round-robin already gives each replica the "
             "same work, and least-outstanding has nothing to correct: no gain (see the "
             "simulation's equal-costs row).",
        "d": "round-robin spreads requests evenly by count, not by work: a replica that drew "
             "several long answers keeps a queue while another idles.",
    }
    if letter == "b":
        return passed("least-outstanding steers around a replica that is busy with long "
                      "requests; with equal requests it behaves like round-robin.")
    if letter in hints:
        raise LabCheckError(f"({letter}): {hints[letter]}")
    raise LabCheckError(f"answer one letter, 'a' to 'd', got {answer!r}.")


# -- Task 4: sizing ----------------------------------------------------------------------------
def check_replicas(replicas_needed, per_replica_rps, *, tenants: int, rps_per_tenant: float,
                   result: Mapping, replicas: int, policy: str = "prefix_aware") -> str:
    """Task 4: replicas for ``tenants`` tenants at ``rps_per_tenant`` requests/s each, from the
    measured throughput of ``policy`` over ``replicas`` replicas: ``per_replica_rps =
    req_per_s / replicas`` and ``replicas_needed = ceil(tenants x rps_per_tenant /
    per_replica_rps)``."""
    got_per = as_number("per_replica_rps", per_replica_rps)
    got_n = as_number("replicas_needed", replicas_needed)
    pool = _row(result, policy)["req_per_s"]
    per = pool / replicas
    target = tenants * rps_per_tenant
    if not is_close(got_per, per):
        if is_close(got_per, pool):
            raise LabCheckError(f"per_replica_rps: that is the whole pool's throughput (all "
                                f"{replicas} replicas); divide by {replicas}.")
        if is_close(got_per, 1 / per):
            raise LabCheckError("per_replica_rps: that is seconds per request; give requests "
                                "per second.")
        for other in POLICIES:
            if other != policy and is_close(got_per, _row(result, other)["req_per_s"] / replicas):
                raise LabCheckError(f"per_replica_rps: that is {other}'s throughput; size with "
                                    f"the policy you will run, {policy}.")
        raise LabCheckError(f"per_replica_rps = {got_per:.3g}, expected {per:.3g}"
                            f"{off_by(got_per, per)} = result[{policy!r}]['req_per_s'] "
                            f"({pool:.2f}) / {replicas} replicas.")
    want = math.ceil(target / per - 1e-9)
    if got_n == want:
        return passed(f"{tenants} tenants x {rps_per_tenant:g} req/s = {target:g} req/s: "
                      f"{want} replicas at {per:.1f} req/s each (this machine's figure).")
    if is_close(got_n, target / per) and got_n != want:
        raise LabCheckError("a fraction of a replica is a whole replica: round up "
                            "(math.ceil).")
    if got_n == math.floor(target / per) or got_n == round(target / per):
        raise LabCheckError("rounded down: the last replica is needed even when only partly "
                            "used (math.ceil).")
    if got_n == math.ceil(target / pool - 1e-9) and replicas > 1:
        raise LabCheckError("divided by the whole pool's throughput; divide by one replica's "
                            "(per_replica_rps).")
    if got_n == math.ceil(rps_per_tenant / per - 1e-9) and tenants > 1:
        raise LabCheckError(f"that serves one tenant; the load is {tenants} tenants x "
                            f"{rps_per_tenant:g} req/s.")
    if got_n == 2 * want or 2 * got_n == want:
        raise LabCheckError(f"replicas_needed = {got_n:g}, off by 2x: ceil({target:g} req/s / "
                            f"{per:.3g} req/s per replica) = {want}.")
    raise LabCheckError(f"replicas_needed = {got_n:g}, expected {want} = ceil({tenants} x "
                        f"{rps_per_tenant:g} req/s / {per:.3g} req/s per replica).")


# -- Task 5: reading the InferencePool manifest ------------------------------------------------
def check_pool_reading(pool_port, picker_service, docs) -> str:
    """Task 5: from the InferencePool manifest's documents (``docs``: the list
    :func:`labkit.k8s.load_manifests` returns), the port the Gateway sends requests to on the
    model-server Pods, and the Service it asks which Pod should serve each request."""
    by_kind = {d["kind"]: d for d in docs}
    if "InferencePool" not in by_kind:
        raise LabCheckError("docs should be the manifest's documents (k8s.load_manifests) with "
                            "an InferencePool among them.")
    spec = by_kind["InferencePool"]["spec"]
    port = spec["targetPorts"][0]["number"]
    picker = spec["endpointPickerRef"]
    got = as_number("pool_port", pool_port)
    if got != port:
        if got == picker.get("port", {}).get("number"):
            raise LabCheckError(f"pool_port: {got:g} is the endpoint picker's port "
                                f"(endpointPickerRef.port): the Gateway asks the picker there "
                                f"where to send; the request itself goes to targetPorts.")
        if got == 80 or got == 443:
            raise LabCheckError("pool_port: a Gateway listener's or a Service's port; the "
                                "InferencePool's targetPorts say where the Pods listen.")
        raise LabCheckError(f"pool_port: {got:g} is not in this pool; read spec.targetPorts "
                            f"of the InferencePool.")
    if picker_service is Ellipsis or picker_service is None or str(picker_service).strip() == "":
        raise LabCheckError(f"picker_service is still {picker_service!r}: fill in a name "
                            f"(a string).")
    name = str(picker_service).strip()
    if name != picker["name"]:
        route = by_kind.get("HTTPRoute", {}).get("spec", {})
        gateways = {p.get("name") for p in route.get("parentRefs", [])}
        if name == by_kind["InferencePool"]["metadata"]["name"]:
            raise LabCheckError("picker_service: that is the pool itself (the HTTPRoute's "
                                "backendRef); the picker is the Service in "
                                "spec.endpointPickerRef.")
        if name in gateways:
            raise LabCheckError("picker_service: that is the Gateway the route attaches to "
                                "(parentRefs); it asks the picker, named in the pool's "
                                "spec.endpointPickerRef.")
        raise LabCheckError(f"picker_service: {name!r} is not the Service the pool names; read "
                            f"spec.endpointPickerRef.name.")
    return passed(f"requests go to port {port} of the selected Pods; for each one the Gateway "
                  f"first asks {name} (port {picker['port']['number']}) which Pod.")
