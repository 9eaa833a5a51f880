"""Built-in ``extractive_qa`` task: extractive question answering the way SQuAD systems do it.

- Inputs: question + context, the context alone truncated (``truncation="only_second"``), long contexts
  cut into overlapping windows (``doc_stride`` tokens of overlap, overflowing tokens kept), each token's
  character offsets kept to map a span back to the context. ``doc_stride`` must be below half of
  ``model.max_length``; a spec that does not set it gets the largest such value up to 128
  (``min(128, max_length // 2 - 1)``: 63 at the default ``max_length`` 128, 128 from ``max_length`` 258
  on, as in Hugging Face's ``run_qa`` at 384), written into the run's config; one the spec sets is kept,
  and refused at ``validate`` when it does not fit.
- Training targets: the start and end token of the first reference answer in each window; a window that
  does not hold the whole answer points both at the ``[CLS]`` token (index of ``cls_token_id``).
- Head: ``AutoModelForQuestionAnswering`` (start and end logits per token); loss: the mean of the start
  and end cross-entropies.
- Predictions: per question, over all its windows, the ``n_best`` highest start and end logits give
  candidate spans inside the context, ``end >= start``, at most ``max_answer_length`` tokens; the best
  (start + end logit) is the answer, its score the softmax of that sum over the candidates. No candidate:
  the empty answer.
- Metrics: the official SQuAD v1.1 exact match and F1 (``squad_metric``), as fractions; ``loss``;
  ``n_examples`` (questions).
- Stored rows (``qa_predictions``): per question id, the predicted text, its score, EM and F1, and the
  reference answers.

What cannot be used is counted, never dropped in silence (``skipped``; recorded on the run): a question
too long to leave a window of more than ``doc_stride`` context tokens within ``model.max_length``
(training: left out; evaluation: answered with the empty answer, so it scores 0), and a training
question whose answer lies inside no window (left out).
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, ClassVar

from pydantic import Field

from specrun.core.squad import question_scores
from specrun.errors import DataError
from specrun.hookspecs import hookimpl
from specrun.plugins.api import PluginOptions, TaskContext, TaskEvaluation, TaskPlugin

if TYPE_CHECKING:  # numpy and the features class are imported where examples are encoded or scored
    from specrun.plugins.tasks.qa_features import QAFeatures

#: Why prompt tuning is refused: peft prepends a soft prompt only through its task wrappers, and its
#: question-answering one (``PeftModelForQuestionAnswering``, peft 0.21) never passes ``token_type_ids``
#: on, so BERT-like models would lose the question/context segments that every other method keeps.
_PROMPT_TUNING = (
    "peft prepends the soft prompt to a QA model only through its question-answering wrapper, which drops "
    "token_type_ids (the question/context segments BERT-like models read) and returns start/end logits over "
    "the virtual tokens too: the model would silently differ from the one the other methods train"
)


#: ``doc_stride`` when the spec does not set it and ``model.max_length`` leaves room (258 tokens or more):
#: Hugging Face's ``run_qa`` default (with ``max_length`` 384).
DOC_STRIDE = 128


def default_doc_stride(max_length: int) -> int:
    """The ``doc_stride`` of a spec that does not set it: the largest the task accepts with ``max_length``
    (below ``max_length // 2``), at most ``DOC_STRIDE`` (128, reached from ``max_length`` 258 on; every
    run that could use the old fixed default keeps it, and so its run id)."""
    return max(0, min(DOC_STRIDE, max_length // 2 - 1))


class QAOptions(PluginOptions):
    doc_stride: int = Field(
        DOC_STRIDE,
        ge=0,
        description=(
            "tokens of overlap between consecutive windows of a long context; below half of model.max_length "
            "(default: 128, or model.max_length // 2 - 1 when that is smaller)"
        ),
    )
    max_answer_length: int = Field(30, ge=1, description="the longest answer span predicted, in tokens")
    n_best: int = Field(20, ge=1, le=200, description="start and end candidates considered per window")


def __getattr__(name: str):
    """``QAFeatures`` lives in ``qa_features`` (it needs numpy, which listing and planning must not import)."""
    if name == "QAFeatures":
        from specrun.plugins.tasks.qa_features import QAFeatures

        return QAFeatures
    raise AttributeError(name)


class ExtractiveQA(TaskPlugin):
    name = "extractive_qa"
    description = (
        "extractive QA (SQuAD): question + context windows, start/end logits, n-best spans, SQuAD v1.1 EM / F1"
    )
    Options = QAOptions
    metrics = ("f1", "exact_match", "loss", "n_examples")
    train_metric = "span_accuracy"
    prediction_table = "qa_predictions"
    auto_model = "AutoModelForQuestionAnswering"
    refused: ClassVar[dict[str, dict[str, str]]] = {
        "method": {"prompt_tuning": _PROMPT_TUNING},
    }

    def examples_problem(self, examples) -> str | None:
        from specrun.core.qa import QAExamples

        if not isinstance(examples, QAExamples):
            return (
                'extractive_qa needs questions with contexts and answers (dataset "squad", or "local" with SQuAD-format '
                f"JSON files), not {type(examples).__name__}"
            )
        return None

    def resolve_options(self, options: QAOptions, max_length: int) -> QAOptions:
        """``options`` with a ``doc_stride`` the spec does not set fitted to ``model.max_length``
        (``default_doc_stride``); one the spec sets is kept, and ``check`` judges it."""
        if "doc_stride" in options.model_fields_set:
            return options
        return options.model_copy(update={"doc_stride": default_doc_stride(max_length)})

    def check(self, options: QAOptions, max_length: int) -> list[tuple[str, str]]:
        """Problems of these options with ``model.max_length``, as (option, message)."""
        if options.doc_stride >= max_length // 2:
            return [
                (
                    "doc_stride",
                    f"doc_stride {options.doc_stride} leaves too little room for the context: windows hold at most "
                    f"model.max_length = {max_length} tokens with the question; use less than {max_length // 2}, "
                    f"or leave doc_stride out (its default, {default_doc_stride(max_length)} here, fits model.max_length)",
                )
            ]
        return []

    def load_model(self, ctx, **kwargs):
        from transformers import AutoModelForQuestionAnswering

        from specrun.runner.modeling import quiet_load

        with quiet_load():
            try:
                return AutoModelForQuestionAnswering.from_pretrained(ctx.model_path, **kwargs)
            except OSError as exc:
                raise DataError(f"cannot load model {ctx.model_path!r}: {exc}") from None
            except ValueError as exc:
                raise DataError(
                    f"model {ctx.model_path!r} has no question-answering head in transformers: {exc}"
                ) from None

    # --- inputs ----------------------------------------------------------------------------------

    def encode(self, examples, ctx: TaskContext, training: bool) -> QAFeatures:
        import numpy as np

        from specrun.plugins.tasks.qa_features import QAFeatures

        tok, options, max_length = ctx.tokenizer, ctx.options, ctx.max_length
        if not getattr(tok, "is_fast", False):
            raise DataError(
                f"extractive_qa needs a fast tokenizer (for character offsets); {type(tok).__name__} is not one"
            )
        if getattr(tok, "padding_side", "right") != "right":
            raise DataError(
                "extractive_qa puts the question first and the context second; this tokenizer pads on the left"
            )
        n = len(examples)
        pad = tok.pad_token_id or 0
        if not n:
            return QAFeatures(
                [],
                [],
                np.zeros(0, np.int64),
                np.zeros(0, np.int64),
                pad,
                np.zeros(0, np.int64),
                np.zeros(0, np.int64),
                np.zeros(0, np.int64),
                [],
                examples,
                {},
            )
        question_tokens = tok(list(examples.question), add_special_tokens=False)["input_ids"]
        special = tok.num_special_tokens_to_add(pair=True)
        fits = [max_length - special - len(q) > options.doc_stride for q in question_tokens]
        skipped: dict[str, int] = {}
        kept = [i for i in range(n) if fits[i]]
        if len(kept) < n:
            skipped["question_too_long"] = n - len(kept)
        features = _windows(tok, examples, kept, max_length, options.doc_stride)
        if training:
            answered = {
                features["example"][f]
                for f in range(len(features["ids"]))
                if features["start"][f] != features["cls"][f]
            }
            missing = {i for i in kept if i not in answered}
            if missing:
                skipped["answer_in_no_window"] = len(missing)
                features = {
                    k: [v[f] for f in range(len(features["ids"])) if features["example"][f] not in missing]
                    for k, v in features.items()
                }
        covered = set(features["example"])
        ids = features["ids"]
        return QAFeatures(
            ids=ids,
            types=features["types"],
            labels=np.zeros(len(ids), dtype=np.int64),
            lengths=np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids)),
            pad_id=pad,
            example_index=np.asarray(features["example"], dtype=np.int64),
            start_positions=np.asarray(features["start"], dtype=np.int64),
            end_positions=np.asarray(features["end"], dtype=np.int64),
            offsets=features["offsets"],
            examples=examples,
            skipped=skipped,
            unanswered=tuple(i for i in range(n) if i not in covered),
        )

    def skipped(self, features: QAFeatures) -> dict[str, int]:
        return dict(features.skipped)

    # --- training --------------------------------------------------------------------------------

    def loss(self, model, features: QAFeatures, index, batch, ctx, precision, device):
        import torch

        from specrun.runner.modeling import autocast

        starts = torch.from_numpy(features.start_positions[index]).to(device)
        ends = torch.from_numpy(features.end_positions[index]).to(device)
        with autocast(precision, device):
            out = model(**batch)
        start_logits, end_logits = out.start_logits.float(), out.end_logits.float()
        loss = (_cross_entropy(start_logits, starts, batch) + _cross_entropy(end_logits, ends, batch)) / 2
        right = ((start_logits.detach().argmax(-1) == starts) & (end_logits.detach().argmax(-1) == ends)).sum()
        return loss.mean(), right

    # --- evaluation ------------------------------------------------------------------------------

    def evaluate(self, model, features: QAFeatures, ctx: TaskContext, batch_size, precision, device) -> TaskEvaluation:
        import numpy as np
        import torch

        from specrun.runner.batching import eval_batches
        from specrun.runner.modeling import autocast

        began = time.perf_counter()
        was_training = model.training
        model.eval()
        starts: list = [None] * len(features)
        ends: list = [None] * len(features)
        losses = np.zeros(len(features))
        with torch.inference_mode():
            for index in eval_batches(features.lengths, batch_size):
                batch = features.collate(index, device)
                with autocast(precision, device):
                    out = model(**batch)
                sl, el = out.start_logits.float(), out.end_logits.float()
                sp = torch.from_numpy(features.start_positions[index]).to(device)
                ep = torch.from_numpy(features.end_positions[index]).to(device)
                losses[index] = ((_cross_entropy(sl, sp, batch) + _cross_entropy(el, ep, batch)) / 2).cpu().numpy()
                sl, el = sl.cpu().numpy(), el.cpu().numpy()
                for row, f in enumerate(index):
                    width = features.lengths[f]
                    starts[f], ends[f] = sl[row, :width], el[row, :width]
        if was_training:
            model.train()
        answers = postprocess(features, starts, ends, ctx.options.n_best, ctx.options.max_answer_length)
        return self.scored(
            features.examples, answers, float(losses.mean()) if len(losses) else 0.0, time.perf_counter() - began
        )

    def best_spans(
        self, features: QAFeatures, starts: list, ends: list, options: QAOptions
    ) -> list[tuple[str, float, int]]:
        """(answer text, score, first character in the context; -1 for none) per question of ``features``,
        from each window's start and end logits (``predict`` and the app use it)."""
        return best_spans(features, starts, ends, options.n_best, options.max_answer_length)

    def scored(self, examples, answers: list[tuple[str, float]], loss: float, seconds: float = 0.0) -> TaskEvaluation:
        """Metrics and rows of ``answers`` ((text, score) per question of ``examples``)."""
        import numpy as np

        em, f1 = [], []
        for i, (text, _) in enumerate(answers):
            e, f = question_scores(text, examples.answer_texts(i))
            em.append(e)
            f1.append(f)
        n = len(answers)
        metrics = {
            "f1": float(np.mean(f1)) if n else 0.0,
            "exact_match": float(np.mean(em)) if n else 0.0,
            "loss": loss,
            "n_examples": float(n),
        }
        rows = {
            "question_id": list(examples.ids),
            "prediction_text": [t for t, _ in answers],
            "score": [s for _, s in answers],
            "exact_match": em,
            "f1": f1,
            "answers": [json.dumps(examples.answer_texts(i), ensure_ascii=False) for i in range(n)],
        }
        return TaskEvaluation(metrics, rows, seconds)


