"""GLUE loaders on the real files, their quirks, missing files, and the metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hf_compress.data.glue import load_task_split
from hf_compress.data.glue_tasks import GLUE_TASKS, get_task
from hf_compress.data.metrics import glue_metrics
from hf_compress.errors import DataError

DEV_ROWS = {
    "sst2": 872,
    "cola": 1043,
    "mrpc": 408,
    "stsb": 1500,
    "rte": 277,
    "wnli": 71,
    "qnli": 5463,
}


@pytest.mark.parametrize(("task", "rows"), DEV_ROWS.items())
def test_real_dev_files_load_with_official_row_counts(glue_dir, task, rows):
    dataset = load_task_split(task, "validation", glue_dir)
    assert len(dataset) == rows
    spec = GLUE_TASKS[task]
    assert set(dataset.column_names) == {*spec.text_fields, "label"}
    labels = set(dataset["label"])
    if spec.is_regression:
        assert min(labels) >= 0.0 and max(labels) <= 5.0
    else:
        assert labels == set(range(spec.num_labels))
    assert all(isinstance(t, str) and t for t in dataset[spec.text_fields[0]][:50])


def test_quirks_cola_no_header_mrpc_bom_and_label_maps(glue_dir):
    cola = load_task_split("cola", "validation", glue_dir)
    assert sum(cola["label"]) == 721  # 721 acceptable / 322 unacceptable: no header row swallowed
    mrpc = load_task_split("mrpc", "train", glue_dir)
    assert len(mrpc) == 3668 and sum(mrpc["label"]) == 2474  # BOM-prefixed header still found
    rte = load_task_split("rte", "validation", glue_dir)
    assert rte["label"].count(0) == 146  # entailment = 0, as on the Hub
    sst2 = load_task_split("sst2", "validation", glue_dir)
    assert sst2[0]["sentence"].startswith("it 's a charming and often affecting journey")
    qnli = load_task_split("qnli", "validation", glue_dir)
    assert sum(s.startswith('" ') for s in qnli["sentence"]) == 13  # quotes kept verbatim


def test_missing_file_names_the_path_and_the_fix(tmp_path):
    with pytest.raises(DataError) as info:
        load_task_split("sst2", "train", tmp_path)
    message = str(info.value)
    assert str(tmp_path / "SST-2" / "train.tsv") in message
    assert "HF_COMPRESS_GLUE_DIR" in message and "--glue-dir" in message


def test_malformed_file_is_a_clear_error(tmp_path):
    (tmp_path / "SST-2").mkdir()
    (tmp_path / "SST-2" / "dev.tsv").write_text("text\tlabel\nfine\t1\n")
    with pytest.raises(DataError, match="expected columns"):
        load_task_split("sst2", "validation", tmp_path)
    (tmp_path / "SST-2" / "dev.tsv").write_text("sentence\tlabel\nfine\tpositive\n")
    with pytest.raises(DataError, match=r"dev.tsv:2: malformed row"):
        load_task_split("sst2", "validation", tmp_path)


def test_unknown_task():
    with pytest.raises(DataError, match="unknown GLUE task 'sst5'"):
        get_task("sst5")
    assert get_task("SST-2").name == "sst2"


def test_all_nine_tasks_are_described():
    assert set(GLUE_TASKS) == {"cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"}
    assert GLUE_TASKS["stsb"].is_regression and GLUE_TASKS["stsb"].num_labels == 1
    assert GLUE_TASKS["mnli"].num_labels == 3 and GLUE_TASKS["mnli"].dev_splits == (
        "dev_matched",
        "dev_mismatched",
    )


def test_metrics_against_hand_computed_values():
    # accuracy: 3 of 4 right
    assert glue_metrics("sst2", [1, 0, 1, 1], [1, 0, 0, 1]) == {"accuracy": 0.75}
    # F1 with tp=2, fp=1, fn=1 -> precision 2/3, recall 2/3, F1 2/3
    mrpc = glue_metrics("mrpc", [1, 1, 1, 0, 0], [1, 1, 0, 1, 0])
    assert mrpc["f1"] == pytest.approx(2 / 3) and mrpc["accuracy"] == pytest.approx(3 / 5)
    # Matthews: tp=2 tn=1 fp=1 fn=1 -> (2*1 - 1*1) / sqrt(3*3*2*2) = 1/6
    cola = glue_metrics("cola", [1, 1, 1, 0, 0], [1, 1, 0, 1, 0])
    assert cola["matthews_correlation"] == pytest.approx(1 / 6)
    # Pearson of y = 2x + 1 is 1; Spearman of a monotone but non-linear map is 1
    x = np.array([0.0, 1.0, 2.0, 3.0])
    stsb = glue_metrics("stsb", x**3, x)
    assert stsb["spearmanr"] == pytest.approx(1.0)
    assert stsb["pearson"] < 1.0
    assert glue_metrics("stsb", 2 * x + 1, x)["pearson"] == pytest.approx(1.0)
    # Pearson by hand for a non-trivial pair
    p, r = np.array([1.0, 2.0, 4.0]), np.array([1.0, 3.0, 2.0])
    pc, rc = p - p.mean(), r - r.mean()
    expected = (pc @ rc) / math.sqrt((pc @ pc) * (rc @ rc))
    assert glue_metrics("stsb", p, r)["pearson"] == pytest.approx(expected)


def test_metrics_reject_mismatched_lengths():
    with pytest.raises(ValueError, match="2 predictions for 3 references"):
        glue_metrics("sst2", [1, 0], [1, 0, 1])
