"""The training loop of chapter 02: checkpoints, and a simulated crash.

Everything here works on the course's own decoder (:mod:`labkit.inference.decoder`) and the
text of the tiny model (``labkit/data/tiny_corpus.txt``), on CPU, in seconds:

- :class:`TrainRun`, :func:`train` and :func:`resume` run a small seeded training job that
  writes checkpoints (model, optimizer, step, random state) every ``checkpoint_every`` steps
  and can be made to crash at a given step, so the work lost and the cost of checkpointing
  can be measured.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from labkit.inference.decoder import Decoder, DecoderConfig, init_weights


class SimulatedCrash(RuntimeError):
    """Raised by :func:`train` at ``crash_at_step``: the process "dies" there."""

    def __init__(self, step: int) -> None:
        super().__init__(f"simulated crash at step {step}")
        self.step = step


def corpus_tokens(tokenizer=None) -> torch.Tensor:
    """The tiny model's corpus as token ids (1-D int64), with the tiny model's tokenizer
    unless another :class:`~labkit.inference.tokenizer.Tokenizer` is given."""
    from labkit.inference.language_model import DATA_DIR, TINY_FILES
    from labkit.inference.tokenizer import Tokenizer

    if tokenizer is None:
        tokenizer = Tokenizer(DATA_DIR / TINY_FILES["tokenizer"], "<|endoftext|>")
    text = (DATA_DIR / "tiny_corpus.txt").read_text(encoding="utf-8")
    return torch.tensor(tokenizer.encode(text), dtype=torch.long)


def random_batch(data: torch.Tensor, batch_size: int, seq_len: int,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_size`` random windows of ``seq_len`` tokens and their next-token targets."""
    if data.dim() != 1 or len(data) < seq_len + 2:
        raise ValueError(f"data must be a 1-D tensor of more than {seq_len + 1} token ids")
    starts = torch.randint(0, len(data) - seq_len - 1, (batch_size,), generator=generator)
    x = torch.stack([data[s:s + seq_len] for s in starts.tolist()])
    y = torch.stack([data[s + 1:s + seq_len + 1] for s in starts.tolist()])
    return x, y


@dataclass
class TrainRun:
    """A small training job: model, optimizer, the batch sampler's random state, progress.

    Attributes:
        net: the :class:`~labkit.inference.decoder.Decoder` being trained.
        optimizer: its AdamW optimizer.
        generator: the random generator that picks the batches (part of the checkpoint, so a
            resumed run sees the same batches as an uninterrupted one).
        step: optimizer steps done.
        losses: the training loss of every step done, in order.
        checkpoints: ``(step, path, bytes, seconds to write)`` of every checkpoint written.
    """

    net: Decoder
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    step: int = 0
    losses: list[float] = field(default_factory=list)
    checkpoints: list[tuple[int, Path, int, float]] = field(default_factory=list)

    @classmethod
    def new(cls, config: DecoderConfig, seed: int = 0, lr: float = 3e-3) -> TrainRun:
        """A freshly initialised run (seeded: two runs with one seed are identical)."""
        net = init_weights(Decoder(config), seed=seed).train()
        optimizer = torch.optim.AdamW(net.parameters(), lr=lr, betas=(0.9, 0.95))
        return cls(net, optimizer, torch.Generator().manual_seed(seed))

    def save(self, path: str | Path) -> tuple[int, float]:
        """Write a checkpoint (weights, optimizer state, step, random state, losses);
        return its size in bytes and the seconds the write took (fsync included)."""
        path = Path(path)
        state = {"model": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "step": self.step, "generator": self.generator.get_state(),
                 "losses": list(self.losses), "config": self.net.config.to_dict()}
        start = time.perf_counter()
        with open(path, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        seconds = time.perf_counter() - start
        size = path.stat().st_size
        self.checkpoints.append((self.step, path, size, seconds))
        return size, seconds


def train(run: TrainRun, data: torch.Tensor, until_step: int, *, batch_size: int = 8,
          seq_len: int = 64, checkpoint_every: int | None = None,
          checkpoint_dir: str | Path | None = None, crash_at_step: int | None = None
          ) -> TrainRun:
    """Train ``run`` until it has done ``until_step`` steps.

    With ``checkpoint_every`` and ``checkpoint_dir``, writes ``step-NNNNN.pt`` after every
    ``checkpoint_every``-th step. With ``crash_at_step``, raises :class:`SimulatedCrash`
    when that step is about to start, as if the process had been killed: whatever was done
    since the last checkpoint is lost with it.
    """
    if checkpoint_every is not None and (checkpoint_dir is None or checkpoint_every < 1):
        raise ValueError("checkpoint_every needs checkpoint_dir and must be >= 1")
    run.net.train()
    while run.step < until_step:
        if crash_at_step is not None and run.step + 1 == crash_at_step:
            raise SimulatedCrash(crash_at_step)
        x, y = random_batch(data, batch_size, seq_len, run.generator)
        logits = run.net(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()
        run.step += 1
        run.losses.append(loss.item())
        if checkpoint_every and run.step % checkpoint_every == 0:
            run.save(Path(checkpoint_dir) / f"step-{run.step:05d}.pt")
    return run


def latest_checkpoint(checkpoint_dir: str | Path) -> Path | None:
    """The checkpoint with the highest step in ``checkpoint_dir``, or None."""
    found = sorted(Path(checkpoint_dir).glob("step-*.pt"))
    return found[-1] if found else None


def resume(path: str | Path, lr: float = 3e-3) -> TrainRun:
    """A :class:`TrainRun` restored from a checkpoint written by :meth:`TrainRun.save`
    (loaded with ``weights_only=True``: tensors and plain data only, no code)."""
    state = torch.load(path, weights_only=True)
    config = DecoderConfig.from_dict(state["config"])
    net = Decoder(config)
    net.load_state_dict(state["model"])
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, betas=(0.9, 0.95))
    optimizer.load_state_dict(state["optimizer"])
    generator = torch.Generator()
    generator.set_state(state["generator"])
    return TrainRun(net.train(), optimizer, generator, step=int(state["step"]),
                    losses=list(state["losses"]))
