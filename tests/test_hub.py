"""Hub sharing: push_to_hub through huggingface_hub's real client against a local stand-in server.

The round trip runs in one subprocess (huggingface_hub reads HF_ENDPOINT / HF_HUB_OFFLINE at import,
and this test process is offline by conftest): push a compressed tiny model, load it back by repo
id with `from_pretrained` and `pipeline`, push again, push to a branch, push to a repo whose
commit the server fails, and push from a CompressionTrainer. The server runs in this process, so
the tests read what it stored and which requests it received.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hub_server import HubServer, sample_report, write_sample_output

import hf_compress.hub.push as hub
from hf_compress.errors import HfCompressError
from hf_compress.hub.push import output_files, push_to_hub

TESTS = Path(__file__).resolve().parent
REPO_ROOT = TESTS.parent
TOKEN = "hf_standInTestToken0123456789"
REPO = "user/tiny-compressed"

CLIENT = textwrap.dedent(
    """
    import hashlib, json, sys
    from pathlib import Path

    sys.path.insert(0, sys.argv[1])
    from hub_server import register_sample_rebuilder, write_sample_output
    from tiny import logits, tiny_inputs, tiny_model, tiny_tokenizer

    import hf_compress
    from hf_compress import CompressionTrainer, Recipe
    from hf_compress.errors import HfCompressError
    from hf_compress.hub.push import push_to_hub, push_trainer_output
    from transformers import AutoModelForSequenceClassification, TrainingArguments, pipeline

    register_sample_rebuilder()
    work, results = Path(sys.argv[2]), {}
    out = work / "out"

    def digest(directory):
        files = [p for p in sorted(directory.iterdir()) if p.is_file()]
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}

    model = write_sample_output(out)
    before = digest(out)
    results["url"] = push_to_hub(out, "user/tiny-compressed", private=True)
    results["intact_after_push"] = digest(out) == before

    inputs = tiny_inputs()
    loaded = AutoModelForSequenceClassification.from_pretrained("user/tiny-compressed")
    results["loaded_class"] = type(loaded).__name__
    results["ffn_width"] = loaded.bert.encoder.layer[0].intermediate.dense.out_features
    results["max_logit_diff"] = (logits(model, inputs) - logits(loaded, inputs)).abs().max().item()
    classifier = pipeline("text-classification", model="user/tiny-compressed")
    results["pipeline"] = classifier("the movie was good")

    results["repush_url"] = push_to_hub(out, "user/tiny-compressed")
    results["branch_url"] = push_to_hub(
        out, "user/tiny-compressed", revision="experiment", commit_message="on a branch"
    )

    try:
        push_to_hub(out, "user/broken")
        results["failed_push_error"] = None
    except HfCompressError as exc:
        results["failed_push_error"] = str(exc)
    results["intact_after_failure"] = digest(out) == before

    recipe = Recipe.from_dict({"base_model": "tiny", "task": "sst2",
                               "output_dir": str(work / "trainer"),
                               "stages": [{"name": "one-shot", "epochs": 0, "modifiers": []}]})
    student = tiny_model("bert", seed=3)
    args = TrainingArguments(output_dir=str(work / "trainer"), report_to=[], use_cpu=True)
    trainer = CompressionTrainer(
        model=student, args=args, recipe=recipe, processing_class=tiny_tokenizer()
    )
    trainer.train()
    # the trainer's own method, once it delegates to hf_compress.hub
    if "push_to_hub" in CompressionTrainer.__dict__:
        results["trainer_url"] = trainer.push_to_hub(repo_id="user/from-trainer")
    else:
        results["trainer_url"] = push_trainer_output(trainer, "user/from-trainer")
    reloaded = AutoModelForSequenceClassification.from_pretrained("user/from-trainer")
    trainer_diff = (logits(student, inputs) - logits(reloaded, inputs)).abs().max()
    results["trainer_logit_diff"] = trainer_diff.item()

    (work / "results.json").write_text(json.dumps(results))
    """
)


def _digest(directory: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.iterdir())
        if p.is_file()
    }


@pytest.fixture(scope="module")
def round_trip(tmp_path_factory):
    work = tmp_path_factory.mktemp("hub")
    script = work / "client.py"
    script.write_text(CLIENT)
    with HubServer(token=TOKEN) as server:
        server.fail_commit["user/broken"] = 500
        env = {
            **os.environ,
            **server.env(TOKEN),
            "HF_HOME": str(work / "hf_home"),
            "TOKENIZERS_PARALLELISM": "false",
        }
        proc = subprocess.run(
            [sys.executable, str(script), str(TESTS), str(work)],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=420,
        )
        assert proc.returncode == 0, f"client failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
        results = json.loads((work / "results.json").read_text())
        yield server, results, work


def test_push_uploads_the_complete_output_in_one_commit(round_trip):
    server, results, work = round_trip
    files = server.files(REPO)
    local = {p.name for p in output_files(work / "out")}
    assert local <= set(files)
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer_config.json",
        "recipe.yaml",
        "report.json",
        "README.md",
    } <= local
    assert results["url"].startswith(f"{server.url}/{REPO}/commit/")
    # initial .gitattributes commit + exactly one commit for the push (the re-push added none)
    assert server.commit_count(REPO) == 2
    assert server.requests.count(("POST", f"/api/models/{REPO}/commit/main")) == 1
    assert server.repos[REPO].private is True
    # the weights took the large-file path (LFS batch + PUT), and arrived byte for byte
    weights = server.repos[REPO].resolve("main").files["model.safetensors"]
    assert weights.lfs
    assert ("PUT", f"/lfs-upload/{weights.sha256}") in server.requests
    assert weights.content == (work / "out" / "model.safetensors").read_bytes()
    config = json.loads(files["config.json"])
    assert config["model_type"] == "compressed_bert" and config["compression_config"][
        "test_hub_ffn_width"
    ] == {"0": 40}
    assert results["intact_after_push"]
    assert server.unhandled == []


def test_pushed_card_and_report_name_the_repo(round_trip):
    server, _, work = round_trip
    files = server.files(REPO)
    card = files["README.md"].decode()
    assert f'from_pretrained("{REPO}")' in card and f'model="{REPO}"' in card
    assert json.loads(files["report.json"])["repo_id"] == REPO
    # the local card still names the local directory: push never rewrites the output
    local_card = (work / "out" / "README.md").read_text()
    assert REPO not in local_card and 'from_pretrained("outputs/minilm-sst2-small")' in local_card


def test_from_pretrained_by_repo_id_rebuilds_the_compressed_model(round_trip):
    _, results, _ = round_trip
    assert results["loaded_class"] == "CompressedBertForSequenceClassification"
    assert results["ffn_width"] == 40
    assert results["max_logit_diff"] == 0.0
    prediction = results["pipeline"]
    assert isinstance(prediction, list) and prediction[0]["label"] in ("LABEL_0", "LABEL_1")
    assert 0.0 <= prediction[0]["score"] <= 1.0


def test_repeated_push_is_safe_and_makes_no_new_commit(round_trip):
    server, results, _ = round_trip
    head = server.repos[REPO].branches["main"]
    assert results["repush_url"].endswith(head)
    assert results["url"].endswith(head)
    assert (
        server.requests.count(("POST", "/api/repos/create")) >= 3
    )  # create_repo(exist_ok) each time, 409 ignored


def test_push_to_a_revision_creates_the_branch(round_trip):
    server, results, _ = round_trip
    branches = server.repos[REPO].branches
    assert "experiment" in branches
    assert results["branch_url"].endswith(branches["experiment"])
    assert server.files(REPO, "experiment").keys() == server.files(REPO).keys()


def test_server_error_mid_push_is_a_clear_error_and_leaves_the_output_intact(round_trip):
    server, results, _ = round_trip
    message = results["failed_push_error"]
    assert message is not None
    assert "user/broken" in message and "uploading the files" in message and "500" in message
    assert "run the push again" in message
    assert TOKEN not in message
    assert results["intact_after_failure"]
    # the weights were uploaded, but no commit landed: the repo holds only its initial commit
    assert server.commit_count("user/broken") == 1
    assert ("POST", "/api/models/user/broken/preupload/main") in server.requests


def test_trainer_push_saves_reports_and_pushes(round_trip):
    server, results, _ = round_trip
    assert results["trainer_url"].startswith(f"{server.url}/user/from-trainer/commit/")
    files = server.files("user/from-trainer")
    assert {
        "config.json",
        "model.safetensors",
        "recipe.yaml",
        "report.json",
        "README.md",
        "tokenizer_config.json",
    } <= set(files)
    report = json.loads(files["report.json"])
    assert report["repo_id"] == "user/from-trainer" and report["stages"][0]["name"] == "one-shot"
    assert report["compressed"]["num_parameters"] > 0
    assert "**one-shot**" in files["README.md"].decode()
    assert results["trainer_logit_diff"] == 0.0


def test_no_token_string_in_anything_pushed(round_trip):
    server, _, _ = round_trip
    for repo in server.repos.values():
        for commit in repo.commits.values():
            for path, stored in commit.files.items():
                assert TOKEN.encode() not in stored.content, path


# In-process checks (no server needed) ----------------------------------------------------------
@pytest.fixture
def sample_output(tmp_path):
    write_sample_output(tmp_path / "out")
    return tmp_path / "out"


def test_incomplete_output_names_everything_missing(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(HfCompressError) as info:
        push_to_hub(tmp_path, "user/x", token="hf_x")
    message = str(info.value)
    for missing in (
        "model.safetensors",
        "tokenizer_config.json",
        "tokenizer vocabulary",
        "recipe.yaml",
        "report.json",
        "README.md",
    ):
        assert missing in message
    listed = message.split("missing: ")[1].split(". Push")[0].split("; ")
    assert "config.json" not in listed and len(listed) == 6


def test_missing_shard_and_bad_report_are_reported(sample_output):
    (sample_output / "hf_compress_manifest.json").unlink()  # a layout made by hand: no digests
    weights = sample_output / "model.safetensors"
    weights.rename(sample_output / "model-00001-of-00002.safetensors")
    index = {
        "weight_map": {
            "a": "model-00001-of-00002.safetensors",
            "b": "model-00002-of-00002.safetensors",
        }
    }
    (sample_output / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(HfCompressError, match="model-00002-of-00002.safetensors"):
        output_files(sample_output)
    (sample_output / "model-00002-of-00002.safetensors").write_bytes(b"x")
    assert (sample_output / "model-00002-of-00002.safetensors") in output_files(sample_output)
    (sample_output / "report.json").write_text("{not json")
    with pytest.raises(HfCompressError, match="report.json is not valid JSON"):
        output_files(sample_output)


def test_trainer_leftovers_are_not_uploaded(sample_output):
    (sample_output / "training_args.bin").write_bytes(b"pickle")
    (sample_output / "trainer_state.json").write_text("{}")
    (sample_output / "checkpoint-10").mkdir()
    (sample_output / ".hidden").write_text("x")
    names = {p.name for p in output_files(sample_output)}
    assert not names & {"training_args.bin", "trainer_state.json", "checkpoint-10", ".hidden"}
    assert {"model.safetensors", "README.md", "tokenizer.json", "tokenizer_config.json"} <= names


def test_token_written_into_the_output_blocks_the_push(sample_output):
    token = "hf_leakedTokenValue42"
    report = sample_report()
    report["notes"].append(f"pushed with {token}")
    (sample_output / "report.json").write_text(json.dumps(report))
    before = _digest(sample_output)
    with pytest.raises(HfCompressError) as info:
        push_to_hub(sample_output, "user/x", token=token)
    assert "report.json contains a Hugging Face token (your token)" in str(info.value)
    assert token not in str(info.value)
    assert _digest(sample_output) == before


def test_any_token_in_the_output_blocks_the_push_not_only_the_current_one(sample_output):
    other = "hf_" + "AbCdEf0123456789" * 2 + "xyz"  # another account's token
    text = (sample_output / "recipe.yaml").read_text()
    (sample_output / "recipe.yaml").write_text(text + f"# notes: {other}\n")
    with pytest.raises(
        HfCompressError, match=r"recipe.yaml contains a Hugging Face token \(hf_Ab\.\.\.yz\)"
    ):
        push_to_hub(sample_output, "user/x", token="hf_theCurrentTokenOfTheUser0123456789")


def test_a_checkpoint_changed_after_saving_is_not_pushed(sample_output):
    config = json.loads((sample_output / "config.json").read_text())
    config["hidden_act"] = "relu"
    (sample_output / "config.json").write_text(json.dumps(config))
    with pytest.raises(HfCompressError, match="config.json: .*was edited: restore or re-download"):
        push_to_hub(sample_output, "user/x", token="hf_t")


def test_published_copies_name_folders_not_local_paths(sample_output, tmp_path):
    recipe = (sample_output / "recipe.yaml").read_text()
    base = str(tmp_path / "private" / "bases" / "minilm-finetuned")
    (sample_output / "recipe.yaml").write_text(recipe + f"teacher: {base}\n")
    report = json.loads((sample_output / "report.json").read_text())
    report.update(base_model=base, output_dir=str(tmp_path / "private" / "outputs" / "small"))
    (sample_output / "report.json").write_text(json.dumps(report))
    operations, _ = hub._operations(sample_output, output_files(sample_output), "user/x", "hf_t")
    published = {
        op.path_in_repo: op.path_or_fileobj
        for op in operations
        if op.path_in_repo in ("recipe.yaml", "report.json", "README.md")
    }
    for name, content in published.items():
        text = content.decode() if isinstance(content, bytes) else Path(content).read_text()
        assert str(tmp_path) not in text, name
    assert json.loads(published["report.json"])["base_model"] == "minilm-finetuned"
    assert "teacher: minilm-finetuned" in published["recipe.yaml"].decode()


def test_missing_token_and_bad_repo_id_are_clear(sample_output, monkeypatch):
    monkeypatch.setattr(hub, "get_token", lambda: None)
    with pytest.raises(HfCompressError, match="HF_TOKEN"):
        push_to_hub(sample_output, "user/x")
    with pytest.raises(HfCompressError, match="invalid Hub repo id"):
        push_to_hub(sample_output, "user/bad name!", token="hf_x")
    with pytest.raises(HfCompressError, match="namespace is missing"):
        push_to_hub(sample_output, "just-a-name", token="hf_x")


def test_connection_failure_is_wrapped_and_output_untouched(sample_output, monkeypatch):
    # This process is offline (conftest: HF_HUB_OFFLINE=1), so huggingface_hub refuses to connect:
    # the same path as a network failure (a ConnectionError from the client).
    before = _digest(sample_output)
    with pytest.raises(HfCompressError) as info:
        push_to_hub(sample_output, "user/x", token="hf_offlineToken")
    assert "creating the repository" in str(info.value) and "hf_offlineToken" not in str(info.value)
    assert _digest(sample_output) == before


def test_edited_card_is_pushed_as_is(sample_output):
    readme = sample_output / "README.md"
    readme.write_text(readme.read_text() + "\nA note added by hand.\n")
    assert hub._retargeted_card(sample_output, "user/other") == {}
    readme.write_text(readme.read_text().replace("\nA note added by hand.\n", ""))
    retargeted = hub._retargeted_card(sample_output, "user/other")
    assert 'from_pretrained("user/other")' in retargeted["README.md"].decode()
    assert json.loads(retargeted["report.json"])["repo_id"] == "user/other"
