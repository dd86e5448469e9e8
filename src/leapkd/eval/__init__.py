"""Evaluations of frozen backbones (the protocols of SPEC section 3)."""

from leapkd.eval.knn import knn_accuracy, knn_classify
from leapkd.eval.linear import fit_linear_head, linear_probe
from leapkd.eval.retrieval import (
    RetrievalImages,
    class_retrieval_map,
    load_revisited,
    rank_database,
    revisited_map,
)

__all__ = [
    "RetrievalImages",
    "class_retrieval_map",
    "fit_linear_head",
    "knn_accuracy",
    "knn_classify",
    "linear_probe",
    "load_revisited",
    "rank_database",
    "revisited_map",
]
