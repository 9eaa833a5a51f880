"""Tokenized examples and their batches: what the training loop, evaluation and prediction feed the model."""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from specrun.examples import Examples

if TYPE_CHECKING:
    import torch


class TokenCache:
    """Token ids of (text, pair) under one tokenizer and max_length, computed once per process."""

    #: {tokenizer: {max_length: {(text, pair): (ids, token types)}}}, dropped with the tokenizer.
    _caches: ClassVar[weakref.WeakKeyDictionary] = weakref.WeakKeyDictionary()

    def __init__(self, tokenizer: Any, max_length: int):
        self.tokenizer = tokenizer
        self.max_length = max_length
        try:
            per_tokenizer = self._caches.setdefault(tokenizer, {})
        except TypeError:  # an object that takes no weak references: a cache of its own
            per_tokenizer = {}
        self.cache = per_tokenizer.setdefault(max_length, {})

    def encode(self, examples: Examples) -> list[tuple[list[int], list[int] | None]]:
        pairs = examples.text_pair or (None,) * len(examples)
        keys = list(zip(examples.text, pairs))
        missing = list(dict.fromkeys(k for k in keys if k not in self.cache))
        for start in range(0, len(missing), 4096):
            chunk = missing[start : start + 4096]
            texts = [k[0] for k in chunk]
            second = [k[1] for k in chunk] if chunk[0][1] is not None else None
            enc = self.tokenizer(texts, second, truncation=True, max_length=self.max_length)
            types = enc.get("token_type_ids")
            for i, key in enumerate(chunk):
                self.cache[key] = (enc["input_ids"][i], types[i] if types is not None else None)
        return [self.cache[k] for k in keys]


@dataclass
class Encoded:
    """Tokenized examples ready for batching."""

    ids: list[list[int]]
    types: list[list[int] | None]
    labels: np.ndarray
    lengths: np.ndarray
    pad_id: int

    @classmethod
    def build(cls, examples: Examples, cache: TokenCache) -> Encoded:
        encoded = cache.encode(examples)
        ids = [e[0] for e in encoded]
        return cls(
            ids=ids,
            types=[e[1] for e in encoded],
            labels=np.asarray(examples.label, dtype=np.int64),
            lengths=np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids)),
            pad_id=_pad_id(cache.tokenizer),
        )

    def __len__(self) -> int:
        return len(self.ids)

    def collate(self, index: np.ndarray, device: torch.device) -> dict[str, torch.Tensor]:
        """Pad the examples at ``index`` to their longest (dynamic padding)."""
        import torch

        width = int(self.lengths[index].max())
        input_ids = np.full((len(index), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(index), width), dtype=np.int64)
        has_types = self.types[index[0]] is not None
        types = np.zeros((len(index), width), dtype=np.int64) if has_types else None
        for row, i in enumerate(index):
            n = self.lengths[i]
            input_ids[row, :n] = self.ids[i]
            mask[row, :n] = 1
            if has_types:
                types[row, :n] = self.types[i]
        batch = {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(mask)}
        if has_types:
            batch["token_type_ids"] = torch.from_numpy(types)
        return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _pad_id(tokenizer) -> int:
    """The id batches are padded with: the tokenizer's pad token (``load_tokenizer`` gives decoders their
    end-of-sequence token), never a made-up id that is a real word."""
    if tokenizer.pad_token_id is None:
        from specrun.core.roles import ensure_pad_token

        ensure_pad_token(tokenizer)
    return tokenizer.pad_token_id


def train_batches(
    lengths: np.ndarray, batch_size: int, rng: np.random.Generator, group_by_length: bool
) -> list[np.ndarray]:
    """One epoch of batch indices: shuffled, and (by default) grouped by length like HF's
    LengthGroupedSampler: sort within mega-batches of 50 batches, longest batch first."""
    order = rng.permutation(len(lengths))
    if not group_by_length:
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    mega = batch_size * 50
    batches = []
    for start in range(0, len(order), mega):
        chunk = order[start : start + mega]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    if batches:
        longest = max(range(len(batches)), key=lambda b: lengths[batches[b]].max())
        batches[0], batches[longest] = batches[longest], batches[0]
    return batches


def eval_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Evaluation batches sorted by length (no shuffling needed), so padding is minimal."""
    order = np.argsort(lengths, kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
