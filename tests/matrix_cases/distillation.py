"""Matrix cases of `distillation` and `layer_dropping` (hf_compress/methods/distillation/)."""

from matrix import MatrixCase

CASES = [
    # logit + hidden-state distillation from an unmodified copy: trains, the model keeps its size
    MatrixCase(
        id="distillation",
        modifiers=[{"type": "distillation", "alpha_kd": 0.7, "alpha_ce": 0.3, "alpha_hidden": 1.0}],
        epochs=1,
        teacher=True,
        shrinks="none",
    ),
    # DistilBERT-style student: half the layers (1 of the tiny models' 2), distilled with the logit
    # cache
    MatrixCase(
        id="distillation-student",
        modifiers=[
            {"type": "distillation", "student": {"num_layers": 1}, "cache_teacher_logits": True}
        ],
        epochs=1,
        teacher=True,
        shrinks="parameters",
    ),
    # the same student without a teacher, one-shot
    MatrixCase(
        id="layer-dropping",
        modifiers=[{"type": "layer_dropping", "layers": [1]}],
        epochs=0,
        shrinks="parameters",
    ),
]
