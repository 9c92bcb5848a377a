"""`task: causal_lm` end to end: a recipe prunes, distils and quantizes a tiny Llama; the output
reloads with `AutoModelForCausalLM` and `pipeline("text-generation")`, and its report and card
speak of perplexity, agreement with the original and generation speed."""

from __future__ import annotations

import json

import pytest
import torch
from decoder_fixtures import llama_recipe_text, make_tiny_llama_base, write_text
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

from hf_compress.cli import main
from hf_compress.errors import RecipeError
from hf_compress.recipe.recipe import Recipe
from hf_compress.training.runner import run_recipe

STAGES = """  - name: prune
    epochs: 0
    modifiers:
      - {type: layer_dropping, num_layers: 1, importance: block_influence, calibration_batches: 2}
      - {type: head_pruning, count: 1}
      - {type: ffn_pruning, sparsity: 0.25}
  - name: distil
    epochs: 1
    modifiers:
      - {type: distillation, alpha_hidden: 0}
  - name: int8
    epochs: 0
    modifiers:
      - {type: quantization, method: int8_dynamic}
"""


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm")
    base = make_tiny_llama_base(root / "base")
    text = llama_recipe_text(base, root / "out", write_text(root / "train.txt"), STAGES)
    path = root / "lm.yaml"
    path.write_text(text)
    recipe = Recipe.from_yaml(path)
    result = run_recipe(
        recipe,
        latency_config={"runs": 2, "warmup": 1, "seq_len": 12, "new_tokens": 4},
        progress=False,
    )
    return root, result


def test_the_report_measures_perplexity_agreement_and_generation_speed(finished_run):
    root, result = finished_run
    report = json.loads((root / "out" / "report.json").read_text())
    assert report["task"] == "causal_lm" and report["metric_name"] == "perplexity"
    base, compressed = report["baseline"], report["compressed"]
    assert base["name"] == "base"
    assert 1 < base["metrics"]["perplexity"] < 1000
    assert 1 < compressed["metrics"]["perplexity"] < 1000
    assert compressed["metrics"]["kl_divergence"] > 0
    assert 0 <= compressed["metrics"]["top1_agreement"] <= 1
    for entry in (base, compressed):
        assert set(entry["latency_ms"]) == {"prefill", "generate"}
        assert entry["tokens_per_second"] > 0
    assert report["latency"]["new_tokens"] == 4 and report["latency"]["prompt_tokens"] == 12
    assert compressed["size_bytes"] < base["size_bytes"]
    stages = report["stages"]
    dropping = stages[0]["modifiers"][0]
    assert dropping["importance"] == "block_influence" and len(dropping["kept_layers"]) == 1
    assert stages[1]["modifiers"][0]["mean_weighted_losses"]["kd"] > 0


def test_the_output_reloads_generates_and_runs_in_a_pipeline(finished_run):
    root, result = finished_run
    out = root / "out"
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    assert model.config.num_hidden_layers == 1
    ids = torch.tensor([[1, 5, 6, 7, 8, 9]])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, result.model.eval()(ids).logits, atol=1e-5)
        cached = model.generate(ids, max_new_tokens=5, do_sample=False)
        uncached = model.generate(ids, max_new_tokens=5, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)
    generator = pipeline(
        "text-generation", model=str(out), tokenizer=AutoTokenizer.from_pretrained(out)
    )
    text = generator("the movie was", max_new_tokens=4, do_sample=False)[0]["generated_text"]
    assert text.startswith("the movie was")


def test_the_card_speaks_of_text_generation(finished_run):
    root, _ = finished_run
    card = (root / "out" / "README.md").read_text()
    assert "pipeline_tag: text-generation" in card and "glue" not in card.lower().split("---")[1]
    assert "| Perplexity (lower is better) |" in card
    assert "Top-1 next-token agreement with the baseline" in card
    assert "AutoModelForCausalLM.from_pretrained" in card
    assert 'pipeline("text-generation"' in card


def test_the_cli_validates_and_refuses_vocabulary_pruning(tmp_path, capsys):
    base = make_tiny_llama_base(tmp_path / "base")
    text_file = write_text(tmp_path / "train.txt")
    good = tmp_path / "good.yaml"
    good.write_text(
        llama_recipe_text(
            base,
            tmp_path / "out",
            text_file,
            "  - name: prune\n    epochs: 0\n    modifiers:\n      - {type: ffn_pruning, "
            "sparsity: 0.5}\n",
        )
    )
    assert main(["validate", str(good)]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        llama_recipe_text(
            base,
            tmp_path / "out",
            text_file,
            "  - name: vocab\n    epochs: 0\n    modifiers:\n      - {type: vocab_pruning}\n",
        )
    )
    capsys.readouterr()
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "vocab_pruning" in err and "language model" in err and err.count("\n") == 1
    with pytest.raises(RecipeError, match="whole vocabulary"):
        Recipe.from_yaml(bad)


def test_a_glue_task_runs_on_a_decoder_with_a_classification_head(tmp_path, glue_dir):
    # A decoder classifies from its last non-padding token: the base (saved without a pad token
    # id) gets one, and the pruned classifier reloads with AutoModelForSequenceClassification.
    from transformers import AutoModelForSequenceClassification

    base = make_tiny_llama_base(tmp_path / "base")
    config = json.loads((base / "config.json").read_text())
    config.pop("pad_token_id")
    (base / "config.json").write_text(json.dumps(config))
    recipe = tmp_path / "sst2.yaml"
    recipe.write_text(
        f"""
base_model: {base}
task: sst2
data: {{max_train_samples: 32, max_eval_samples: 16, max_seq_length: 16, glue_dir: {glue_dir}}}
stages:
  - name: prune
    epochs: 0
    modifiers:
      - {{type: head_pruning, count: 1, importance: magnitude}}
      - {{type: ffn_pruning, sparsity: 0.5, importance: magnitude}}
output_dir: {tmp_path / "out"}
"""
    )
    assert main(["run", str(recipe), "--no-latency"]) == 0
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out").eval()
    assert type(model).__name__ == "CompressedLlamaForSequenceClassification"
    assert model.config.pad_token_id == 2
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert 0 <= report["compressed"]["metrics"]["accuracy"] <= 1
    padded = torch.tensor([[5, 6, 7, 2, 2], [5, 6, 7, 8, 9]])
    with torch.no_grad():
        logits = model(padded, attention_mask=(padded != 2).long()).logits
        alone = model(padded[:1, :3]).logits
    assert torch.allclose(logits[0], alone[0], atol=1e-5)  # padding does not change the answer
