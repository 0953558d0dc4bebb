"""Train the course's tiny language model ("tiny-gpt") and write its checkpoint to labkit/data/.

Usage (from the repository root, about a minute on 2 CPU cores):

    .venv/bin/python scripts/train_tiny_model.py            # the committed checkpoint
    .venv/bin/python scripts/train_tiny_model.py --steps 50 --out /tmp/tiny   # a quick try

Options: --steps N (default 250), --seed S (default 0), --threads T (default 1),
--out DIR (default labkit/data), --corpus FILE (default labkit/data/tiny_corpus.txt).

What it does, all offline and seeded:
1. trains a byte-level BPE tokenizer (vocabulary 1024) on the corpus with the `tokenizers`
   package; 1 paragraph in 10 is held out as validation text;
2. trains a ~0.9 M-parameter decoder (labkit.decoder.Decoder: 4 layers, width 128, RoPE,
   grouped-query attention, SwiGLU; the same architecture as SmolLM2) with AdamW, batch
   16 x 128 tokens, linear warm-up then cosine decay of the learning rate;
3. writes into --out:
   tiny_gpt.safetensors       the weights (fp32, ~3.7 MB; the tied head is stored once)
   tiny_gpt.json              the model config, special tokens and how it was trained
   tiny_gpt_tokenizer.json    the tokenizer
   tiny_gpt_loss.csv          the loss curve: step, elapsed_s, lr, train_loss, val_loss

The result is deterministic for a given seed and thread count on the same machine and
library versions (floating-point sums depend on how work is split across threads).
Load it with `labkit.inference.language_model.load_tiny_gpt()`.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from labkit.inference.decoder import Decoder, DecoderConfig, init_weights  # noqa: E402

EOS = "<|endoftext|>"
VOCAB_SIZE = 1024
CONFIG = {"vocab_size": VOCAB_SIZE, "d_model": 128, "n_layers": 4, "n_heads": 4,
          "n_kv_heads": 2, "d_ff": 352, "max_seq_len": 256, "rope_theta": 10000.0,
          "norm_eps": 1e-5, "tie_embeddings": True}
BATCH, SEQ = 16, 128
LR, WARMUP, MIN_LR_FRACTION, WEIGHT_DECAY = 3e-3, 30, 0.1, 0.1
EVAL_EVERY, EVAL_BATCHES = 25, 8


def split_paragraphs(text: str) -> tuple[str, str]:
    """Training and validation text: every 10th paragraph (blank-line separated) is held out."""
    paragraphs = [p.strip() for p in text.split("\n\n") if p.strip()]
    train = [p for i, p in enumerate(paragraphs) if i % 10 != 7]
    val = [p for i, p in enumerate(paragraphs) if i % 10 == 7]
    return "\n\n".join(train) + "\n\n", "\n\n".join(val) + "\n\n"


def train_tokenizer(text: str):
    """A byte-level BPE tokenizer with VOCAB_SIZE ids, the end-of-text token included."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator([text], trainer=trainer)
    return tok


def batches(data: torch.Tensor, gen: torch.Generator, batch: int = BATCH, seq: int = SEQ):
    """A random batch of (input, target) windows of ``seq`` tokens from ``data``."""
    starts = torch.randint(0, len(data) - seq - 1, (batch,), generator=gen)
    x = torch.stack([data[s:s + seq] for s in starts.tolist()])
    y = torch.stack([data[s + 1:s + seq + 1] for s in starts.tolist()])
    return x, y


def lr_at(step: int, steps: int) -> float:
    """Linear warm-up for WARMUP steps, then cosine decay to MIN_LR_FRACTION of LR."""
    if step < WARMUP:
        return LR * (step + 1) / WARMUP
    progress = (step - WARMUP) / max(1, steps - WARMUP)
    return LR * (MIN_LR_FRACTION + (1 - MIN_LR_FRACTION) * 0.5 * (1 + math.cos(math.pi * progress)))


