"""Evaluations of a backbone (the protocols of docs/method.md, section 3), as registered plug-ins.

Importing this package registers the built-in protocols: knn, linear, linear-reference,
retrieval, cka-map (frozen features), and finetune (the whole model trained).
"""

from leapkd.eval.cka_map import CkaMapProtocol, cka_map
from leapkd.eval.finetune import FinetuneProtocol, finetune
from leapkd.eval.knn import KnnProtocol, knn_accuracy, knn_classify
from leapkd.eval.linear import LinearProbeProtocol, linear_probe
from leapkd.eval.linear_reference import ReferenceLinearProbeProtocol, reference_linear_probe
from leapkd.eval.protocol import PROTOCOLS, EvalContext, EvalOptions, Protocol, register_protocol
from leapkd.eval.retrieval import (
    RetrievalImages,
    RetrievalProtocol,
    class_retrieval_map,
    load_revisited,
    rank_database,
    revisited_map,
)

__all__ = [
    "PROTOCOLS",
    "CkaMapProtocol",
    "EvalContext",
    "EvalOptions",
    "FinetuneProtocol",
    "KnnProtocol",
    "LinearProbeProtocol",
    "Protocol",
    "ReferenceLinearProbeProtocol",
    "RetrievalImages",
    "RetrievalProtocol",
    "cka_map",
    "class_retrieval_map",
    "finetune",
    "knn_accuracy",
    "knn_classify",
    "linear_probe",
    "load_revisited",
    "rank_database",
    "reference_linear_probe",
    "register_protocol",
    "revisited_map",
]
