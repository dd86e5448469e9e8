"""Evaluations of frozen backbones (the protocols of SPEC section 3)."""

from leapkd.eval.knn import knn_accuracy, knn_classify

__all__ = ["knn_accuracy", "knn_classify"]
