"""Check functions for Lab 6, capacity planning: specific feedback on each sizing step.

Every check recomputes the answer with :mod:`labkit.planning.capacity` (or simulates it with
:mod:`labkit.planning.queueing`), compares, and when the learner's number is off, recognises the usual
mistakes (fp32 instead of bf16, GB against GiB, query heads instead of KV heads, a missing
factor of 2 or of the batch) and says which one it looks like.
"""

from __future__ import annotations

import math
import re

from labkit.planning import capacity, catalog, queueing
from labkit.check import LabCheckError, as_number, expect, expect_near, passed


#: What an unfilled answer (``...`` or NaN) is told (Lab 6's wording).
UNFILLED = {"unfilled": "{name} is still the ... placeholder: replace it with your answer",
            "nan_is_unfilled": True}

#: Unit slips that apply to any answer in GB.
_GB_SLIPS = {1e9 / 2**30: "You converted to GiB (2**30 bytes); the lab uses GB = 10**9 bytes.",
             1e9: "That is in bytes: divide by 10**9 for GB."}


def _nominal_params(name: str) -> float | None:
    """The size in a model's name: ``"Llama 3 8B"`` -> 8e9, ``"SmolLM2 135M"`` -> 1.35e8."""
    match = re.search(r"(\d+(?:\.\d+)?)\s*([BM])\b", name)
    if not match:
        return None
    return float(match.group(1)) * (1e9 if match.group(2) == "B" else 1e6)


def check_weights(weights_gb, model: str = "llama-3-8b", dtype: str = "bf16") -> str:
    """Task 1: weight memory in GB (10**9 bytes) for ``model`` in ``dtype``."""
    m = capacity.model(model)
    expected = capacity.memory_breakdown(m, context=1, dtype=dtype).weights / 1e9
    hints = {
        2.0: "That is twice the answer: fp32 takes 4 bytes per parameter, bf16 takes 2.",
        0.5: "That is half the answer: bf16 takes 2 bytes per parameter, not 1 (int8).",
        **_GB_SLIPS,
    }
    for other in capacity.MODELS.values():
        if other.name != m.name:
            hints.setdefault(other.n_params / m.n_params,
                             f"That is the weight memory of {other.name}, not {m.name}.")
    nominal = _nominal_params(m.name)
    if nominal:
        hints[nominal / m.n_params] = ("You used the rounded size in the model's name; use the "
                                       "parameter count derived from its config "
                                       "(capacity.model(...).n_params).")
    value = expect_near("weights_gb", weights_gb, expected, 0.01, hints,
                   "weights = parameters x bytes per parameter; parameters come from "
                   "capacity.model(...).n_params.", **UNFILLED)
    return passed(f"weights: {value:.2f} GB ({m.n_params / 1e9:.2f} B parameters x "
           f"{expected * 1e9 / m.n_params:g} bytes)")


def check_kv_cache(per_token_bytes, total_gb, *, context: int, batch: int,
                   model: str = "llama-3-8b", dtype: str = "bf16") -> str:
    """Task 2: KV-cache bytes per token, and GB for ``batch`` sequences of ``context`` tokens."""
    m = capacity.model(model)
    expected = m.kv_bytes_per_token(dtype)
    hints = {
        m.n_heads / m.n_kv_heads: f"You used all {m.n_heads} query heads; the cache holds only "
                                  f"the {m.n_kv_heads} key/value heads (grouped-query attention).",
        0.5: "Half the answer: the cache keeps both K and V, a factor of 2.",
        2.0: "Twice the answer: did you count 4 bytes per value? bf16 is 2.",
        1 / m.n_layers: "Missing the layers: every layer keeps its own K and V.",
        1 / 1024: "That is in KiB: give bytes per token.",
    }
    per_token = expect_near("per_token_bytes", per_token_bytes, expected, 0.001, hints,
                       "2 (K and V) x layers x KV heads x head size x bytes per value.", **UNFILLED)
    expected_total = capacity.memory_breakdown(m, context=context, batch=batch,
                                               dtype=dtype).kv_cache / 1e9
    hints = {1 / context: f"Missing the context: multiply by {context:,} tokens per sequence.",
             **_GB_SLIPS}
    if batch > 1:
        hints[1 / batch] = f"That is one sequence: multiply by the batch of {batch}."
    total = expect_near("total_gb", total_gb, expected_total, 0.01, hints,
                   "total = bytes per token x context x batch.", **UNFILLED)
    return passed(f"KV cache: {per_token / 1024:g} KiB per token, {total:.2f} GB for "
           f"{batch} x {context} tokens")