@torch.no_grad()
def evaluate(model: Decoder, data: torch.Tensor, seed: int) -> float:
    """Mean loss on EVAL_BATCHES fixed batches of ``data`` (same batches every time)."""
    model.eval()
    gen = torch.Generator().manual_seed(seed + 1)
    losses = []
    for _ in range(EVAL_BATCHES):
        x, y = batches(data, gen)
        logits = model(x)
        losses.append(F.cross_entropy(logits.view(-1, logits.shape[-1]), y.view(-1)).item())
    model.train()
    return sum(losses) / len(losses)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=REPO / "labkit" / "data")
    parser.add_argument("--corpus", type=Path, default=REPO / "labkit" / "data" / "tiny_corpus.txt")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be >= 1")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    text = args.corpus.read_text(encoding="utf-8")
    train_text, val_text = split_paragraphs(text)

    t0 = time.perf_counter()
    tok = train_tokenizer(train_text)
    train_ids = torch.tensor(tok.encode(train_text).ids, dtype=torch.long)
    val_ids = torch.tensor(tok.encode(val_text).ids, dtype=torch.long)
    print(f"corpus: {len(text):,} characters; tokenizer: {tok.get_vocab_size()} ids "
          f"({time.perf_counter() - t0:.1f} s); train {len(train_ids):,} tokens, "
          f"validation {len(val_ids):,} tokens")

    config = DecoderConfig(**CONFIG)
    model = init_weights(Decoder(config), seed=args.seed).train()
    n_params = model.num_params()
    decay = [p for n, p in model.named_parameters() if p.dim() == 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=LR, betas=(0.9, 0.95), eps=1e-8)
    gen = torch.Generator().manual_seed(args.seed)
    print(f"model: {n_params:,} parameters, {config.n_layers} layers, d={config.d_model}; "
          f"{args.steps} steps of {BATCH}x{SEQ} tokens, {args.threads} thread(s)")

    rows = []
    start = time.perf_counter()
    val_loss = evaluate(model, val_ids, args.seed)
    rows.append({"step": 0, "elapsed_s": 0.0, "lr": 0.0, "train_loss": "",
                 "val_loss": round(val_loss, 4)})
    for step in range(1, args.steps + 1):
        lr = lr_at(step - 1, args.steps)
        for group in opt.param_groups:
            group["lr"] = lr
        x, y = batches(train_ids, gen)
        logits = model(x)
        loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), y.view(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        row = {"step": step, "elapsed_s": round(time.perf_counter() - start, 2),
               "lr": round(lr, 6), "train_loss": round(loss.item(), 4), "val_loss": ""}
        if step % EVAL_EVERY == 0 or step == args.steps:
            row["val_loss"] = round(evaluate(model, val_ids, args.seed), 4)
            print(f"step {step:4d}  {row['elapsed_s']:6.1f} s  lr {lr:.2e}  "
                  f"train {row['train_loss']:.3f}  val {row['val_loss']:.3f}", flush=True)
        rows.append(row)
    train_s = time.perf_counter() - start

    args.out.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()
             if not (config.tie_embeddings and k == "lm_head.weight")}
    save_file(state, str(args.out / "tiny_gpt.safetensors"), metadata={"format": "pt"})
    tok.save(str(args.out / "tiny_gpt_tokenizer.json"))
    with open(args.out / "tiny_gpt_loss.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, lineterminator="\n",
                                fieldnames=["step", "elapsed_s", "lr", "train_loss", "val_loss"])
        writer.writeheader()
        writer.writerows(rows)
    tail = [r["train_loss"] for r in rows[-20:] if r["train_loss"] != ""]
    meta = {
        "name": "tiny-gpt",
        "config": config.to_dict(),
        "eos_token": EOS,
        "pad_token": EOS,
        "params": n_params,
        "corpus": args.corpus.name,
        "corpus_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "training": {
            "command": "python scripts/train_tiny_model.py "
                       f"--steps {args.steps} --seed {args.seed} --threads {args.threads}",
            "steps": args.steps, "seed": args.seed, "threads": args.threads,
            "batch_size": BATCH, "seq_len": SEQ, "tokens_seen": args.steps * BATCH * SEQ,
            "train_tokens": len(train_ids), "val_tokens": len(val_ids),
            "optimizer": f"AdamW lr {LR} (warm-up {WARMUP} steps, cosine to "
                         f"{MIN_LR_FRACTION} x), betas (0.9, 0.95), weight decay {WEIGHT_DECAY}",
            "train_seconds": round(train_s, 1),
            "final_train_loss_mean_last_20": round(sum(tail) / len(tail), 4),
            "final_val_loss": rows[-1]["val_loss"],
            "initial_val_loss": rows[0]["val_loss"],
            "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, "
                       f"torch {torch.__version__}",
        },
    }
    (args.out / "tiny_gpt.json").write_text(json.dumps(meta, indent=2) + "\n")
    size = (args.out / "tiny_gpt.safetensors").stat().st_size
    print(f"trained in {train_s:.1f} s; final train loss (mean of last 20 steps) "
          f"{meta['training']['final_train_loss_mean_last_20']:.3f}, validation "
          f"{rows[-1]['val_loss']:.3f}; wrote {args.out} ({size / 1e6:.2f} MB of weights)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
