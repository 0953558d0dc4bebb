"""Training memory by phase (chapter 02): what one training step of the course's decoder holds.

:func:`measure_training_memory` counts the bytes a training step holds, phase by phase: the
weights (all inference needs), then the gradients and the activations saved for the backward
pass, then the optimizer's state after an AdamW step. It counts tensors exactly (no allocator
noise; shared storage once, :func:`labkit.machine.dtypes.tensor_bytes`), so the bytes per
parameter can be set beside :func:`labkit.planning.memory.training_breakdown`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from labkit.inference.decoder import Decoder
from labkit.machine.dtypes import tensor_bytes


def measure_training_memory(net: Decoder, tokens: torch.Tensor, targets: torch.Tensor,
                            lr: float = 1e-3) -> dict:
    """Bytes held at each phase of one training step of ``net`` on one batch.

    Returns a dict with, in bytes: ``weights``; ``gradients`` (after ``backward``);
    ``activations`` (the tensors autograd saved for the backward pass, counted once per
    storage: they are alive between the forward and the backward); ``optimizer_states``
    (AdamW's two moments, after one ``step``); and ``n_params``. The model's weights are
    restored afterwards, so the call leaves ``net`` as it was. Everything is float32.
    """
    params = [p for p in net.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters (requires_grad is off)")
    before = {k: v.detach().clone() for k, v in net.state_dict().items()}
    net.train()
    saved: list[torch.Tensor] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logits = net(tokens)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
    weight_storages = {p.untyped_storage().data_ptr() for p in params}
    activations = tensor_bytes(t for t in saved
                                if t.untyped_storage().data_ptr() not in weight_storages)
    saved.clear()
    optimizer = torch.optim.AdamW(params, lr=lr)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    gradients = tensor_bytes(p.grad for p in params)
    optimizer.step()
    states = tensor_bytes(v for s in optimizer.state.values() for v in s.values()
                           if isinstance(v, torch.Tensor) and v.numel() > 1)
    with torch.no_grad():
        net.load_state_dict(before)
    for p in params:
        p.grad = None
    net.eval()
    return {"n_params": sum(p.numel() for p in params), "weights": tensor_bytes(params),
            "gradients": gradients, "activations": activations, "optimizer_states": states}