def check_breakdown(parts: dict, *, context: int, batch: int, model: str = "llama-3-8b",
                    dtype: str = "bf16") -> str:
    """Task 3a: the four parts of one replica's memory, in GB."""
    expected = capacity.memory_breakdown(model, context=context, batch=batch,
                                         dtype=dtype).as_gb()
    expect(isinstance(parts, dict), f"parts should be a dict of four numbers, got {parts!r}")
    missing = [k for k in ("weights", "kv_cache", "activations", "overhead") if k not in parts]
    expect(not missing, f"the breakdown needs the keys {missing} as well")
    others = {"weights": "kv_cache", "kv_cache": "weights", "activations": "kv_cache"}
    for key in ("weights", "kv_cache", "activations"):
        swapped = {expected[others[key]] / expected[key]:
                   f"That is the {others[key]} figure: each key holds its own part."}
        expect_near(key, parts[key], expected[key], 0.02, {**_GB_SLIPS, **swapped},
               "Recompute it with capacity.memory_breakdown's formula.", **UNFILLED)
    rest = sum(as_number(k, parts[k], **UNFILLED) for k in ("weights", "kv_cache", "activations"))
    expect_near("overhead", parts["overhead"], 0.10 * rest, 0.02,
           {**_GB_SLIPS, 2.0: "That is 20 %; the lab assumes 10 %.",
            10.0: "That is 100 % of the rest; the lab assumes 10 %."},
           "The lab assumes 10 % of weights + KV cache + activations.", **UNFILLED)
    return passed(f"breakdown adds up to {expected['total']:.1f} GB per replica")


def check_instance(instance: str, tensor_parallel: int, *, context: int, batch: int,
                   model: str = "llama-3-8b", dtype: str = "bf16") -> str:
    """Task 3b: an instance type and tensor-parallel degree that hold one replica, cheaply.

    Passes for any choice that fits with the smallest tensor parallelism on that instance type,
    and says so when another priced instance type is cheaper per replica-hour.
    """
    expect(instance is not Ellipsis, "instance is still the ... placeholder: replace it with "
                                     "an instance type from the table, e.g. 'g6e.xlarge'")
    expect(instance in catalog.instances(),
           f"{instance!r} is not in the catalog; pick one of {', '.join(catalog.instances())}")
    (opt,) = capacity.options(model, context=context, batch=batch, dtype=dtype,
                              instances=[instance])
    need = capacity.memory_breakdown(model, context=context, batch=batch, dtype=dtype).total
    per_device = capacity.device_budget_bytes(opt.accelerator)
    number = as_number("tensor_parallel", tensor_parallel, **UNFILLED)
    expect(number >= 1 and number == int(number),
           f"tensor_parallel = {tensor_parallel!r}: it counts devices per replica, a whole "
           "number >= 1")
    tp = int(number)
    expect(tp <= opt.accelerator_count,
           f"{instance} has only {opt.accelerator_count} accelerator(s); tensor_parallel={tp} "
           "would span nodes")
    expect(need / tp <= per_device,
           f"does not fit: {need / 1e9:.1f} GB over {tp} device(s) is {need / tp / 1e9:.1f} GB "
           f"each, but a server may use {per_device / 1e9:.1f} GB of one {opt.accelerator} "
           f"({capacity.MEMORY_UTILIZATION * 100:.0f} % of {opt.device_memory_GB:.1f} GB, vLLM's "
           "default). Use more devices or a larger accelerator.")
    expect(tp == opt.tensor_parallel,
           f"it fits, but with tensor_parallel={opt.tensor_parallel} already; more devices per "
           "replica mean fewer replicas per node and more cost")

    def per_replica_hour(o):
        return capacity.on_demand_price(o.instance)["usd_per_hour"] / o.replicas_per_node

    priced = [o for o in capacity.options(model, context=context, batch=batch, dtype=dtype)
              if o.fits and o.instance in capacity.priced_instances()]
    best = min(priced, key=per_replica_hour)
    note = ""
    dearer = instance in capacity.priced_instances() and \
        per_replica_hour(opt) > 1.01 * per_replica_hour(best)
    if dearer:
        note = (f" (cheaper per replica-hour: {best.instance} at "
                f"${per_replica_hour(best):.2f} vs ${per_replica_hour(opt):.2f})")
    return passed(f"{instance} with tensor_parallel={tp}: {need / tp / 1e9:.1f} of "
           f"{per_device / 1e9:.1f} GB usable per device{note}")


