"""Fine-tune all-MiniLM-L6-v2 on a GLUE task: the teacher and baseline every technique compares
against.

    python scripts/finetune_teacher.py --task sst2 --epochs 1 --output outputs/teachers/minilm-sst2

Writes the fine-tuned model (a plain BertForSequenceClassification) and `teacher_report.json`
with the dev metric, parameters, bytes on disk, CPU latency and the training time
(`hf_compress.training.teacher.finetune_teacher`, which `hf-compress bench --out` also uses).
"""

from __future__ import annotations

import argparse
import json

from hf_compress.training.teacher import DEFAULT_BASE_MODEL, finetune_teacher


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-model", default=DEFAULT_BASE_MODEL)
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--max-train-samples", type=int)
    parser.add_argument("--max-seq-length", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--glue-dir")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)

    report = finetune_teacher(
        args.task,
        args.output,
        base_model=args.base_model,
        epochs=args.epochs,
        max_train_samples=args.max_train_samples,
        max_seq_length=args.max_seq_length,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        glue_dir=args.glue_dir,
        seed=args.seed,
    )
    print(
        json.dumps(
            {
                k: report[k]
                for k in ("metrics", "num_parameters", "size_bytes", "latency_ms", "train_seconds")
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
