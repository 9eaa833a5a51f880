"""A toy extractive-QA task in the SQuAD v1.1 format, for tests of the ``extractive_qa`` task."""

from __future__ import annotations

import json
import random
from pathlib import Path

OBJECTS = ["car", "house", "boat", "door", "bike", "kite", "lamp", "chair", "cup", "hat", "shoe", "bag"]
COLORS = ["red", "blue", "green", "yellow", "black", "white", "orange", "purple", "brown", "pink"]


def toy_squad(n_articles: int, seed: int, sentences: int = 8) -> dict:
    """A SQuAD v1.1 tree: articles of paragraphs like "the car is red . the boat is blue ...", each with a
    question per object ("what color is the car ?") answered by its colour; some answers repeated as a
    second reference in upper case (normalisation makes them equal)."""
    rng = random.Random(seed)
    data = []
    for a in range(n_articles):
        paragraphs = []
        for p in range(3):
            objects = rng.sample(OBJECTS, sentences)
            colors = [rng.choice(COLORS) for _ in objects]
            parts, starts = [], []
            position = 0
            for obj, color in zip(objects, colors):
                sentence = f"the {obj} is {color} ."
                starts.append(position + len(f"the {obj} is "))
                parts.append(sentence)
                position += len(sentence) + 1
            context = " ".join(parts)
            qas = []
            for q, (obj, color, start) in enumerate(zip(objects, colors, starts)):
                answers = [{"answer_start": start, "text": color}]
                if q % 2:
                    answers.append({"answer_start": start, "text": color})
                qas.append({"id": f"s{seed}a{a}p{p}q{q}", "question": f"what color is the {obj} ?", "answers": answers})
            paragraphs.append({"context": context, "qas": qas})
        data.append({"title": f"Article_{seed}_{a}", "paragraphs": paragraphs})
    return {"version": "1.1", "data": data}


def write_toy_squad(folder: Path, train_articles: int = 12, dev_articles: int = 3) -> Path:
    """``train.json`` and ``dev.json`` of the toy task in ``folder``; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.json").write_text(json.dumps(toy_squad(train_articles, seed=1)))
    (folder / "dev.json").write_text(json.dumps(toy_squad(dev_articles, seed=2)))
    return folder


def qa_spec(
    model_dir: Path,
    data_dir: Path,
    *,
    method: str = 'name = "full"',
    train: str = "max_steps = 30",
    task: str = "doc_stride = 8",
    extra: str = "",
    max_length: int = 32,
    name: str = "toyqa",
) -> str:
    """A spec of the toy QA task on ``model_dir`` (contexts longer than ``max_length``: several windows)."""
    return f"""[experiment]
name = "{name}"

[task]
name = "extractive_qa"
{task}

[model]
name = "{model_dir}"
max_length = {max_length}

[data]
dataset = "local"

[data.options]
files = {{ train = "{data_dir / "train.json"}", validation = "{data_dir / "dev.json"}" }}

[method]
{method}

[train]
batch_size = 16
precision = "fp32"
learning_rate = 3e-3
{train}

{extra}
"""
