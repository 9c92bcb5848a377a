"""Model cards: metadata the Hub accepts, GLUE results in the model-index, a body that explains the
run."""

from __future__ import annotations

from pathlib import Path

import pytest
from hub_server import SAMPLE_RECIPE, card_metadata_errors, sample_report
from huggingface_hub import ModelCard

from hf_compress.errors import HfCompressError
from hf_compress.hub.model_card import build_model_card, describe_modifier, write_model_card

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def card() -> ModelCard:
    return build_model_card(sample_report("someone/minilm-sst2-small"), SAMPLE_RECIPE)


def test_metadata_parses_and_carries_the_hub_fields(card):
    reloaded = ModelCard(str(card))  # parse the README text as the Hub would
    data = reloaded.data.to_dict()
    assert data["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert data["base_model_relation"] == "quantized"
    assert data["datasets"] == ["nyu-mll/glue"]
    assert data["library_name"] == "transformers"
    assert data["pipeline_tag"] == "text-classification"
    assert data["license"] == "apache-2.0"  # MiniLM's license, known though the report had none
    assert {
        "hf-compress",
        "pruned",
        "structured-pruning",
        "distilled",
        "quantized",
        "int8",
        "sst2",
    } <= set(data["tags"])
    assert card_metadata_errors(str(card)) == []
    assert "samples" not in data["metrics"]  # the dev-set size is said in the text, not a metric
    assert "validation set (872 examples)" in str(card)


def test_model_index_holds_the_reported_numbers(card):
    results = ModelCard(str(card)).data.eval_results
    assert len(results) == 1  # the loss is not a metric
    result = results[0]
    assert result.metric_type == "accuracy" and result.metric_value == 0.8761
    assert (result.task_type, result.dataset_type, result.dataset_config, result.dataset_split) == (
        "text-classification",
        "nyu-mll/glue",
        "sst2",
        "validation",
    )
    assert ModelCard(str(card)).data.model_name == "minilm-sst2-small"


def test_body_lists_every_stage_and_modifier(card):
    text = str(card)
    report = sample_report()
    for stage in report["stages"]:
        assert f"**{stage['name']}**" in text
        for modifier in stage["modifiers"]:
            assert f"(`{modifier['type']}`)" in text
    assert "2 epochs of training" in text and "one-shot, no training" in text
    assert "kept neurons: 768" in text  # a reported summary field
    assert "method: int8_dynamic" in text  # a recipe setting


def test_body_has_the_comparison_table_and_how_it_was_measured(card):
    text = str(card)
    for cell in (
        "| Accuracy | 0.8922 | 0.8761 | -1.61 pts |",
        "90.87 MB",
        "30.11 MB",
        "3.02x smaller",
        "22.71M",
        "17.07M",
        "9.1 (8.8-9.9)",
        "4.2 (4.0-4.6)",
        "2.15x faster",
    ):
        assert cell in text, cell
    assert "Latency, batch 32 x 128 tokens" in text
    assert "sequence length 128" in text and "2 threads on Test CPU @ 2.0GHz" in text


def test_body_shows_loading_lines_recipe_and_limitations(card):
    text = str(card)
    assert "import hf_compress" in text
    assert 'AutoModelForSequenceClassification.from_pretrained("someone/minilm-sst2-small")' in text
    assert 'pipeline("text-classification", model="someone/minilm-sst2-small")' in text
    assert "```yaml\n" + SAMPLE_RECIPE.rstrip("\n") + "\n```" in text
    assert "- int8 dynamic quantization runs on CPU only." in text


def test_without_repo_id_the_card_loads_from_the_output_dir():
    text = str(build_model_card(sample_report(None), SAMPLE_RECIPE))
    assert 'from_pretrained("outputs/minilm-sst2-small")' in text


def test_relation_is_finetune_without_quantization_and_license_comes_from_the_report():
    report = sample_report()
    report["stages"] = report["stages"][:1]
    report["compressed"]["methods"] = ["ffn_pruning"]
    report["base_license"] = "mit"
    recipe = SAMPLE_RECIPE.split("  - name: quantize")[0] + "output_dir: outputs/x\n"
    data = build_model_card(report, recipe).data.to_dict()
    assert data["base_model_relation"] == "finetune"
    assert data["license"] == "mit"
    assert "quantized" not in data["tags"] and "int8" not in data["tags"]


def test_local_base_model_is_left_out_of_the_metadata():
    report = sample_report()
    report["base_model"] = "/opt/models/all-MiniLM-L6-v2"
    recipe = SAMPLE_RECIPE.replace(
        "sentence-transformers/all-MiniLM-L6-v2", "/opt/models/all-MiniLM-L6-v2"
    )
    card = build_model_card(report, recipe)
    data = card.data.to_dict()
    assert "base_model" not in data and "base_model_relation" not in data
    assert card_metadata_errors(str(card)) == []
    assert "loaded from a local path" in str(card)


def test_partial_report_without_baseline_or_latency_still_builds():
    report = sample_report()
    report.update(baseline=None, latency_config=None, compression_time_s=None)
    report["compressed"]["latency_ms"] = {}
    text = str(build_model_card(report, SAMPLE_RECIPE))
    assert "| Accuracy | n/a | 0.8761 |" in text
    assert "Latency, batch" not in text
    assert card_metadata_errors(text) == []
    empty = build_model_card({"task": "sst2"}, "")
    assert "No compression stage is recorded" in str(empty)
    assert "model-index" not in empty.data.to_dict() and "model_name" not in empty.data.to_dict()


def test_secrets_in_the_recipe_are_redacted():
    recipe = SAMPLE_RECIPE + "training: {learning_rate: 3.0e-05, hub_token: hf_secretValue123}\n"
    text = str(build_model_card(sample_report(), recipe))
    assert "hf_secretValue123" not in text
    assert "hub_token: <redacted>" in text and "learning_rate: 3.0e-05" in text


def test_no_token_in_card_even_when_one_is_set(monkeypatch):
    # The card is built from the report and recipe only; a token in the environment must never
    # reach it.
    token = "hf_environmentToken987"
    monkeypatch.setenv("HF_TOKEN", token)
    report = sample_report()
    report["environment"]["HF_TOKEN"] = token  # even a careless report field is not dumped
    text = str(build_model_card(report, SAMPLE_RECIPE))
    assert token not in text


def test_write_model_card_round_trips_through_modelcard_load(tmp_path):
    path = write_model_card(tmp_path, sample_report("someone/x"), SAMPLE_RECIPE)
    assert path == tmp_path / "README.md"
    loaded = ModelCard.load(path)
    assert loaded.data.eval_results[0].metric_value == 0.8761
    assert "# x" in loaded.text


def test_describe_modifier_handles_unknown_types_and_long_values():
    line = describe_modifier(
        {"type": "new_trick", "widths": list(range(20)), "ratio": 0.123456, "targets": None}
    )
    assert line.startswith("new trick (`new_trick`): ")
    assert "ratio: 0.1235" in line and ", ...]" in line and "targets" not in line


def test_bad_inputs_are_clear_errors():
    with pytest.raises(HfCompressError, match="report must be a dict"):
        build_model_card(["not", "a", "dict"], SAMPLE_RECIPE)  # type: ignore[arg-type]
    with pytest.raises(HfCompressError, match="recipe.yaml does not parse"):
        build_model_card(sample_report(), "stages: [unclosed")


def test_validator_rejects_what_the_hub_rejects():
    # The offline validator must not accept everything, or the checks above would be empty.
    good = str(build_model_card(sample_report(), SAMPLE_RECIPE))
    assert card_metadata_errors(
        good.replace("base_model_relation: quantized", "base_model_relation: pruned")
    )
    assert card_metadata_errors(
        good.replace("base_model: sentence-transformers/all-MiniLM-L6-v2", "base_model: /local/dir")
    )
    broken_index = good.replace(
        "    metrics:\n    - type: accuracy", "    metric:\n    - type: accuracy"
    )
    assert card_metadata_errors(broken_index)


def test_every_registered_technique_is_named_and_tagged_in_cards():
    from hf_compress.recipe.registry import MODIFIERS

    for name, cls in MODIFIERS.items():
        if name.startswith("_"):  # test-only modifiers registered by other test modules
            continue
        assert cls.description and cls.hub_tags, f"{name} has no model-card description or Hub tags"
        assert describe_modifier({"type": name}).startswith(f"{cls.description} (`{name}`)")
    assert (
        describe_modifier({"type": "lora", "r": 8})
        == "LoRA adapters trained on the quantized model (`lora`): r: 8"
    )
