"""Evaluators for STS, retrieval (BEIR), triplets and paraphrase mining, and their readers.

Every evaluator is a callable `evaluator(enc) -> dict[str, float]` with a `primary_metric`.

>>> from sentembed.evaluation import STSEvaluator, RetrievalEvaluator, TripletEvaluator
"""
from .metrics import query_metrics, retrieval_metrics
from .paraphrase import ParaphraseMiningEvaluator
from .readers import BeirData, DataFormatError, beir_doc_text, read_beir, read_jsonl, read_qrels, read_sts, read_triplets
from .retrieval import RetrievalEvaluator
from .sts import STSEvaluator
from .triplets import TripletEvaluator

__all__ = [
    "BeirData", "DataFormatError", "ParaphraseMiningEvaluator", "RetrievalEvaluator", "STSEvaluator",
    "TripletEvaluator", "beir_doc_text", "query_metrics", "read_beir", "read_jsonl", "read_qrels",
    "read_sts", "read_triplets", "retrieval_metrics",
]
