"""Tests of automatic prefix caching (labkit.serving.prefix_cache) in the server's engine: the
block hashing, the bounded LRU cache and its pinning, greedy output identical with and without
the cache, and the vLLM counters in /metrics."""

import json

import pytest

pytest.importorskip("fastapi")

from labkit.inference.language_model import load_tiny_gpt  # noqa: E402
from labkit.serving import config as cfg, frontend, process  # noqa: E402
from labkit.serving.batching import Scheduler, Sequence  # noqa: E402
from labkit.serving.prefix_cache import PrefixCache, block_hashes  # noqa: E402

SYSTEM = ("You are the platform assistant of the cluster team. The pods run on nodes of an EKS "
          "cluster and the model server answers requests through a service. ") * 2


@pytest.fixture(scope="module")
def model():
    return load_tiny_gpt()


# -- hashing -----------------------------------------------------------------------------------
def test_block_hashes_are_chained_over_full_blocks():
    ids = list(range(40))
    keys = block_hashes(ids, 16)
    assert len(keys) == 2                                      # 8 trailing tokens: no key
    assert block_hashes(ids[:32] + [999] * 8, 16) == keys        # same prefix, same keys
    changed = block_hashes([7] + ids[1:], 16)
    assert changed[0] != keys[0] and changed[1] != keys[1]     # block 1's key names its prefix
    other = block_hashes(ids[:16] + [5] * 16, 16)
    assert other[0] == keys[0] and other[1] != keys[1]
    assert block_hashes(ids, 16, limit=1) == keys[:1]
    assert block_hashes(ids[:15], 16) == []
    with pytest.raises(ValueError, match="block_size"):
        block_hashes(ids, 0)


def fill(cache, slot, n, seed):
    import torch

    g = torch.Generator().manual_seed(seed)
    for k, v in zip(cache.keys, cache.values):
        k[slot, :, :n] = torch.randn(k[slot, :, :n].shape, generator=g)
        v[slot, :, :n] = torch.randn(v[slot, :, :n].shape, generator=g)
    cache.lengths[slot] = n


def test_stored_blocks_load_back_into_another_slot(model):
    import torch

    slots = model.net.new_slot_cache(2, 64)
    ids = list(range(100, 140))                                # 2 full blocks + 8
    fill(slots, 0, 40, seed=1)
    pc = PrefixCache(16, 8)
    assert pc.lookup(ids) == (0, []) and pc.queries == 40 and pc.hits == 0
    held = pc.store(ids, slots, 0)
    assert len(held) == 2 and len(pc) == 2
    hit, keys = pc.lookup(ids[:32] + [1, 2, 3])
    assert hit == 32 and keys == held and pc.hits == 32 and pc.queries == 75
    pc.load(keys, slots, 1)
    assert slots.lengths[1] == 32
    for k, v in zip(slots.keys, slots.values):
        assert torch.equal(k[1, :, :32], k[0, :, :32]) and torch.equal(v[1, :, :32], v[0, :, :32])
    assert 0 < pc.hit_rate < 1 and pc.stats()["blocks"] == 2


def test_the_last_prompt_token_is_always_computed(model):
    slots = model.net.new_slot_cache(1, 64)
    ids = list(range(32))
    fill(slots, 0, 32, seed=2)
    pc = PrefixCache(16, 8)
    pc.store(ids, slots, 0)
    assert len(pc) == 2
    assert pc.lookup(ids)[0] == 16                 # not 32: the last block is recomputed
    assert pc.lookup(ids + [5])[0] == 32


def test_lru_eviction_spares_pinned_blocks(model):
    slots = model.net.new_slot_cache(1, 64)
    fill(slots, 0, 64, seed=3)
    pc = PrefixCache(16, 2)
    a, b, c = [1] * 16 + [0], [2] * 16 + [0], [3] * 16 + [0]
    pinned_a = pc.store(a, slots, 0)
    pc.store(b, slots, 0)
    assert len(pc) == 2
    assert pc.store(c, slots, 0) == []             # both pinned: c is not cached
    pc.release(pinned_a)                           # a is unpinned, and the least recent
    assert len(pc.store(c, slots, 0)) == 1 and pc.evictions == 1
    assert pc.lookup(a)[0] == 0 and pc.lookup(c)[0] == 16
    pc.release(pc.blocks)                          # unpin everything (b, c)
    pc.release(list(pc.blocks))
    assert pc.reset() and len(pc) == 0
    with pytest.raises(ValueError, match="capacity"):
        PrefixCache(16, 0)


def test_a_hit_refreshes_a_block_in_the_lru_order(model):
    slots = model.net.new_slot_cache(1, 64)
    fill(slots, 0, 64, seed=4)
    pc = PrefixCache(16, 2)
    a, b, c = [1] * 16 + [0], [2] * 16 + [0], [3] * 16 + [0]
    pc.release(pc.store(a, slots, 0))
    pc.release(pc.store(b, slots, 0))
    hit, keys = pc.lookup(a)                       # a becomes the most recent
    pc.release(keys)
    pc.release(pc.store(c, slots, 0))              # evicts b, not a
    assert pc.lookup(a)[0] == 16 and pc.lookup(b)[0] == 0


