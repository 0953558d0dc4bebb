"""Unit tests of labkit.inference (decoder, KV caches, the course's language models).

The SmolLM2 tests share one loaded copy (module fixtures). On a fresh clone the first of
them dequantizes the GGUF file into .cache/labkit/ (about 30 s, once); afterwards the whole
file takes about 20-30 s on 2 cores.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from labkit.inference import decode_bench, language_model, smollm2
from labkit.inference.config import DecoderConfig
from labkit.inference.decode_bench import BENCH_KEYS, bench_decode_cli
from labkit.inference.decoder import Decoder, hf_llama_to_decoder_state, init_weights
from labkit.inference.generation import GenerationTimings
from labkit.inference.kv_cache import KVCache, SlotCache
from labkit.inference.language_model import DATA_DIR, load_tiny_gpt
from labkit.inference.loading import load_model
from labkit.inference.smollm2 import load_smollm2
from labkit.machine import facts, probes
from labkit.machine.dtypes import torch_dtype
from labkit.planning import memory

REPO = Path(__file__).resolve().parent.parent
SMALL = DecoderConfig(vocab_size=61, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=48,
                      max_seq_len=64)


@pytest.fixture(scope="module")
def tiny():
    return load_tiny_gpt()


@pytest.fixture(scope="module")
def smol():
    return load_smollm2()


@pytest.fixture(scope="module")
def small_net():
    torch.manual_seed(0)
    return init_weights(Decoder(SMALL), seed=1).eval()


# ------------------------------------------------------------------------------------------
# the decoder
# ------------------------------------------------------------------------------------------
def test_config_validation():
    with pytest.raises(ValueError, match="multiple of n_heads"):
        DecoderConfig(vocab_size=10, d_model=30, n_layers=1, n_heads=4, n_kv_heads=2, d_ff=8,
                      max_seq_len=8)
    with pytest.raises(ValueError, match="n_kv_heads"):
        DecoderConfig(vocab_size=10, d_model=32, n_layers=1, n_heads=4, n_kv_heads=3, d_ff=8,
                      max_seq_len=8)
    with pytest.raises(ValueError, match="positive integer"):
        DecoderConfig(vocab_size=0, d_model=32, n_layers=1, n_heads=4, n_kv_heads=2, d_ff=8,
                      max_seq_len=8)
    with pytest.raises(ValueError, match="unknown keys"):
        DecoderConfig.from_dict({**SMALL.to_dict(), "dropout": 0.1})
    assert DecoderConfig.from_dict(SMALL.to_dict()) == SMALL


def test_forward_shapes(small_net):
    tokens = torch.randint(0, SMALL.vocab_size, (3, 10))
    with torch.inference_mode():
        assert small_net(tokens).shape == (3, 10, SMALL.vocab_size)
        assert small_net(tokens, last_only=True).shape == (3, 1, SMALL.vocab_size)
        cache = small_net.new_cache(3, 12)
        small_net(tokens, cache)
        assert cache.length == 10
        assert small_net.decode_step(tokens[:, :1], cache).shape == (3, SMALL.vocab_size)
        with pytest.raises(ValueError, match="cache capacity"):
            small_net(tokens, cache)
    with pytest.raises(ValueError, match="batch, time"):
        small_net(torch.zeros(4, dtype=torch.long))


def test_decode_step_matches_full_forward(small_net):
    tokens = torch.randint(0, SMALL.vocab_size, (2, 12))
    with torch.inference_mode():
        full = small_net(tokens)
        cache = small_net.new_cache(2, 12)
        steps = [small_net(tokens[:, :5], cache)]
        for t in range(5, 12):
            steps.append(small_net.decode_step(tokens[:, t:t + 1], cache).unsqueeze(1))
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_decode_layout_keeps_the_maths(small_net):
    net = init_weights(Decoder(SMALL), seed=2).eval()
    tokens = torch.randint(0, SMALL.vocab_size, (1, 9))
    with torch.inference_mode():
        before = net(tokens)
        net.to_decode_layout()
        after = net(tokens)
    gate_up = net.layers[0].w_gate_up.weight
    assert gate_up.stride() == (1, gate_up.shape[0])        # stored column-major
    assert net.layers[0].w_down.weight.is_contiguous()      # out < in: left row-major
    assert net.lm_head.weight is net.embed.weight           # still tied
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)


def test_kv_cache_bytes_and_capacity(small_net):
    cache = small_net.new_cache(2, 16)
    expected = 2 * SMALL.n_layers * 2 * SMALL.n_kv_heads * 16 * SMALL.head_dim * 4
    assert cache.nbytes == expected
    with pytest.raises(ValueError, match="capacity"):
        KVCache(SMALL, 1, SMALL.max_seq_len + 1, torch.float32)


# -- continuous batching: slots at their own positions ----------------------------------------
def test_slot_cache_views_grow_and_release(small_net):
    cache = small_net.new_slot_cache(3, 8)
    assert isinstance(cache, SlotCache) and cache.lengths == [0, 0, 0]
    assert cache.nbytes == 3 * SMALL.n_layers * 2 * SMALL.n_kv_heads * 8 * SMALL.head_dim * 4
    small_net.prefill_slot([1, 2, 3], cache, 1)
    assert cache.lengths == [0, 3, 0]
    view = cache.view(1)
    assert view.length == 3 and view.batch_size == 1
    assert view.keys[0].data_ptr() == cache.keys[0][1].data_ptr()      # a view, not a copy
    before = cache.keys[0][1, :, :3].clone()
    cache.grow(20)
    assert cache.capacity == 20 and cache.lengths == [0, 3, 0]
    torch.testing.assert_close(cache.keys[0][1, :, :3], before, atol=0, rtol=0)
    cache.release(1)
    assert cache.lengths == [0, 0, 0]
    with pytest.raises(ValueError, match="context"):
        cache.grow(SMALL.max_seq_len + 1)
    with pytest.raises(ValueError, match="slot must be"):
        cache.view(3)
    with pytest.raises(ValueError, match="max_slots"):
        SlotCache(SMALL, 0, 8, torch.float32)


def test_slot_decoding_refuses_misuse_with_a_message(small_net):
    cache = small_net.new_slot_cache(2, 6)
    small_net.prefill_slot([1, 2], cache, 0)
    with pytest.raises(ValueError, match="holds a sequence"):
        small_net.prefill_slot([3], cache, 0)
    with pytest.raises(ValueError, match="empty; prefill_slot"):
        small_net.decode_slots(torch.tensor([1, 2]), cache, [0, 1])
    with pytest.raises(ValueError, match="distinct"):
        small_net.decode_slots(torch.tensor([1, 2]), cache, [0, 0])
    with pytest.raises(ValueError, match="one token per slot"):
        small_net.decode_slots(torch.tensor([1, 2]), cache, [0])
    with pytest.raises(ValueError, match="capacity"):
        small_net.prefill_slot(list(range(7)), cache, 1)
    for _ in range(4):
        small_net.decode_slots(torch.tensor([1]), cache, [0])
    with pytest.raises(ValueError, match="grow"):                     # slot 0 is full
        small_net.decode_slots(torch.tensor([1]), cache, [0])


def test_decode_slots_matches_decode_step(small_net):
    """Rows at different positions, in any slot order, give the logits of each sequence
    decoded on its own (up to float rounding)."""
    gen = torch.Generator().manual_seed(3)
    seqs = [torch.randint(0, SMALL.vocab_size, (n,), generator=gen).tolist() for n in (9, 4, 6)]
    cache = small_net.new_slot_cache(4, 16)
    slots = [3, 0, 2]                                   # not 0..B-1: keys are gathered
    for seq, slot in zip(seqs, slots):
        small_net.prefill_slot(seq[:-1], cache, slot)
    got = small_net.decode_slots(torch.tensor([seq[-1] for seq in seqs]), cache, slots)
    assert [cache.lengths[s] for s in slots] == [len(seq) for seq in seqs]
    with torch.inference_mode():
        for row, seq in enumerate(seqs):
            solo = small_net.new_cache(1, 16)
            small_net(torch.tensor([seq[:-1]]), solo)
            want = small_net.decode_step(torch.tensor([[seq[-1]]]), solo)[0]
            torch.testing.assert_close(got[row], want, atol=1e-5, rtol=1e-5)


def run_slot_scheduler(lm, requests, max_slots, lowest_first=True):
    """The server's continuous-batching loop without HTTP, greedy: ``requests`` are
    ``(prompt, max_tokens, join_step)``; each joins at its step if a slot is free, leaves
    when it has its tokens. Returns the token ids of each request and the slots used."""
    net = lm.net
    cache = net.new_slot_cache(max_slots, 64)
    waiting, running, out, used = list(range(len(requests))), {}, {}, []
    step = 0
    while waiting or running:
        free = [s for s in range(max_slots) if s not in running]
        while free and waiting and requests[waiting[0]][2] <= step:
            i = waiting.pop(0)
            slot = free.pop(0 if lowest_first else -1)
            logits = net.prefill_slot(lm.encode(requests[i][0]), cache, slot)
            running[slot] = (i, [int(logits.argmax())])
            used.append(slot)
        if running:
            slots = sorted(running)
            tokens = torch.tensor([running[s][1][-1] for s in slots])
            picks = net.decode_slots(tokens, cache, slots).argmax(-1).tolist()
            for slot, token in zip(slots, picks):
                running[slot][1].append(token)
        for slot, (i, ids) in list(running.items()):
            if len(ids) >= requests[i][1]:
                out[i] = ids[:requests[i][1]]
                del running[slot]
                cache.release(slot)
        step += 1
    return [out[i] for i in range(len(requests))], used


#: (prompt, max_tokens, step at which it arrives). Greedy runs of these prompts have no near
#: tie (the two best logits are > 1e-4 apart at every step, checked below): a batched matrix
#: product rounds differently from a batch-1 one (~1e-7), which could only flip a tie.
SLOT_REQUESTS = [("The pod", 20, 0), ("A Kubernetes node runs pods and", 9, 0),
                 ("Batching", 30, 2), ("Storage classes on EKS let you", 15, 5),
                 ("Karpenter", 25, 6), ("The scheduler places", 4, 6), ("x", 12, 11),
                 ("Quantization", 1, 12)]


def test_slot_decoding_equals_generate_alone(tiny):
    """Continuous batching changes when a request runs, never what it produces: requests of
    different prompt lengths that join at different steps, in few slots (so finished slots
    are reused), get exactly the token ids of generate() alone."""
    alone = [list(tiny.generate(p, n, stop_at_eos=False).token_ids[0])
             for p, n, _ in SLOT_REQUESTS]
    with torch.inference_mode():
        for (prompt, _, _), ids in zip(SLOT_REQUESTS, alone):
            full = tiny.net(torch.tensor([tiny.encode(prompt) + ids[:-1]]))[0]
            top2 = full[len(tiny.encode(prompt)) - 1:].topk(2, dim=-1).values
            assert (top2[:, 0] - top2[:, 1]).min() > 1e-4, f"{prompt!r} has a near tie"
    for lowest_first in (True, False):
        got, used = run_slot_scheduler(tiny, SLOT_REQUESTS, 3, lowest_first)
        assert got == alone
        assert len(used) == len(SLOT_REQUESTS) and set(used) == {0, 1, 2}   # slots reused


def test_slot_decoding_goes_through_the_quantization_hook(tiny):
    """labkit.quant's int8 layers replace the projections; the slot path uses them (its
    logits follow the int8 model's own decode step, not the fp32 model's)."""
    from labkit.inference.quant import quantize_model

    int8 = quantize_model(tiny, "int8")
    ids = tiny.encode("A Kubernetes node runs pods and")
    logits = {}
    for name, lm in (("fp32", tiny), ("int8", int8)):
        cache = lm.net.new_slot_cache(2, 32)
        lm.net.prefill_slot(ids[:-1], cache, 1)
        logits[name] = lm.net.decode_slots(torch.tensor([ids[-1]]), cache, [1])[0]
    with torch.inference_mode():
        solo = int8.net.new_cache(1, 32)
        int8.net(torch.tensor([ids[:-1]]), solo)
        want = int8.net.decode_step(torch.tensor([[ids[-1]]]), solo)[0]
    torch.testing.assert_close(logits["int8"], want, atol=1e-4, rtol=1e-4)
    assert (logits["int8"] - logits["fp32"]).abs().max() > 1e-3      # the int8 layers ran


def test_matches_hugging_face_llama_on_a_random_model():
    """Our decoder on HF weights reproduces HF's LlamaForCausalLM (small random config)."""
    transformers = pytest.importorskip("transformers")
    hf_config = transformers.LlamaConfig(
        vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        rms_norm_eps=1e-5, tie_word_embeddings=True, rope_theta=500.0)
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(hf_config).eval()
    config = DecoderConfig.from_hf_llama(hf_config.to_dict())
    net = Decoder(config)
    net.load_state_dict(hf_llama_to_decoder_state(hf.state_dict(), config))
    net.eval().to_decode_layout()
    tokens = torch.randint(0, 97, (2, 11))
    with torch.inference_mode():
        torch.testing.assert_close(net(tokens), hf(tokens).logits, atol=1e-4, rtol=1e-4)


