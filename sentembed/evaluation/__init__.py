"""Evaluators for STS, retrieval (BEIR), triplets and paraphrase mining, and their readers.

Every evaluator is a callable `evaluator(enc) -> dict[str, float]` with a `primary_metric`.

>>> from sentembed.evaluation import STSEvaluator, RetrievalEvaluator, TripletEvaluator

The names load on first use, so `sentembed --help` does not import torch or SciPy.
"""
from __future__ import annotations

from ..model.lazy import lazy_names

_HOMES = {
    "BeirData": "readers", "DataFormatError": "readers", "ParaphraseMiningEvaluator": "paraphrase",
    "RetrievalEvaluator": "retrieval", "STSEvaluator": "sts", "TripletEvaluator": "triplets",
    "beir_doc_text": "readers", "query_metrics": "metrics", "read_beir": "readers", "read_jsonl": "readers",
    "read_qrels": "readers", "read_sts": "readers", "read_triplets": "readers", "retrieval_metrics": "metrics",
}
__all__ = list(_HOMES)

__getattr__ = lazy_names(__name__, _HOMES)