def _cross_entropy(logits, targets, batch):
    """Per-window cross-entropy over the window's own tokens (padding masked out)."""
    import torch.nn.functional as F

    mask = batch["attention_mask"].bool()
    return F.cross_entropy(logits.masked_fill(~mask, -1e4), targets, reduction="none")


def _windows(tok, examples, kept: list[int], max_length: int, stride: int) -> dict[str, list]:
    """Every window of the questions at ``kept``: token ids, types, the question each belongs to, the
    start/end token of its first answer ([CLS] when the window does not hold it) and context offsets."""
    out = {k: [] for k in ("ids", "types", "example", "start", "end", "cls", "offsets")}
    for chunk in range(0, len(kept), 512):
        part = kept[chunk : chunk + 512]
        enc = tok(
            [examples.question[i] for i in part],
            [examples.context[i] for i in part],
            truncation="only_second",
            max_length=max_length,
            stride=stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
        )
        types = enc.get("token_type_ids")
        for f, sample in enumerate(enc["overflow_to_sample_mapping"]):
            i = part[sample]
            ids = enc["input_ids"][f]
            sequence = enc.sequence_ids(f)
            offsets = [tuple(o) if s == 1 else None for o, s in zip(enc["offset_mapping"][f], sequence)]
            cls = ids.index(tok.cls_token_id) if tok.cls_token_id in ids else 0
            context = [t for t, s in enumerate(sequence) if s == 1]
            start = end = cls
            text, char = examples.answers[i][0]
            first, last = char, char + len(text)
            if context and offsets[context[0]][0] <= first and offsets[context[-1]][1] >= last:
                s = context[0]
                while s <= context[-1] and offsets[s][0] <= first:
                    s += 1
                e = context[-1]
                while e >= context[0] and offsets[e][1] >= last:
                    e -= 1
                start, end = s - 1, e + 1
            out["ids"].append(ids)
            out["types"].append(types[f] if types is not None else None)
            out["example"].append(i)
            out["start"].append(start)
            out["end"].append(end)
            out["cls"].append(cls)
            out["offsets"].append(offsets)
    return out