# ------------------------------------------------------------------------------------------
# the models
# ------------------------------------------------------------------------------------------
def test_tiny_checkpoint_is_committed_and_small():
    weights = DATA_DIR / "tiny_gpt.safetensors"
    assert weights.stat().st_size <= 5 * 10**6
    meta = json.loads((DATA_DIR / "tiny_gpt.json").read_text())
    assert "scripts/train_tiny_model.py" in meta["training"]["command"]
    assert meta["params"] <= 5 * 10**6
    rows = (DATA_DIR / "tiny_gpt_loss.csv").read_text().splitlines()
    assert rows[0] == "step,elapsed_s,lr,train_loss,val_loss"
    assert len(rows) == meta["training"]["steps"] + 2
    # the training loss fell far below the loss of a uniform guess, ln(vocab)
    assert meta["training"]["final_train_loss_mean_last_20"] < 0.5 * math.log(1024)


def test_tiny_gpt_loads(tiny):
    assert tiny.name == "tiny-gpt"
    assert 0.5e6 < tiny.n_params < 5e6
    assert tiny.context_length == 256
    assert tiny.weight_bytes_per_token == 4 * tiny.streamed_params
    text = tiny.generate("A pod is", 12).text
    assert isinstance(text, str) and text


def test_greedy_is_deterministic_and_kv_cache_does_not_change_it(tiny):
    prompt = "The scheduler decides"
    on = tiny.generate(prompt, 24, kv_cache=True, stop_at_eos=False)
    off = tiny.generate(prompt, 24, kv_cache=False, stop_at_eos=False)
    again = tiny.generate(prompt, 24, stop_at_eos=False)
    assert on.token_ids == off.token_ids == again.token_ids
    assert len(on.token_ids[0]) == 24


