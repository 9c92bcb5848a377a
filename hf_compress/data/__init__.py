"""GLUE tasks, loaders (local TSV or the Hub) and tokenization; the causal-LM task and its packed
text sequences."""

from .glue import default_glue_dir, load_task_split
from .glue_tasks import GLUE_TASKS, GlueTask, get_task
from .preprocess import TaskData, load_task_datasets, tokenize_dataset
from .text import LANGUAGE_MODELING, LanguageModelingTask, TextData

__all__ = [
    "GLUE_TASKS",
    "LANGUAGE_MODELING",
    "GlueTask",
    "LanguageModelingTask",
    "TaskData",
    "TextData",
    "default_glue_dir",
    "get_task",
    "load_task_datasets",
    "load_task_split",
    "tokenize_dataset",
]
