"""The features of extractive QA (``extractive_qa``): tokenized windows with their targets and offsets."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from specrun.runner.batching import Encoded


@dataclass
class QAFeatures(Encoded):
    """Tokenized windows (one per overflowing window of a question's context), with their targets and the
    character offsets of their context tokens (None for question and special tokens)."""

    example_index: np.ndarray = None
    start_positions: np.ndarray = None
    end_positions: np.ndarray = None
    offsets: list = None
    examples: object = None
    #: {reason: questions} left out of training, or answered with the empty answer in evaluation.
    skipped: dict = field(default_factory=dict)
    #: Positions (in ``examples``) of evaluation questions no window was made for (answered empty).
    unanswered: tuple = ()
