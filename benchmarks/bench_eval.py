"""Evaluation throughput: specrun's ``evaluate`` against ``Trainer.predict`` on the same model and examples.

The model is W1's (MiniLM + LoRA r16 on query/value, seeded head), built once by specrun's
``build_model`` (frozen Linear weights stored in bf16, as specrun evaluates a model it trained). The
Trainer gets a copy of it with every weight in fp32, as a Trainer script would hold it; the weights are
equal (a bf16 weight is exact in fp32, and autocast rounds it back to the same bf16), so both predict
the same. Peers, alternating who goes first each round, all at eval batch size 128:

  specrun           ``specrun.runner.evaluate.evaluate`` on ``Encoded`` examples (tokenized beforehand)
  trainer-bf16      ``Trainer.predict``, bf16=True (autocast), group_by_length (which transformers 5
                    applies to evaluation too: batches sorted by length), DataCollatorWithPadding
  trainer-bf16-full the same with bf16_full_eval=True (the whole model cast to bf16)

Tokenization is outside the timing for every peer. Throughput = examples / wall seconds of the call.
The ratio of a round is specrun over the faster Trainer setting of that round.
"""

from __future__ import annotations

import copy
import statistics
import time
from pathlib import Path

EVAL_BATCH_SIZE = 128


def _trainer(model, tokenizer, folder: Path, full_bf16: bool, seed: int):
    from transformers import DataCollatorWithPadding, PrinterCallback, Trainer, TrainingArguments

    args = TrainingArguments(
        output_dir=str(folder / "trainer-eval"),
        per_device_eval_batch_size=EVAL_BATCH_SIZE,
        bf16=True,
        bf16_full_eval=full_bf16,
        train_sampling_strategy="group_by_length",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        seed=seed,
        dataloader_num_workers=0,
    )
    trainer = Trainer(
        model=model, args=args, data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer
    )
    trainer.remove_callback(PrinterCallback)
    return trainer


def run(work, folder: Path, rounds: int, threads: int | None = None, log=print) -> dict:
    """``rounds`` alternating rounds of the three peers on ``work``'s dev set; returns per-round figures."""
    import numpy as np
    import torch

    from specrun.runner.batching import Encoded, TokenCache
    from specrun.runner.evaluate import evaluate
    from specrun.runner.execute import build_model
    from specrun.runner.modeling import load_tokenizer, resolve_model

    if threads:
        torch.set_num_threads(threads)
    settings = work.planned[0].settings
    device = torch.device("cpu")
    model, _ = build_model(settings, work.registry, len(work.label_names), work.label_names, device)
    model.eval()
    tokenizer = load_tokenizer(resolve_model(work.planned[0].config["model"]["name"], work.registry))
    encoded = Encoded.build(work.dev, TokenCache(tokenizer, work.max_length))
    rows = [{"input_ids": ids, "labels": int(y)} for ids, y in zip(encoded.ids, encoded.labels)]
    if encoded.types[0] is not None:
        for row, types in zip(rows, encoded.types):
            row["token_type_ids"] = types
    n = len(encoded)
    fp32 = copy.deepcopy(model).float()
    trainers = {
        "trainer-bf16": _trainer(fp32, tokenizer, folder, False, work.seed),
        "trainer-bf16-full": _trainer(copy.deepcopy(fp32), tokenizer, folder, True, work.seed),
    }

    def specrun_peer():
        ev = evaluate(model, encoded, len(work.label_names), EVAL_BATCH_SIZE, "bf16", device)
        return ev.prediction, ev.confidence

    def trainer_peer(name):
        trainer = trainers[name]
        # group_by_length reorders evaluation too, and predict returns its outputs in that order; the
        # sampler is seeded, so its order is known (and checked against the labels it returns)
        order = np.fromiter(iter(trainer._get_eval_sampler(rows)), dtype=np.int64)

        def go():
            out = trainer.predict(rows)
            if not np.array_equal(np.asarray(out.label_ids), encoded.labels[order]):
                raise RuntimeError(f"{name}: the order of Trainer.predict's outputs is not its sampler's")
            logits = torch.from_numpy(np.asarray(out.predictions, dtype=np.float32))
            probs = np.empty((n, logits.shape[-1]), dtype=np.float32)
            probs[order] = logits.softmax(-1).numpy()
            return probs.argmax(-1), probs

        return go

    peers = {"specrun": specrun_peer, **{name: trainer_peer(name) for name in trainers}}
    for go in peers.values():  # warm-up: first-call costs (kernel selection, accelerate's wrapping) land here
        go()
    results: dict[str, list[dict]] = {p: [] for p in peers}
    names = list(peers)
    last = {}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            t0 = time.perf_counter()
            prediction, _ = outputs = peers[name]()
            seconds = time.perf_counter() - t0
            last[name] = outputs
            results[name].append(
                {
                    "seconds": seconds,
                    "examples_per_second": n / seconds,
                    "accuracy": float(np.mean(prediction == encoded.labels)),
                }
            )
        log(f"  eval round {r}: " + ", ".join(f"{p} {results[p][-1]['examples_per_second']:.0f} ex/s" for p in names))
    # The head is untrained (near-tie logits), so a rounding difference can flip a prediction: the
    # probabilities are the check that both evaluate the same model.
    chosen, confidence = last["specrun"]
    same = {
        name: {
            "prediction_agreement": float(np.mean(last[name][0] == chosen)),
            "max_abs_probability_difference": float(np.max(np.abs(last[name][1][np.arange(n), chosen] - confidence))),
        }
        for name in trainers
    }
    per_round = [
        results["specrun"][r]["examples_per_second"] / max(results[t][r]["examples_per_second"] for t in trainers)
        for r in range(rounds)
    ]
    return {
        "examples": n,
        "batch_size": EVAL_BATCH_SIZE,
        "threads": torch.get_num_threads(),
        "peers": results,
        "median_examples_per_second": {
            p: statistics.median(x["examples_per_second"] for x in rs) for p, rs in results.items()
        },
        "same_model_check": same,
        "per_round": per_round,
        "ratio": statistics.median(per_round),
    }
