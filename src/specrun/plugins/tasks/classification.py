"""Built-in ``classification`` task: single-label sequence classification (the default task).

Texts (and text pairs) are tokenized once, truncated to ``model.max_length``; the head is
``AutoModelForSequenceClassification`` with one output per label; the loss is cross-entropy; the
prediction is the most probable label; metrics are accuracy, F1 (binary: of class 1, else macro), macro
F1, loss; a stored prediction row (``predictions``) holds the label, prediction, its probability and loss.
"""

from __future__ import annotations

import time

from specrun.errors import DataError
from specrun.hookspecs import hookimpl
from specrun.plugins.api import NoOptions, TaskContext, TaskEvaluation, TaskPlugin


class Classification(TaskPlugin):
    name = "classification"
    description = "single-label sequence classification: AutoModelForSequenceClassification, accuracy / F1"
    Options = NoOptions
    metrics = ("accuracy", "f1", "f1_macro", "loss", "n_examples")
    train_metric = "accuracy"
    prediction_table = "predictions"
    auto_model = "AutoModelForSequenceClassification"

    def examples_problem(self, examples) -> str | None:
        from specrun.examples import Examples

        if not isinstance(examples, Examples):
            return (
                f"its examples are {type(examples).__name__}, not labelled texts: set [task] to the task they are for "
                '(e.g. name = "extractive_qa" for SQuAD)'
            )
        return None

    def check_examples(self, examples, label_names: tuple[str, ...], what: str, key: str) -> None:
        # A training set with a single class teaches nothing but that class: refuse it (an empty one is
        # allowed, see ``TransformPlugin``).
        present = set(examples.label)
        if len(present) == 1:
            (label,) = present
            raise DataError(
                f"{what} holds only the class {label_names[label]!r} ({len(examples)} examples); "
                "a classifier needs examples of two classes or more",
                key=key,
            )

    def load_model(self, ctx, **kwargs):
        from specrun.runner.modeling import load_classifier

        return load_classifier(ctx.model_path, ctx.num_labels, ctx.label_names, **kwargs)

    def encode(self, examples, ctx: TaskContext, training: bool):
        from specrun.runner.batching import Encoded, TokenCache

        return Encoded.build(examples, TokenCache(ctx.tokenizer, ctx.max_length))

    def loss(self, model, features, index, batch, ctx, precision, device):
        import torch
        import torch.nn.functional as F

        from specrun.runner.modeling import autocast

        labels = torch.from_numpy(features.labels[index]).to(device)
        with autocast(precision, device):
            logits = model(**batch).logits
        loss = F.cross_entropy(logits.float(), labels)
        return loss, (logits.detach().argmax(-1) == labels).sum()

    def evaluate(self, model, features, ctx: TaskContext, batch_size, precision, device) -> TaskEvaluation:
        from specrun.runner.evaluate import evaluate

        start = time.perf_counter()
        ev = evaluate(model, features, ctx.num_labels, batch_size, precision, device)
        rows = {
            "label": features.labels.tolist(),
            "prediction": ev.prediction.tolist(),
            "confidence": ev.confidence.tolist(),
            "loss": ev.loss.tolist(),
        }
        return TaskEvaluation(ev.metrics, rows, time.perf_counter() - start)


@hookimpl
def register_tasks(register):
    register(Classification())
