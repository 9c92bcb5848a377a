"""Fine-tune all-MiniLM-L6-v2 on a GLUE task: the teacher and baseline every technique compares against.

    python scripts/finetune_teacher.py --task sst2 --epochs 1 --output outputs/teachers/minilm-sst2

Writes the fine-tuned model (a plain BertForSequenceClassification) and `teacher_report.json`
with the dev metric, parameters, bytes on disk, CPU latency and the training time.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from transformers import DataCollatorWithPadding, TrainingArguments, set_seed

from hf_compress import CompressionTrainer
from hf_compress.data import get_task, load_task_datasets
from hf_compress.evaluation import evaluate_task, model_figures
from hf_compress.measure import environment
from hf_compress.models import load_for_task, load_tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-model", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--max-train-samples", type=int)
    parser.add_argument("--max-seq-length", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--glue-dir")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--output", required=True)
    args = parser.parse_args()

    set_seed(args.seed)
    task = get_task(args.task)
    tokenizer = load_tokenizer(args.base_model)
    model = load_for_task(args.base_model, task)
    train, dev = load_task_datasets(task, tokenizer, args.max_seq_length, args.max_train_samples, None, args.glue_dir, args.seed)
    training_args = TrainingArguments(
        output_dir=str(Path(args.output).with_name(Path(args.output).name + ".work")),
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        warmup_steps=0.06,  # a float below 1 is a ratio of the total steps in transformers 5
        weight_decay=0.01,
        logging_steps=100,
        save_strategy="no",
        report_to=[],
        seed=args.seed,
    )
    trainer = CompressionTrainer(
        model=model, args=training_args, train_dataset=train, data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer
    )
    started = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - started

    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output)
    tokenizer.save_pretrained(output)
    report = {
        "base_model": args.base_model,
        "task": task.name,
        "train_examples": len(train),
        "epochs": args.epochs,
        "max_seq_length": args.max_seq_length,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "train_seconds": train_seconds,
        "metrics": evaluate_task(model, tokenizer, task, dev),
        **model_figures(model, saved_dir=str(output)),
        "environment": environment(),
    }
    (output / "teacher_report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps({k: report[k] for k in ("metrics", "num_parameters", "size_bytes", "latency_ms", "train_seconds")}, indent=2))


if __name__ == "__main__":
    main()
