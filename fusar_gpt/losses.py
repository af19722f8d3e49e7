"""The training loss: cross-entropy over the supervised answer tokens, weighted per token, per answer or by the
square root of an answer's length, and reduced over every process so N processes compute one process's loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .inputs import IGNORE_INDEX

LOSS_POWER = {"answer": 0.0, "sqrt": 0.5}   # loss_per -> exponent of an answer's length in its total weight


def answer_weights(target: torch.Tensor, power: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight per target position, total weight) for ``loss_per: answer`` (``power`` 0) and ``sqrt`` (0.5): each
    supervised answer (one contiguous run of labels) of n tokens weighs n**power in total, spread evenly over its
    tokens. Why: in a conversation a caption holds ~100 tokens and a count answer 2, so a token mean (power 1)
    teaches almost only captions and box lists, while one weight per answer (power 0) gives a caption token 1/100
    of a count token and long answers are barely learned; the square root (InternVL 2.5's "square averaging")
    sits between the two."""
    mask = target != IGNORE_INDEX
    first = mask & ~F.pad(mask[:, :-1], (1, 0), value=False)
    span = torch.cumsum(first.flatten().long(), 0).view_as(target) * mask  # 1.. per answer, 0 off answers
    sizes = torch.bincount(span.flatten()).float()
    sizes[0] = 1
    total = (sizes[1:] ** power).sum() if power else first.sum()
    return mask * sizes[span] ** (power - 1.0), total


def token_loss(model, batch, accelerator, per: str = "token") -> tuple[torch.Tensor, float, int]:
    """(loss to backpropagate, global mean loss, global supervised tokens) for one micro-batch. ``per="token"``:
    the mean over supervised tokens; ``per="answer"``: the mean over answers of each answer's token mean;
    ``per="sqrt"``: each answer's token mean weighted by the square root of its length."""
    labels = batch.pop("labels")
    logits = model(**batch).logits[:, :-1].float()
    target = labels[:, 1:].to(logits.device)
    n_tokens = (target != IGNORE_INDEX).sum()
    if per in LOSS_POWER:
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                             ignore_index=IGNORE_INDEX, reduction="none")
        weights, n_local = answer_weights(target, LOSS_POWER[per])
        loss_sum = (ce * weights.reshape(-1)).sum()
    else:
        loss_sum = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                                   ignore_index=IGNORE_INDEX, reduction="sum")
        n_local = n_tokens
    stats = torch.stack([loss_sum.detach().float(), n_local.float(), n_tokens.float()])
    if accelerator.num_processes > 1:
        stats = accelerator.reduce(stats, "sum")
    n_global = max(float(stats[1]), 1.0)
    # DDP averages gradients over processes; scaling by N / n_global makes that the global mean
    return loss_sum * accelerator.num_processes / n_global, float(stats[0]) / n_global, int(stats[2])
