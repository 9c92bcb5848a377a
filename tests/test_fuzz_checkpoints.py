"""Fuzzing checkpoints: a tiny plain model and a tiny compressed one, corrupted in many ways.

Every corrupted directory must end in a `CheckpointError` (or another `HfCompressError`) from
`load_compressed`, and in exit status 2 with a one-line message from `hf-compress eval`, never a
raw traceback; and loading must never change the user's files. Run with `-s` to see the counts.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import random
import shutil
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny import logits, narrow_ffn, rebuild_narrowed_ffn, tiny_inputs, tiny_model, tiny_tokenizer

import hf_compress  # noqa: F401  (registers the compressed format)
from hf_compress.checkpoint.loading import load_compressed, load_compressed_with_tokenizer
from hf_compress.checkpoint.rebuild import register_rebuild
from hf_compress.cli import main
from hf_compress.errors import CheckpointError, HfCompressError

SEED = 20261128
MAX_SECONDS_PER_CASE = 10.0


register_rebuild("_fuzz_ffn", 40)(rebuild_narrowed_ffn)


def _compressed_model():
    return narrow_ffn(tiny_model("bert"), {0: 10}, "_fuzz_ffn")


def _save(directory: Path, model) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tiny_tokenizer(directory).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("checkpoints")
    return {
        "plain": _save(root / "plain", tiny_model("bert")),
        "compressed": _save(root / "compressed", _compressed_model()),
    }


# Corruptions: each takes the copied checkpoint directory and breaks it ----------------------
def _weights(d: Path) -> Path:
    return d / "model.safetensors"


def _header_length(d: Path) -> int:
    return struct.unpack("<Q", _weights(d).read_bytes()[:8])[0]


def _truncate_at(fraction_or_offset: float | int) -> Callable[[Path], None]:
    def corrupt(d: Path) -> None:
        data = _weights(d).read_bytes()
        header_end = 8 + _header_length(d)
        offsets = {
            "header": header_end // 2,
            "after_header": header_end + 3,
            "data": (header_end + len(data)) // 2,
        }
        cut = (
            offsets.get(fraction_or_offset, fraction_or_offset)
            if isinstance(fraction_or_offset, str)
            else fraction_or_offset
        )
        cut = len(data) + cut if cut < 0 else cut
        _weights(d).write_bytes(data[:cut])

    return corrupt


def _flip_header_byte(seed: int) -> Callable[[Path], None]:
    def corrupt(d: Path) -> None:
        rng = random.Random(seed)
        data = bytearray(_weights(d).read_bytes())
        header = data[8 : 8 + _header_length(d)].rstrip(b" ")  # the padding spaces are not content
        position = 8 + rng.randrange(len(header))
        data[position] ^= rng.choice([0x01, 0x02, 0x04, 0x10, 0x40, 0x80, 0xFF])
        _weights(d).write_bytes(bytes(data))

    return corrupt


def _flip_length_prefix(d: Path) -> None:
    data = bytearray(_weights(d).read_bytes())
    data[:8] = struct.pack("<Q", 2**62)
    _weights(d).write_bytes(bytes(data))


def _edit_tensors(edit: Callable[[dict[str, torch.Tensor]], None]) -> Callable[[Path], None]:
    def corrupt(d: Path) -> None:
        tensors = load_file(_weights(d))
        edit(tensors)
        save_file(tensors, _weights(d), metadata={"format": "pt"})

    return corrupt


def _drop_tensor(pattern: str) -> Callable[[Path], None]:
    return _edit_tensors(lambda t: t.pop(next(k for k in sorted(t) if pattern in k)))


def _add_tensor(name: str) -> Callable[[Path], None]:
    return _edit_tensors(lambda t: t.__setitem__(name, torch.zeros(3)))


def _reshape_tensor(pattern: str) -> Callable[[Path], None]:
    def edit(t: dict[str, torch.Tensor]) -> None:
        key = next(k for k in sorted(t) if pattern in k)
        t[key] = torch.zeros(t[key].shape[0] + 1, *t[key].shape[1:])

    return _edit_tensors(edit)


def _rename_tensor(pattern: str) -> Callable[[Path], None]:
    def edit(t: dict[str, torch.Tensor]) -> None:
        key = next(k for k in sorted(t) if pattern in k)
        t[key.replace("bert.", "bort.", 1)] = t.pop(key)

    return _edit_tensors(edit)


def _weights_of_another_model(d: Path) -> None:
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=128,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
    )
    other = BertForSequenceClassification(config)
    save_file(
        {k: v.contiguous() for k, v in other.state_dict().items()},
        _weights(d),
        metadata={"format": "pt"},
    )


class _Payload:
    """A pickle that would create a file when unpickled: proof that no pickle is ever loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _pickle_instead(d: Path) -> None:
    _weights(d).unlink()
    (d / "pytorch_model.bin").write_bytes(pickle.dumps(_Payload(d.parent / f"{d.name}-PWNED")))