# -- the engine: identical greedy output, counted hits -------------------------------------------
def run(model, prompts, **config):
    sched = Scheduler(model, cfg.ServerConfig(**config))
    outs, queried, hit = {}, 0, 0
    for i, prompt in enumerate(prompts):           # one after the other: later ones can hit
        sched.add(Sequence(str(i), model.encode(prompt), 12))
        while sched.has_unfinished():
            events, observed = sched.step()
            queried += observed["prefix_queries"]
            hit += observed["prefix_hits"]
            for e in events:
                assert e[0] == "tok", e
                outs[e[1]] = outs.get(e[1], "") + e[2]
    return outs, queried, hit, sched


@pytest.mark.parametrize("batching", ["continuous", "dynamic"])
def test_greedy_output_is_identical_with_and_without_the_cache(model, batching):
    prompts = [SYSTEM + q for q in ("What is a pod?", "How do I drain a node?",
                                    "What is a pod?", "Scale the deployment")] + ["The pod"]
    off, q0, h0, _ = run(model, prompts, batching=batching, enable_prefix_caching=False)
    on, q1, h1, sched = run(model, prompts, batching=batching)
    assert on == off
    assert (q0, h0) == (0, 0)
    n = len(model.encode(prompts[0]))
    assert q1 == sum(len(model.encode(p)) for p in prompts)
    assert h1 >= 3 * (n // 16 - 1) * 16           # every later prompt reuses the system prompt
    assert all(b.refs == 0 for b in sched.prefix.blocks.values())   # all unpinned at the end


def test_concurrent_sequences_share_blocks_and_a_failure_unpins_them(model, monkeypatch):
    prompts = [SYSTEM + "What is a pod?", SYSTEM + "What is a node?"]
    off, *_ = run(model, prompts, batching="continuous", enable_prefix_caching=False)
    sched = Scheduler(model, cfg.ServerConfig(batching="continuous"))
    for i, p in enumerate(prompts * 2):            # admitted in the same step
        sched.add(Sequence(str(i), model.encode(p), 12))
    outs = {}
    while sched.has_unfinished():
        for e in sched.step()[0]:
            outs[e[1]] = outs.get(e[1], "") + e[2]
    assert outs["0"] == outs["2"] == off["0"] and outs["1"] == outs["3"] == off["1"]
    sched.add(Sequence("x", model.encode(prompts[0]), 12))
    sched.step()
    assert any(b.refs for b in sched.prefix.blocks.values())
    monkeypatch.setattr(model.net, "decode_slots",
                        lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    events, _ = sched.step()
    assert events[0][:3] == ("err", "x", 500)
    assert all(b.refs == 0 for b in sched.prefix.blocks.values())


# -- settings, flags, metrics --------------------------------------------------------------------
def test_config_and_flags():
    c = cfg.ServerConfig()
    assert c.enable_prefix_caching is True and c.block_size == 16 and c.prefix_cache_blocks > 0
    for bad in ({"enable_prefix_caching": "yes"}, {"block_size": 0},
                {"prefix_cache_blocks": -1}):
        with pytest.raises(ValueError):
            cfg.ServerConfig(**bad)
    assert process.option_flags({"enable_prefix_caching": False}) == \
        ["--no-enable-prefix-caching"]
    assert process.option_flags({"enable_prefix_caching": True}) == ["--enable-prefix-caching"]
    assert process.option_flags({"replica": ["a", "b"]}) == ["--replica", "a", "--replica", "b"]
    args = process._parser().parse_args(["--no-enable-prefix-caching", "--block-size", "8",
                                         "--prefix-cache-blocks", "64"])
    assert (args.enable_prefix_caching, args.block_size, args.prefix_cache_blocks) == \
        (False, 8, 64)
    assert process._parser().parse_args([]).enable_prefix_caching is True


def test_metrics_count_queried_and_hit_tokens_under_vllms_names(model):
    from fastapi.testclient import TestClient

    from labkit.check.serving import metric_value
    from labkit.serving.metrics import VLLM_METRICS

    assert VLLM_METRICS["vllm:prefix_cache_queries_total"] == "counter"
    assert VLLM_METRICS["vllm:prefix_cache_hits_total"] == "counter"
    labels = {"model_name": "tiny-gpt", "engine": "0"}
    body = json.dumps({"prompt": SYSTEM + "What is a pod?", "max_tokens": 4})
    headers = {"content-type": "application/json"}
    texts = {}
    for enable in (True, False):
        app = frontend.create_app(cfg.ServerConfig(enable_prefix_caching=enable), model=model)
        with TestClient(app) as c:
            while c.get("/readyz").status_code != 200:
                pass
            answers = [c.post("/v1/completions", content=body, headers=headers).json()
                       for _ in range(2)]
            texts[enable] = [a["choices"][0]["text"] for a in answers]
            n = answers[0]["usage"]["prompt_tokens"]
            m = c.get("/metrics").text
            queries = metric_value(m, "vllm:prefix_cache_queries_total", labels)
            hits = metric_value(m, "vllm:prefix_cache_hits_total", labels)
            if enable:
                assert queries == 2 * n and hits == (n - 1) // 16 * 16
                assert c.post("/reset_prefix_cache").status_code == 200
                c.post("/v1/completions", content=body, headers=headers)
                m = c.get("/metrics").text
                assert metric_value(m, "vllm:prefix_cache_hits_total", labels) == hits
                assert c.get("/readyz").json()["enable_prefix_caching"] is True
            else:
                assert queries == 0 and hits == 0
    assert texts[True] == texts[False]
