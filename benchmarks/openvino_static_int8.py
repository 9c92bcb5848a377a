"""Static int8 activations on an hf-compress OpenVINO export: NNCF (`nncf.quantize`, transformer
preset, which also applies SmoothQuant) calibrates the IR on task sentences and inserts
activation quantizers; the recipe's int8 weights and packed embeddings stay as they are. The
result is a copy of the export directory (config, tokenizer, `onnx_export.json`) that
`hf-compress eval` / `bench` measure like any export.

An attempt at a faster OpenVINO point than weight-only int8 (activations quantized as well); the
calibration sentences come from the end of the task's training file, away from the first rows a
recipe with `data.max_train_samples` trained on.

    python benchmarks/openvino_static_int8.py outputs/quickstart-4bit-emb-ov \
        --out outputs/quickstart-4bit-emb-ov-static --task-dir $HF_COMPRESS_GLUE_DIR/SST-2 \
        [--samples 300] [--precision f32|bf16]
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
from pathlib import Path

import nncf
import numpy as np
import openvino as ov
from transformers import AutoTokenizer

IR_FILES = ("openvino_model.xml", "openvino_model.bin")


def calibration_sentences(task_dir: Path, count: int) -> list[str]:
    """The last `count` rows of the task's train.tsv, first column (SST-2's `sentence`)."""
    with (task_dir / "train.tsv").open(encoding="utf-8") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    return [row[0] for row in rows[-count:]]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("export", type=Path, help="an `hf-compress export --format openvino` dir")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--task-dir", type=Path, required=True, help="GLUE task folder (TSV)")
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--precision", choices=("f32", "bf16"), default="f32")
    args = parser.parse_args(argv)
    if args.out.exists():
        parser.error(f"{args.out} exists; choose a new --out")

    model = ov.Core().read_model(args.export / IR_FILES[0])
    names = [port.get_any_name() for port in model.inputs]
    tokenizer = AutoTokenizer.from_pretrained(args.export)

    def encode(sentence: str) -> dict[str, np.ndarray]:
        encoded = tokenizer(
            sentence, return_tensors="np", truncation=True, max_length=args.max_length
        )
        return {name: encoded[name].astype(np.int64) for name in names}

    sentences = calibration_sentences(args.task_dir, args.samples)
    quantized = nncf.quantize(
        model,
        nncf.Dataset(sentences, encode),
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(sentences),
    )
    args.out.mkdir(parents=True)
    ov.save_model(quantized, str(args.out / IR_FILES[0]), compress_to_fp16=False)
    for path in args.export.iterdir():
        if path.name not in IR_FILES:
            shutil.copy2(path, args.out / path.name)
    record_path = args.out / "onnx_export.json"
    record = json.loads(record_path.read_text())
    for key in ("max_abs_logit_diff_vs_pytorch", "tolerance", "tolerance_rule"):
        record.pop(key, None)  # checked for the weight-only IR, not for this one
    record.update(
        openvino_precision=args.precision,
        size_bytes=sum((args.out / name).stat().st_size for name in IR_FILES),
        static_int8_activations={"nncf": nncf.__version__, "calibration_sentences": len(sentences)},
    )
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out} ({record['size_bytes'] / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
