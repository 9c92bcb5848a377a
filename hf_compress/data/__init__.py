"""GLUE tasks, loaders (local TSV or the Hub) and tokenization."""

from .glue import default_glue_dir, load_task_split
from .glue_tasks import GLUE_TASKS, GlueTask, get_task
from .preprocess import TaskData, load_task_datasets, tokenize_dataset

__all__ = [
    "GLUE_TASKS",
    "GlueTask",
    "TaskData",
    "default_glue_dir",
    "get_task",
    "load_task_datasets",
    "load_task_split",
    "tokenize_dataset",
]