def test_a_batch_gives_the_same_text_as_single_prompts(tiny):
    prompts = ["A pod is", "Training and inference run the same model but"]
    batch = tiny.generate(prompts, 16, stop_at_eos=False)
    singles = [tiny.generate(p, 16, stop_at_eos=False) for p in prompts]
    assert batch.token_ids == tuple(s.token_ids[0] for s in singles)
    no_cache = tiny.generate(prompts, 16, stop_at_eos=False, kv_cache=False)
    assert no_cache.token_ids == batch.token_ids
    assert batch.timings.batch_size == 2
    assert batch.timings.prompt_tokens == max(len(tiny.encode(p)) for p in prompts)


def test_sampling_is_seeded(tiny):
    a = tiny.generate("GPU nodes", 20, temperature=0.9, seed=7, stop_at_eos=False)
    b = tiny.generate("GPU nodes", 20, temperature=0.9, seed=7, stop_at_eos=False)
    c = tiny.generate("GPU nodes", 20, temperature=0.9, top_k=5, seed=8, stop_at_eos=False)
    assert a.token_ids == b.token_ids
    assert all(0 <= t < tiny.config.vocab_size for t in c.token_ids[0])


def test_timings_fields(tiny):
    g = tiny.generate("A node", 10, stop_at_eos=False, threads=1)
    t = g.timings
    assert isinstance(t, GenerationTimings)
    assert t.new_tokens == 10 and len(t.step_s) == 9 and t.threads == 1
    assert t.ttft_s > 0 and t.tpot_s > 0 and t.total_s >= t.ttft_s
    assert t.decode_tok_s == pytest.approx(9 / sum(t.step_s))
    assert t.tokens_per_s == pytest.approx(10 / t.total_s)
    assert t.positions == tuple(range(t.prompt_tokens, t.prompt_tokens + 9))
    assert set(t.as_dict()) >= {"ttft_s", "tpot_s", "decode_tok_s", "tokens_per_s", "step_s"}
    assert "time to first token" in str(t)
    one = tiny.generate("A node", 1).timings
    assert one.step_s == () and math.isnan(one.tpot_s)


