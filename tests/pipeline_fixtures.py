"""A tiny local base model with a real tokenizer, and a test-only structural modifier, for
end-to-end runs on real GLUE slices without downloads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from tiny import narrow_ffn, rebuild_narrowed_ffn, tiny_tokenizer
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

from hf_compress import register_modifier
from hf_compress.architectures.base import get_adapter
from hf_compress.checkpoint.format import record_method
from hf_compress.checkpoint.rebuild import register_rebuild
from hf_compress.checkpoint.sources import packaged_model_dir
from hf_compress.methods.modifier import Modifier
from hf_compress.recipe.fields import ModifierConfig
from hf_compress.recipe.schema import option


def make_tiny_base(directory: Path, hidden_size: int = 32, intermediate_size: int = 64) -> Path:
    """Saves a 2-layer BERT (hidden 32 unless asked) with the MiniLM WordPiece tokenizer when
    installed (so real GLUE text tokenizes sensibly), else the tiny test vocabulary."""
    directory.mkdir(parents=True, exist_ok=True)
    minilm = packaged_model_dir("sentence-transformers/all-MiniLM-L6-v2")
    tokenizer = AutoTokenizer.from_pretrained(minilm) if minilm else tiny_tokenizer(directory)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=intermediate_size,
        max_position_embeddings=128,
    )
    BertForSequenceClassification(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


register_rebuild("_pipeline_ffn", 40)(rebuild_narrowed_ffn)


@dataclass(frozen=True)
class HalveFfnConfig(ModifierConfig):
    fail: bool = option(False, help="raise in on_finalize (to test that no output is left behind)")


@register_modifier("_halve_ffn")
class HalveFfn(Modifier):
    """Test-only: keeps the first half of every FFN's neurons."""

    config_class = HalveFfnConfig

    def on_initialize(self, model, ctx):
        adapter = get_adapter(model)
        narrow_ffn(
            model,
            {i: adapter.ffn_width(model, i) // 2 for i in range(adapter.num_layers(model))},
            "_pipeline_ffn",
        )
        record_method(model, "test_halve_ffn")

    def on_finalize(self, model, ctx):
        if self.config.fail:
            raise RuntimeError("planned failure")

    def summary(self):
        return {"type": self.type_name, "kept": "half"}


def tiny_recipe_text(base: Path, output: Path, glue_dir: Path, extra_stage: str = "") -> str:
    return f"""
base_model: {base}
task: sst2
teacher: finetuned-base
finetune_base: {{epochs: 1}}
data: {{max_train_samples: 64, max_eval_samples: 32, max_seq_length: 32, glue_dir: {glue_dir}}}
training: {{per_device_train_batch_size: 16, learning_rate: 1.0e-3, logging_steps: 1}}
stages:
  - name: shrink
    epochs: 1
    modifiers:
      - {{type: _halve_ffn}}
{extra_stage}output_dir: {output}
"""


@dataclass(frozen=True)
class CountStepsConfig(ModifierConfig):
    sleep: float = option(
        0.0, help="seconds to sleep per step (makes a run slow enough to interrupt)", range=(0, 1)
    )


@register_modifier("_count_steps")
class CountSteps(Modifier):
    """Test-only: counts optimizer steps; its count is runtime state that must survive a resume."""

    config_class = CountStepsConfig

    def __init__(self, config):
        super().__init__(config)
        self.steps = 0

    def on_step_end(self, model, ctx):
        import time

        self.steps += 1
        time.sleep(self.config.sleep)

    def state_dict(self):
        return {"steps": self.steps, "marker": torch.tensor([self.steps])}

    def load_state_dict(self, state):
        assert int(state["marker"][0]) == state["steps"]
        self.steps = state["steps"]

    def summary(self):
        return {"type": self.type_name, "steps": self.steps}