def postprocess(
    features: QAFeatures, starts: list, ends: list, n_best: int, max_answer_length: int
) -> list[tuple[str, float]]:
    """(answer text, score) per question: the best valid span over all its windows (see the module
    docstring); ("", 0.0) for a question with no window or no valid span."""
    return [(text, score) for text, score, _ in best_spans(features, starts, ends, n_best, max_answer_length)]


def best_spans(
    features: QAFeatures, starts: list, ends: list, n_best: int, max_answer_length: int
) -> list[tuple[str, float, int]]:
    """(answer text, score, its first character in the context; -1 for none) per question."""
    import numpy as np

    examples = features.examples
    by_example: dict[int, list[int]] = {}
    for f, i in enumerate(features.example_index):
        by_example.setdefault(int(i), []).append(f)
    answers = []
    for i in range(len(examples)):
        candidates = []
        for f in by_example.get(i, []):
            sl, el, offsets = starts[f], ends[f], features.offsets[f]
            top_s = np.argsort(sl)[::-1][:n_best]
            top_e = np.argsort(el)[::-1][:n_best]
            for s in top_s:
                if offsets[s] is None:
                    continue
                for e in top_e:
                    if offsets[e] is None or e < s or e - s + 1 > max_answer_length:
                        continue
                    candidates.append((float(sl[s] + el[e]), offsets[s][0], offsets[e][1]))
        if not candidates:
            answers.append(("", 0.0, -1))
            continue
        candidates.sort(key=lambda c: -c[0])
        candidates = candidates[:n_best]
        logits = np.array([c[0] for c in candidates])
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        best = candidates[0]
        answers.append((examples.context[i][best[1] : best[2]], float(probs[0]), best[1]))
    return answers


@hookimpl
def register_tasks(register):
    register(ExtractiveQA())