def test_streaming(tiny):
    seen = []
    g = tiny.generate("Object storage", 15, stop_at_eos=False,
                      on_token=lambda step, ids: seen.append((step, ids)))
    assert [s for s, _ in seen] == list(range(15))
    assert [ids[0] for _, ids in seen] == list(g.token_ids[0])
    stream = tiny.stream("Object storage", 15, stop_at_eos=False)
    pieces = list(stream)
    assert "".join(pieces) == g.text == stream.text
    assert stream.timings.new_tokens == 15
    with pytest.raises(ValueError, match="unknown options"):
        list(tiny.stream("x", 3, tempreature=1.0))


def test_streaming_leaves_the_callers_settings_alone(tiny):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen = []
        for _ in tiny.stream("A pod", 5, threads=1, stop_at_eos=False):
            seen.append((torch.is_inference_mode_enabled(), torch.get_num_threads()))
        assert seen and all(s == (False, 2) for s in seen)
        assert torch.get_num_threads() == 2
        steps = []
        tiny.generate("A pod", 3, threads=1, stop_at_eos=False,
                      on_token=lambda step, ids: steps.append(torch.get_num_threads()))
        assert steps == [2, 2, 2]
    finally:
        torch.set_num_threads(before)


def test_bad_input_raises_value_error_naming_the_limit(tiny):
    with pytest.raises(ValueError, match="max_new_tokens"):
        tiny.generate("A pod", 0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        tiny.generate("A pod", -3)
    long_prompt = "pods and nodes " * 200
    with pytest.raises(ValueError, match="context of tiny-gpt \\(256 tokens\\)"):
        tiny.generate(long_prompt, 5)
    n = len(tiny.encode("A pod is"))
    with pytest.raises(ValueError, match=f"at most {256 - n}"):
        tiny.generate("A pod is", 256)
    with pytest.raises(ValueError, match="empty"):
        tiny.generate("", 5)
    with pytest.raises(ValueError, match="temperature"):
        tiny.generate("A pod", 5, temperature=-1)
    with pytest.raises(ValueError, match="top_k"):
        tiny.generate("A pod", 5, temperature=1.0, top_k=0)
    with pytest.raises(ValueError, match="prompts"):
        tiny.generate([], 5)
    with pytest.raises(ValueError, match="not a chat model"):
        tiny.chat_prompt("hi")
    with pytest.raises(ValueError, match="fp32, bf16, fp16"):
        load_tiny_gpt("int8")
    with pytest.raises(ValueError, match="fp32, bf16, fp16"):
        torch_dtype("float64")
    with pytest.raises(ValueError, match="smollm2, tiny-gpt"):
        load_model("gpt-5")
    with pytest.raises(ValueError, match="threads"):
        tiny.generate("A pod", 2, threads=0)


def test_tiny_in_bf16(tiny):
    bf = load_tiny_gpt("bf16")
    assert bf.net.embed.weight.dtype == torch.bfloat16
    assert bf.weight_bytes_per_token == tiny.weight_bytes_per_token / 2
    diff = (bf.logits("A pod is a") - tiny.logits("A pod is a")).abs().max()
    assert diff < 0.5


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path))
    assert language_model.cache_dir() == tmp_path.resolve()
    assert smollm2.smollm2_dir().parent == tmp_path.resolve()
    monkeypatch.delenv("LABKIT_CACHE")
    assert language_model.cache_dir() == REPO / ".cache" / "labkit"


