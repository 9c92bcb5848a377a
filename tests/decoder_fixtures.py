"""A tiny saved Llama (grouped-query attention) with a word-level tokenizer, text files to train
and evaluate it on, and a causal-LM recipe around them: the decoder counterpart of
`pipeline_fixtures`."""

from __future__ import annotations

from pathlib import Path

import torch
from test_text_data import sentences, word_tokenizer
from transformers import LlamaConfig, LlamaForCausalLM


def make_tiny_llama_base(directory: Path) -> Path:
    """Saves a 2-layer Llama (4 query heads sharing 2 key/value heads, tied embeddings) and its
    tokenizer in `directory`."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=128,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).save_pretrained(directory)
    word_tokenizer().save_pretrained(directory)
    return directory


def write_text(path: Path, lines: int = 300) -> Path:
    path.write_text("\n".join(sentences(lines)) + "\n", encoding="utf-8")
    return path


def llama_recipe_text(base: Path, output: Path, text_file: Path, stages: str) -> str:
    """A `task: causal_lm` recipe on `text_file` (16-token sequences) with `stages` (YAML lines
    of the stages list, indented by two spaces)."""
    return f"""
base_model: {base}
task: causal_lm
teacher: base
data: {{text_files: [{text_file}], max_seq_length: 16, max_eval_samples: 8}}
training: {{per_device_train_batch_size: 8, learning_rate: 1.0e-3, logging_steps: 1}}
stages:
{stages}output_dir: {output}
"""
