"""Turning examples into padded tensors, and sampling mixed-task batches.

A `TaskData` holds a whole (small) dataset as padded tensors on the training device:
sources [N s], targets [N t] (BOS … EOS) and task ids [N]. Sampling a batch is one
`torch.randint` plus indexing, so data loading costs nothing next to the model.
Batches mix tasks (paper: "batches mix tasks"), each example carrying its own task id.

Denoising pre-training (BART's objective, simplified to token masking) corrupts sources on
the fly: every sampled batch gets a fresh mask, so the model sees many corruptions of each
sentence and memorises the facts the corpus states.

Read next: `minimoe/train.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from minimoe.errors import DataError


@dataclass
class Batch:
    """One training batch: src [b s], tgt_in [b t], labels [b t] (tgt shifted), task [b]."""

    src: Tensor
    tgt_in: Tensor
    labels: Tensor
    task: Tensor


def pad_sequences(seqs: Sequence[Sequence[int]], pad_id: int, max_len: int, what: str) -> Tensor:
    """Right-pad token lists into a LongTensor [N max(len)]; too long → DataError with the fix."""
    longest = max((len(s) for s in seqs), default=1)
    if longest > max_len:
        raise DataError(f"a {what} sequence has {longest} tokens but max_len={max_len}; "
                        f"raise --max_len to at least {longest}.")
    out = torch.full((len(seqs), max(longest, 1)), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out


class TaskData:
    """A dataset of (source, target, task id) as padded tensors.

    sources / targets are texts; targets are wrapped as BOS … EOS, sources end with EOS.
    """

    def __init__(self, tokenizer, sources: Sequence[str], targets: Sequence[str],
                 task_ids: Sequence[int], max_len: int, device: torch.device | str = "cpu"):
        if not (len(sources) == len(targets) == len(task_ids)) or not sources:
            raise DataError(f"TaskData needs equally many sources, targets and task ids (got "
                            f"{len(sources)}, {len(targets)}, {len(task_ids)}), and at least one.")
        tok = tokenizer
        self.pad_id, self.mask_id, self.eos_id = tok.pad_id, tok.mask_id, tok.eos_id
        self.src = pad_sequences([tok.encode(s) + [tok.eos_id] for s in sources], tok.pad_id, max_len,
                                 "source").to(device)
        self.tgt = pad_sequences([[tok.bos_id] + tok.encode(t) + [tok.eos_id] for t in targets],
                                 tok.pad_id, max_len, "target").to(device)
        self.task = torch.tensor(list(task_ids), dtype=torch.long, device=device)

    def __len__(self) -> int:
        return self.src.shape[0]

    def _batch(self, idx: Tensor, src: Tensor | None = None) -> Batch:
        tgt = self.tgt[idx]
        src = self.src[idx] if src is None else src
        # Trim all-pad columns so short batches cost less.
        src = src[:, : int((src != self.pad_id).sum(1).max())]
        tgt = tgt[:, : int((tgt != self.pad_id).sum(1).max())]
        return Batch(src=src, tgt_in=tgt[:, :-1], labels=tgt[:, 1:], task=self.task[idx])

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        """A uniformly sampled mixed-task batch (with replacement)."""
        idx = torch.randint(len(self), (batch_size,), generator=generator).to(self.src.device)
        return self._batch(idx)

    def sample_denoising(self, batch_size: int, generator: torch.Generator, mask_prob: float) -> Batch:
        """A batch whose sources are the targets' words with a fresh random mask."""
        idx = torch.randint(len(self), (batch_size,), generator=generator).to(self.src.device)
        words = self.tgt[idx][:, 1:]  # drop BOS: the source is the sentence itself … EOS
        noise = torch.rand(words.shape, generator=generator).to(words.device)
        maskable = (words != self.pad_id) & (words != self.eos_id)
        src = torch.where(maskable & (noise < mask_prob), torch.full_like(words, self.mask_id), words)
        return self._batch(idx, src)

    def batches(self, batch_size: int):
        """All examples in order, in batches (for evaluation)."""
        for start in range(0, len(self), batch_size):
            yield self._batch(torch.arange(start, min(start + batch_size, len(self)), device=self.src.device))