# ------------------------------------------------------------------------------------------
# SmolLM2
# ------------------------------------------------------------------------------------------
def test_smollm2_shape_and_bytes(smol):
    c = smol.config
    assert (c.n_layers, c.d_model, c.n_heads, c.n_kv_heads, c.vocab_size) == (30, 576, 9, 3, 49152)
    assert smol.n_params == 134_515_008
    assert smol.streamed_params == 134_479_872
    assert smol.weight_bytes_per_token == 4 * 134_479_872
    assert "Q4_1" in smol.source


def test_smollm2_matches_hugging_face(smol):
    """Our Llama forward on SmolLM2's weights gives HF's logits, and the same greedy text."""
    hf = smollm2.load_smollm2_hf()
    prompt = smol.chat_prompt("What is a Kubernetes pod?")
    ids = smol.encode(prompt)
    with torch.inference_mode(), facts.torch_threads(1):
        ref = hf(torch.tensor([ids])).logits[0]
        ref_new = hf.generate(torch.tensor([ids]), max_new_tokens=6, do_sample=False)
    ours = smol.logits(ids)
    assert (ours - ref).abs().max().item() < 2e-3          # logits are up to ~40
    assert torch.equal(ours.argmax(-1), ref.argmax(-1))
    gen = smol.generate(prompt, 6, stop_at_eos=False, threads=1)
    assert list(gen.token_ids[0]) == ref_new[0, len(ids):].tolist()
    hf_speed = decode_bench.time_hf_generate(hf, smol.tokenizer, new_tokens=3, repeats=1)
    assert hf_speed["decode_tok_s"] > 0 and hf_speed["threads"] == 1