def _pickle_beside_truncated(d: Path) -> None:
    _pickle_instead(d)
    (d / "model.safetensors").write_bytes(b"\x10\x00\x00")


def _sharded_index_missing_shard(d: Path) -> None:
    keys = list(load_file(_weights(d)))
    _weights(d).unlink()
    (d / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": dict.fromkeys(keys, "model-00001-of-00002.safetensors")})
    )


def _replace_file(name: str, data: bytes) -> Callable[[Path], None]:
    def corrupt(d: Path) -> None:
        (d / name).write_bytes(data)

    return corrupt


def _delete(*names: str) -> Callable[[Path], None]:
    def corrupt(d: Path) -> None:
        for name in names:
            target = d / name
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)

    return corrupt


def _weights_as_directory(d: Path) -> None:
    _weights(d).unlink()
    _weights(d).mkdir()


def _edit_config(edit: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    def corrupt(d: Path) -> None:
        config = json.loads((d / "config.json").read_text())
        edit(config)
        (d / "config.json").write_text(json.dumps(config))

    return corrupt


def _set_config(key: str, value: Any) -> Callable[[Path], None]:
    return _edit_config(lambda c: c.__setitem__(key, value))


def _del_config(key: str) -> Callable[[Path], None]:
    return _edit_config(lambda c: c.pop(key, None))


def _set_compression(key: str, value: Any) -> Callable[[Path], None]:
    def edit(config: dict[str, Any]) -> None:
        if key == "":
            config["compression_config"] = value
        else:
            config.setdefault("compression_config", {"version": 1})[key] = value

    return _edit_config(edit)


def _remove_tokenizer(d: Path) -> None:
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        (d / name).unlink(missing_ok=True)


def _corrupt_tokenizer(d: Path) -> None:
    (d / "vocab.txt").unlink(missing_ok=True)
    (d / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "Nonsense"')


def _corruptions(kind: str) -> list[tuple[str, Callable[[Path], None]]]:
    cases: list[tuple[str, Callable[[Path], None]]] = []
    # Weights file.
    for cut in (0, 1, 7, 8, 9, 64, "header", "after_header", "data", -1):
        cases.append((f"truncate_safetensors_at_{cut}", _truncate_at(cut)))
    cases += [(f"flip_header_byte_{i}", _flip_header_byte(SEED + i)) for i in range(16)]
    cases += [
        ("huge_header_length", _flip_length_prefix),
        (
            "safetensors_random_bytes",
            lambda d: _weights(d).write_bytes(random.Random(SEED).randbytes(4096)),
        ),
        ("safetensors_is_json_text", _replace_file("model.safetensors", b'{"not": "weights"}')),
        ("delete_safetensors", _delete("model.safetensors")),
        ("safetensors_is_a_directory", _weights_as_directory),
        ("pickle_instead_of_safetensors", _pickle_instead),
        ("pickle_beside_truncated_safetensors", _pickle_beside_truncated),
        ("sharded_index_missing_shard", _sharded_index_missing_shard),
        (
            "broken_sharded_index",
            lambda d: (_weights(d).unlink(), (d / "model.safetensors.index.json").write_text("{")),
        ),
        ("drop_encoder_tensor", _drop_tensor("encoder.layer.1.output.dense.weight")),
        ("drop_classifier_tensor", _drop_tensor("classifier.weight")),
        ("drop_embedding_tensor", _drop_tensor("word_embeddings")),
        ("extra_tensor", _add_tensor("bert.encoder.layer.7.extra.weight")),
        ("extra_head_tensor", _add_tensor("classifier2.weight")),
        ("renamed_tensor", _rename_tensor("encoder.layer.0.attention.self.query.weight")),
        ("reshaped_ffn_tensor", _reshape_tensor("encoder.layer.0.intermediate.dense.weight")),
        ("reshaped_classifier", _reshape_tensor("classifier.weight")),
        ("weights_of_another_model", _weights_of_another_model),
    ]
    # config.json.
    cases += [
        ("delete_config", _delete("config.json")),
        ("config_not_json", _replace_file("config.json", b"this is not json")),
        (
            "config_truncated_json",
            lambda d: (d / "config.json").write_text((d / "config.json").read_text()[:40]),
        ),
        ("config_latin1_bytes", _replace_file("config.json", b'{"model_type": "bert\xe9"}')),
        (
            "config_random_bytes",
            lambda d: (d / "config.json").write_bytes(random.Random(SEED + 1).randbytes(300)),
        ),
        ("config_is_list", _replace_file("config.json", b"[]")),
        ("config_is_null", _replace_file("config.json", b"null")),
        ("config_empty_object", _replace_file("config.json", b"{}")),
        (
            "config_is_directory",
            lambda d: ((d / "config.json").unlink(), (d / "config.json").mkdir()),
        ),
    ]
    for key in (
        "model_type",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "intermediate_size",
        "vocab_size",
    ):
        cases.append((f"config_delete_{key}", _del_config(key)))
    for key, value in [
        ("hidden_size", 10**8),
        ("hidden_size", -32),
        ("hidden_size", "thirty-two"),
        ("hidden_size", None),
        ("vocab_size", 10**9),
        ("num_hidden_layers", 3),
        ("num_hidden_layers", 1),
        ("num_attention_heads", 3),
        ("intermediate_size", 48),
        ("max_position_embeddings", 10**9),
        ("model_type", "gpt2"),
        ("model_type", "no_such_architecture"),
        ("model_type", ["bert"]),
    ]:
        cases.append((f"config_{key}={str(value)[:12]}", _set_config(key, value)))
    # compression_config: what a compressed checkpoint's rebuild depends on. (A plain BERT config
    # ignores an added mapping, and its weights still fit: only non-mappings are errors there.)
    compression_edits: list[tuple[str, Any]] = [("", "garbage"), ("", [1, 2]), ("", 7)]
    if kind == "compressed":
        compression_edits += [
            ("_fuzz_ffn", {"0": 12}),
            ("_fuzz_ffn", {"0": 0}),
            ("_fuzz_ffn", {"0": -3}),
            ("_fuzz_ffn", {"0": 10**8}),  # would allocate 25 GB if shapes were not checked first
            ("_fuzz_ffn", {"0": "ten"}),
            ("_fuzz_ffn", {"0": None}),
            ("_fuzz_ffn", {"0": 10.5}),
            ("_fuzz_ffn", {"9": 10}),
            ("_fuzz_ffn", {"x": 10}),
            ("_fuzz_ffn", [10]),
            ("_fuzz_ffn", "garbage"),
            ("version", 99),
            ("version", "1"),
            ("warp_drive", {"x": 1}),
            ("", None),
            ("", {}),
            ("_fuzz_ffn", {}),
        ]
        cases.append(("config_delete_compression_config", _del_config("compression_config")))
        cases.append(("config_model_type_bert", _set_config("model_type", "bert")))
    for key, value in compression_edits:
        cases.append(
            (f"compression_config[{key or '*'}]={str(value)[:12]}", _set_compression(key, value))
        )
    return cases


_TOKENIZER_CASES = [
    ("remove_tokenizer_files", _remove_tokenizer),
    ("corrupt_tokenizer_json", _corrupt_tokenizer),
]


# The harness ---------------------------------------------------------------------------------
def _snapshot(root: Path) -> dict[str, str]:
    """Every file under `root` (with the marker files beside it) and its SHA-256."""
    out = {}
    for path in sorted(root.parent.glob(f"{root.name}*")):
        for file in [path] if path.is_file() else sorted(path.rglob("*")):
            out[str(file)] = (
                hashlib.sha256(file.read_bytes()).hexdigest() if file.is_file() else "dir"
            )
    return out


class _Tally:
    def __init__(self) -> None:
        self.tried = self.clean = 0
        self.failures: list[str] = []

    def check(
        self, label: str, directory: Path, load: Callable[[], Any], capsys, glue_dir: Path
    ) -> None:
        """`load()` must raise an HfCompressError with a one-line message; `hf-compress eval` must
        exit 2 with that kind of message; neither may change a file or unpickle anything."""
        self.tried += 1
        before = _snapshot(directory)
        start = time.perf_counter()
        ok = True
        try:
            load()
            ok = False
            self.failures.append(f"{label}: loaded without an error")
        except HfCompressError as exc:
            if "\n" in str(exc) or str(directory) not in str(exc) and "task_head" not in str(exc):
                ok = False
                self.failures.append(
                    f"{label}: message is not one line naming the directory: {str(exc)[:300]!r}"
                )
        except Exception as exc:  # noqa: BLE001  (the point: nothing else may escape)
            ok = False
            self.failures.append(f"{label}: raw {type(exc).__name__}: {str(exc)[:300]}")
        capsys.readouterr()
        argv = [
            "eval",
            str(directory),
            "--task",
            "sst2",
            "--glue-dir",
            str(glue_dir),
            "--max-eval-samples",
            "8",
        ]
        try:
            status = main([*argv, "--batch-size", "8", "--max-seq-length", "16"])
        except BaseException as exc:  # noqa: BLE001  (SystemExit included)
            ok = False
            self.failures.append(f"{label}: cli raised {type(exc).__name__}: {str(exc)[:300]}")
        else:
            err = capsys.readouterr().err
            last = err.strip().splitlines()[-1] if err.strip() else ""
            if status != 2 or not last.startswith("hf-compress: error: ") or "Traceback" in err:
                ok = False
                self.failures.append(f"{label}: cli exit {status}, stderr ends {last[:200]!r}")
        if _snapshot(directory) != before:
            ok = False
            self.failures.append(f"{label}: loading changed or created files")
        elapsed = time.perf_counter() - start
        if elapsed > MAX_SECONDS_PER_CASE:
            ok = False
            self.failures.append(f"{label}: took {elapsed:.1f} s")
        self.clean += ok


def _run_corpus(
    name: str, source: Path, cases, load, tmp_path: Path, capsys, glue_dir: Path
) -> _Tally:
    tally = _Tally()
    for label, corrupt in cases:
        directory = tmp_path / f"{name}-{len(list(tmp_path.iterdir()))}"
        shutil.copytree(source, directory)
        corrupt(directory)
        tally.check(f"{name}/{label}", directory, lambda d=directory: load(d), capsys, glue_dir)
        shutil.rmtree(directory)
    return tally


def _report(tally: _Tally, name: str, capsys) -> None:
    with capsys.disabled():
        print(
            f"\n[{name}] tried {tally.tried} corrupted checkpoints: {tally.clean} failed cleanly, "
            f"{len(tally.failures)} did not"
        )
    assert tally.tried > 0
    assert not tally.failures, "\n".join(tally.failures[:30])


# Tests ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["plain", "compressed"])
def test_intact_checkpoints_load_and_evaluate(kind, checkpoints, capsys, glue_dir):
    before = _snapshot(checkpoints[kind])
    model, tokenizer = load_compressed_with_tokenizer(checkpoints[kind])
    original = _compressed_model() if kind == "compressed" else tiny_model("bert")
    torch.testing.assert_close(
        logits(model.eval(), tiny_inputs()), logits(original, tiny_inputs()), atol=1e-6, rtol=0
    )
    assert tokenizer("good film")["input_ids"]
    argv = [
        "eval",
        str(checkpoints[kind]),
        "--task",
        "sst2",
        "--glue-dir",
        str(glue_dir),
        "--max-eval-samples",
        "8",
    ]
    assert main([*argv, "--batch-size", "8", "--max-seq-length", "16"]) == 0
    assert json.loads(capsys.readouterr().out)["eval_samples"] == 8
    assert _snapshot(checkpoints[kind]) == before


@pytest.mark.parametrize("kind", ["plain", "compressed"])
def test_corrupted_checkpoints_fail_cleanly(kind, checkpoints, tmp_path, capsys, glue_dir):
    cases = _corruptions(kind) + _TOKENIZER_CASES
    tally = _run_corpus(
        kind, checkpoints[kind], cases, load_compressed_with_tokenizer, tmp_path, capsys, glue_dir
    )
    assert not list(tmp_path.glob("*-PWNED")), "a pickle was unpickled"
    _report(tally, f"{kind} checkpoints", capsys)


def test_missing_and_odd_paths(tmp_path, capsys, glue_dir):
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "empty").mkdir()
    tally = _Tally()
    for label, path in [
        ("missing_directory", tmp_path / "nope"),
        ("relative_missing", Path("./no/such/model")),
        ("a_file", tmp_path / "a-file"),
        ("nul_in_path", Path(str(tmp_path / "a\x00b"))),
        ("very_long_name", tmp_path / ("n" * 5000)),
    ]:
        _check_path_only(tally, label, path, capsys, glue_dir)
    tally.check(
        "empty_directory",
        tmp_path / "empty",
        lambda: load_compressed(tmp_path / "empty"),
        capsys,
        glue_dir,
    )
    _report(tally, "paths", capsys)


def _check_path_only(tally: _Tally, label: str, path: Path, capsys, glue_dir: Path) -> None:
    # A path that is not a directory: the message names the path (not a directory to snapshot).
    tally.tried += 1
    try:
        load_compressed(path)
        tally.failures.append(f"{label}: loaded")
        return
    except HfCompressError as exc:
        message = str(exc)
    except Exception as exc:  # noqa: BLE001
        tally.failures.append(f"{label}: raw {type(exc).__name__}: {exc}")
        return
    status = main(["eval", str(path), "--task", "sst2", "--glue-dir", str(glue_dir)])
    err = capsys.readouterr().err.strip().splitlines()
    if status != 2 or not err or not err[-1].startswith("hf-compress: error: ") or "\n" in message:
        tally.failures.append(f"{label}: cli exit {status}: {err[-1:]}")
        return
    tally.clean += 1


def test_a_base_checkpoint_without_a_head_still_gets_a_fresh_head(tmp_path):
    # all-MiniLM-L6-v2 is saved as BertModel: load_for_task must keep working for it.
    from hf_compress.checkpoint.loading import load_for_task
    from hf_compress.data.glue_tasks import get_task

    tiny_model("bert").bert.save_pretrained(tmp_path)
    model = load_for_task(str(tmp_path), get_task("sst2"))
    assert model.num_labels == 2 and logits(model.eval(), tiny_inputs()).shape == (3, 2)


def test_compressed_checkpoint_missing_a_tensor_is_not_silently_reinitialised(
    checkpoints, tmp_path, monkeypatch
):
    # transformers re-initialises a missing tensor with a warning; hf-compress refuses, also
    # without the digest check (which would refuse first).
    monkeypatch.setenv("HF_COMPRESS_VERIFY_CHECKSUMS", "0")
    shutil.copytree(checkpoints["compressed"], tmp_path / "c")
    _drop_tensor("encoder.layer.1.output.dense.weight")(tmp_path / "c")
    with pytest.raises(
        CheckpointError,
        match=r"1 tensors missing .* bert\.encoder\.layer\.1\.output\.dense\.weight",
    ):
        load_compressed(tmp_path / "c")


def test_mismatched_compression_config_is_caught_before_allocating(
    checkpoints, tmp_path, monkeypatch
):
    monkeypatch.setenv("HF_COMPRESS_VERIFY_CHECKSUMS", "0")  # the check behind the digest's
    shutil.copytree(checkpoints["compressed"], tmp_path / "c")
    _set_compression("_fuzz_ffn", {"0": 10**8})(tmp_path / "c")
    start = time.perf_counter()
    with pytest.raises(
        CheckpointError,
        match=r"intermediate\.dense\.weight is \[10, 32\] in the weights but \[100000000, 32\]",
    ):
        load_compressed(tmp_path / "c")
    assert time.perf_counter() - start < 5, (
        "the shape check must run on the meta device, before any allocation"
    )


def test_refused_options(checkpoints):
    with pytest.raises(HfCompressError, match="safetensors only"):
        load_compressed(checkpoints["plain"], use_safetensors=False)
    with pytest.raises(HfCompressError, match="silently re-initialise"):
        load_compressed(checkpoints["plain"], ignore_mismatched_sizes=True)
    with pytest.raises(HfCompressError, match="task_head 'nope'"):
        load_compressed(checkpoints["plain"], "nope")
    assert (
        load_compressed(checkpoints["compressed"], "auto").__class__.__name__
        == "CompressedBertForSequenceClassification"
    )
    assert (
        load_compressed(checkpoints["compressed"], "base").__class__.__name__
        == "CompressedBertModel"
    )


def test_a_head_for_another_label_count_is_an_error_not_a_fresh_head(tmp_path, capsys, glue_dir):
    # An MNLI-style 3-label model evaluated on SST-2 (2 labels): transformers would raise a bare
    # RuntimeError (or, with ignore_mismatched_sizes, silently build a random head).
    from hf_compress.checkpoint.loading import load_for_task
    from hf_compress.data.glue_tasks import get_task

    _save(tmp_path / "three", tiny_model("bert", num_labels=3))
    with pytest.raises(
        CheckpointError,
        match=r"classifier\.weight is \[3, 32\] .* \[2, 32\] .* different number of labels",
    ):
        load_for_task(str(tmp_path / "three"), get_task("sst2"))
    assert (
        main(["eval", str(tmp_path / "three"), "--task", "sst2", "--glue-dir", str(glue_dir)]) == 2
    )
    assert "different number of labels" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (_truncate_at("data"), r"model\.safetensors: truncated or corrupt safetensors file"),
        (
            _pickle_instead,
            r"holds only pickle weights \(pytorch_model\.bin\); hf-compress loads safetensors only",
        ),
        (_replace_file("config.json", b"{oops"), r"config\.json: not valid JSON"),
        (_delete("config.json"), r"no config\.json"),
        (
            _remove_tokenizer,
            r"no tokenizer files \(expected tokenizer_config\.json "
            r"and one of tokenizer\.json, vocab\.txt",
        ),
        (_set_compression("", "garbage"), r"compression_config must be a mapping, got str"),
        (
            _set_compression("_fuzz_ffn", {"0": 12}),
            r"is \[10, 32\] in the weights but \[12, 32\] in the config",
        ),
    ],
    ids=[
        "truncated",
        "pickle",
        "config_not_json",
        "no_config",
        "no_tokenizer",
        "compression_not_mapping",
        "ffn_width",
    ],
)
def test_each_kind_of_damage_gets_its_own_message(
    corrupt, message, checkpoints, tmp_path, monkeypatch
):
    # The checks behind the digest (which tests/test_integrity.py covers) each name their damage.
    monkeypatch.setenv("HF_COMPRESS_VERIFY_CHECKSUMS", "0")
    shutil.copytree(checkpoints["compressed"], tmp_path / "c")
    corrupt(tmp_path / "c")
    with pytest.raises(CheckpointError, match=message):
        load_compressed_with_tokenizer(tmp_path / "c")