def check_replicas(replicas, *, arrival_rate: float, service_times, slo_s: float,
                   percentile: float = 95, seed=0) -> str:
    """Task 4: the fewest replicas whose p-th percentile latency meets ``slo_s``.

    Re-runs :func:`labkit.planning.queueing.simulate_queue` with the learner's count and one fewer.
    """
    number = as_number("replicas", replicas, **UNFILLED)
    expect(number >= 1, "you need at least one replica")
    expect(number == int(number), f"replicas = {number:g}: count whole replicas (round up)")
    n = int(number)

    def p(c):
        return queueing.simulate_queue(arrival_rate, service_times, replicas=c,
                                       seed=seed).percentile(percentile)

    mine = p(n)
    expect(mine <= slo_s,
           f"with {n} replica(s) p{percentile:g} = {mine * 1e3:.1f} ms > SLO "
           f"{slo_s * 1e3:.1f} ms: not enough. Utilisation would be "
           f"{arrival_rate * sum(service_times) / len(service_times) / n:.0%}; add replicas.")
    if n > 1:
        fewer = p(n - 1)
        expect(fewer > slo_s,
               f"{n - 1} replica(s) already meet the SLO (p{percentile:g} = "
               f"{fewer * 1e3:.1f} ms): you are paying for one too many.")
    return passed(f"{n} replicas: p{percentile:g} = {mine * 1e3:.1f} ms <= {slo_s * 1e3:.1f} ms, "
           f"and {n - 1} would not be enough")


def check_cost(usd_per_hour, usd_per_million_requests, *, instance: str, replicas: int,
               replicas_per_node: int, request_rate: float) -> str:
    """Task 5: hourly cost of the fleet and cost per million requests, from cited prices."""
    price = capacity.on_demand_price(instance)
    nodes = math.ceil(replicas / replicas_per_node)
    hourly = nodes * price["usd_per_hour"]
    value = as_number("usd_per_hour", usd_per_hour, **UNFILLED)
    if not math.isclose(value, hourly, rel_tol=0.01):
        unrounded = replicas / replicas_per_node * price["usd_per_hour"]
        per_replica = replicas * price["usd_per_hour"]
        if math.isclose(value, unrounded, rel_tol=0.01):
            hint = "You paid for fractions of a node: round the node count up."
        elif replicas_per_node > 1 and math.isclose(value, per_replica, rel_tol=0.01):
            hint = (f"You paid one node per replica; {replicas_per_node} replicas share a "
                    "node.")
        else:
            hint = (f"nodes = ceil({replicas} / {replicas_per_node}) = {nodes}, "
                    f"x ${price['usd_per_hour']:.4g} per hour ({price['price_date']}).")
        raise LabCheckError(f"usd_per_hour = {value:.4g}, expected {hourly:.4g}. {hint}")
    per_million = hourly / (request_rate * 3600) * 1e6
    fallback = "Cost per million = hourly cost / (requests per second x 3600) x 10**6."
    answer = as_number("usd_per_million_requests", usd_per_million_requests, **UNFILLED)
    if answer and math.isclose(1 / answer, per_million, rel_tol=0.01):
        raise LabCheckError(f"usd_per_million_requests = {answer:.4g} is the inverse (requests "
                            f"per dollar, in millions). {fallback}")
    expect_near("usd_per_million_requests", answer, per_million, 0.01,
           {1 / 3600: "Off by 3,600: requests per hour = requests per second x 3,600.",
            3600.0: "Off by 3,600: requests per hour = requests per second x 3,600.",
            1e-3: "That is per thousand requests; the lab asks per million.",
            1e-6: "That is per request; the lab asks per million."}, fallback, **UNFILLED)
    return passed(f"{nodes} x {instance} = ${hourly:,.2f} per hour, "
           f"${per_million:,.2f} per million requests (price of {price['price_date']})")