def test_smollm2_chat_and_cache(smol):
    prompt = smol.chat_prompt("What is the capital of France?")
    assert prompt.startswith("<|im_start|>system\n") and prompt.endswith("<|im_start|>assistant\n")
    template = (smollm2.smollm2_dir() / "chat_template.jinja")     # written by prepare_smollm2
    assert template.is_file() and "<|im_start|>" in template.read_text()
    on = smol.generate(prompt, 8, threads=1)
    off = smol.generate(prompt, 8, kv_cache=False, threads=1)
    assert on.token_ids == off.token_ids
    assert "Paris" in on.text


def test_bench_cli_prints_exactly_the_keys(capsys, smol):
    assert bench_decode_cli(["--tokens", "3", "--repeats", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert tuple(out) == BENCH_KEYS
    assert out["model"] == "smollm2" and out["dtype"] == "fp32"
    assert out["weight_bytes"] == 4 * 134_479_872 and out["params"] == 134_515_008
    assert out["bandwidth_GBps"] > 0 and out["decode_tok_s"] > 0
    assert out["roofline_tok_s"] == pytest.approx(
        out["bandwidth_GBps"] * 1e9 / out["weight_bytes"], rel=1e-3)
    assert out["pct_roofline"] == pytest.approx(
        100 * out["decode_tok_s"] / out["roofline_tok_s"], abs=0.1)


def test_bench_cli_through_python_m_labkit():
    proc = subprocess.run(
        [sys.executable, "-m", "labkit", "bench", "decode", "--model", "tiny-gpt", "--tokens",
         "4", "--repeats", "1", "--batch-size", "2", "--no-kv-cache", "--json"],
        check=False, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert tuple(out) == BENCH_KEYS and out["model"] == "tiny-gpt"


def test_bench_cli_rejects_bad_options(capsys):
    for argv, message in ((["--tokens", "1"], "--tokens must be >= 2"),
                          (["--batch-size", "0"], "--batch-size must be >= 1"),
                          (["--dtype", "int8"], "invalid choice")):
        with pytest.raises(SystemExit) as stop:
            bench_decode_cli(argv)
        assert stop.value.code == 2
        assert message in capsys.readouterr().err


def test_gemv_bandwidth_probe():

    bw = probes.gemv_read_GBps(size_mib=64, repeats=2, threads=1)
    assert bw["threads"] == 1 and bw["bytes"] == 64 * 2**20
    # smoke check: the ordering is what can fail; the range only catches unit slips
    assert 0.5 < bw["worst_GBps"] <= bw["median_GBps"] <= bw["best_GBps"] < 1000
    llc = facts.last_level_cache_bytes()
    assert bw["llc_bytes"] == llc
    assert bw["dram_bound"] == (llc is None or 64 * 2**20 >= 4 * llc)
    with pytest.raises(ValueError, match="size_mib"):
        probes.gemv_read_GBps(size_mib=1)


def test_gemv_probe_is_sized_from_the_last_level_cache(monkeypatch):
    """Default size: at least 4 x the LLC the OS reports (a 480 MiB L3 gives 1920 MiB)."""

    monkeypatch.setattr(probes, "last_level_cache_bytes", lambda: 32 * 2**20)
    assert probes.probe_size_mib(512) == 512
    monkeypatch.setattr(probes, "last_level_cache_bytes", lambda: 480 * 2**20)
    assert probes.probe_size_mib(512) == 1920
    assert probes.probe_size_mib(256, arrays=2) == 960
    monkeypatch.setattr(probes, "last_level_cache_bytes", lambda: 16 * 2**20)
    bw = probes.gemv_read_GBps(repeats=1, threads=1)
    assert bw["bytes"] == 512 * 2**20 and bw["dram_bound"]


def test_time_hf_generate_times_every_step_like_decode_benchmark(smol):
    hf = smollm2.load_smollm2_hf()
    out = decode_bench.time_hf_generate(hf, smol.tokenizer, new_tokens=4, repeats=2, threads=1)
    assert out["decode_tok_s_min"] <= out["decode_tok_s_median"] <= out["decode_tok_s"]
    assert out["tpot_ms"] == pytest.approx(1e3 / out["decode_tok_s"])
    assert out["prompt_tokens"] == len(smol.encode(decode_bench.bench_prompt(smol, 16)))
    with pytest.raises(ValueError, match="new_tokens"):
        decode_bench.time_hf_generate(hf, smol.tokenizer, new_tokens=1)
    with pytest.raises(ValueError, match="repeats"):
        decode_bench.time_hf_generate(hf, smol.tokenizer, repeats=0)

    class Silent:       # a model whose generate() never reports a token: a broken clock
        def generate(self, *args, **kwargs):
            return None

    with pytest.raises(RuntimeError, match="cannot time its steps"):
        decode_bench.time_hf_generate(Silent(), smol.tokenizer, new_tokens=3, repeats=1)


def test_decode_benchmark_same_statistic_on_both_sides(smol, monkeypatch):
    """The roofline's bandwidth is the better probe's *median* call, as the decode rate is
    the better run's median step; generate() is interleaved with the loop when asked."""
    probes = iter([{"best_GBps": 9.0, "median_GBps": 6.0, "bytes": 1, "dram_bound": True},
                   {"best_GBps": 8.0, "median_GBps": 7.0, "bytes": 1, "dram_bound": True}])
    monkeypatch.setattr(decode_bench, "gemv_read_GBps", lambda **kw: next(probes))
    hf = smollm2.load_smollm2_hf()
    r = decode_bench.decode_benchmark(smol, new_tokens=3, repeats=2, threads=1, hf_model=hf)
    assert r["bandwidth_GBps"] == 7.0 and r["bandwidth_GBps_best"] == 9.0
    assert r["roofline_tok_s"] == pytest.approx(7e9 / r["weight_bytes"], rel=1e-3)
    assert r["hf"]["repeats"] == 2 and r["hf"]["threads"] == 1
    assert r["hf"]["decode_tok_s_min"] <= r["hf"]["decode_tok_s_median"] <= r["hf"]["decode_tok_s"]
    assert r["weights_fit_llc"] == (r["llc_bytes"] is not None and r["weight_bytes"] < r["llc_bytes"])
    with pytest.raises(ValueError, match="batch_size=1"):
        decode_bench.decode_benchmark(smol, batch_size=2, hf_model=hf, bandwidth_GBps=1.0)


def test_prepare_smollm2_moves_a_stale_copy_aside_and_checks_the_result(monkeypatch, tmp_path):
    """force=True on an existing copy: the old folder is renamed away in one step, the new
    one renamed in, and a result without the needed files raises instead of returning."""
    import os

    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path))
    target = smollm2.smollm2_dir()
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")          # a stale, incomplete copy

    class FakeHF:
        class config:
            @staticmethod
            def to_dict():
                return {"tie_word_embeddings": True}

        @staticmethod
        def state_dict():
            return {"w": torch.zeros(2)}

    class FakeTok:
        eos_token, pad_token = "<e>", "<p>"

        @staticmethod
        def save_pretrained(folder):
            Path(folder, "tokenizer.json").write_text("{}")

    import transformers

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        staticmethod(lambda *a, **k: FakeHF()))
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained",
                        staticmethod(lambda *a, **k: FakeTok()))
    assert smollm2.prepare_smollm2(force=True, verbose=False) == target
    assert {p.name for p in target.iterdir()} >= {"config.json", "model.safetensors",
                                                   "tokenizer.json", "labkit.json"}
    assert [p.name for p in tmp_path.iterdir()] == [target.name]   # nothing left aside

    real_replace = os.replace

    def lose_the_race(src, dst):
        real_replace(src, dst)
        if Path(dst) == target:             # another process deletes it right after
            import shutil
            shutil.rmtree(target)

    monkeypatch.setattr(os, "replace", lose_the_race)
    with pytest.raises(RuntimeError, match="lacks"):
        smollm2.prepare_smollm2(force=True, verbose=False)


# ------------------------------------------------------------------------------------------
# labkit.training (chapter 02)
# ------------------------------------------------------------------------------------------
TRAIN_CONFIG = DecoderConfig(vocab_size=1024, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                             d_ff=64, max_seq_len=64)


def test_training_memory_by_phase():
    from labkit.training import loop, memory as training_memory

    data = loop.corpus_tokens()
    net = loop.TrainRun.new(TRAIN_CONFIG).net
    gen = torch.Generator().manual_seed(0)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    small = training_memory.measure_training_memory(net, *loop.random_batch(data, 2, 32, gen))
    big = training_memory.measure_training_memory(net, *loop.random_batch(data, 4, 32, gen))
    n = small["n_params"]
    parts = memory.training_breakdown(n, "fp32-adamw")
    assert small["weights"] == parts["weights"] and small["gradients"] == parts["gradients"]
    assert small["optimizer_states"] == parts["optimizer_states"]
    assert big["activations"] == pytest.approx(2 * small["activations"], rel=0.05)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # restored
    with pytest.raises(ValueError, match="1-D"):
        loop.random_batch(data[:10], 2, 32, gen)


def test_crash_and_resume_is_exact(tmp_path):
    from labkit.training import loop

    data = loop.corpus_tokens()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    clean = loop.train(loop.TrainRun.new(TRAIN_CONFIG, seed=3), data, 8,
                           batch_size=2, seq_len=16, checkpoint_every=3,
                           checkpoint_dir=tmp_path / "a")
    run = loop.TrainRun.new(TRAIN_CONFIG, seed=3)
    with pytest.raises(loop.SimulatedCrash) as crash:
        loop.train(run, data, 8, batch_size=2, seq_len=16, checkpoint_every=3,
                       checkpoint_dir=tmp_path / "b", crash_at_step=6)
    assert crash.value.step == 6 and run.step == 5
    latest = loop.latest_checkpoint(tmp_path / "b")
    assert latest.name == "step-00003.pt"
    resumed = loop.resume(latest)
    assert resumed.step == 3
    loop.train(resumed, data, 8, batch_size=2, seq_len=16)
    assert resumed.losses == clean.losses
    assert [c[0] for c in clean.checkpoints] == [3, 6]
    size = clean.checkpoints[0][2]
    assert 12 * resumed.net.num_params() < size < 13 * resumed.net.num_params()
    assert loop.latest_checkpoint(tmp_path) is None
    with pytest.raises(ValueError, match="checkpoint_dir"):
        loop.train(resumed, data, 9, checkpoint_every=2)
