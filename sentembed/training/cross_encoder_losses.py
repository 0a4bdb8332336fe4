"""Losses for training a cross-encoder (a reranker): `loss(score, columns, labels) -> scalar`,
where `score(queries, documents)` runs the model on those pairs and returns one logit each,
with a graph. The trainer hands its scorer in (bf16 autocast and all); the tests hand in a
plain function, so each loss is checked against its formula on plain tensors::

    >>> logits = torch.tensor([2.0, -1.0])
    >>> BinaryCrossEntropyLoss()(lambda q, d: logits, [["q", "q"], ["d1", "d2"]], torch.tensor([1.0, 0.0]))
    tensor(0.2201)

The listwise loss is ListNet rather than LambdaLoss: mined hard negatives give each query one
positive and k negatives with binary labels, where ListNet is one softmax cross-entropy per
query over its list (smooth, no sorting, stable under bf16 autocast once lifted to fp32), while
LambdaLoss's NDCG-weighted pairwise terms need graded labels to say more than that and cost a
sort and k² pair terms a query.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .losses import EmbeddingLoss, _labels, _up

Scorer = Callable[[Sequence[str], Sequence[str]], Tensor]


class CrossEncoderLoss(EmbeddingLoss):
    """Base: the trainer calls `loss(score, columns, labels)` instead of embedding the columns."""

    cross_encoder = True

    def forward(self, score: Scorer, columns: Sequence[Sequence[str]], labels: Tensor | None = None) -> Tensor:
        raise NotImplementedError


class BinaryCrossEntropyLoss(CrossEncoderLoss):
    """Rows (query, document) with a label y in [0, 1] (1 relevant, 0 not; soft labels allowed):

        loss = mean_i -[w · y_i · log σ(s_i) + (1 - y_i) · log(1 - σ(s_i))]

    with s_i the pair's logit and w = pos_weight (1 unless positives are rare in the data).
    Mined labelled pairs (`mine_hard_negatives(output="labeled-pairs")`) are its input."""

    min_columns = max_columns = 2
    needs_label = True

    def __init__(self, pos_weight: float | None = None) -> None:
        super().__init__()
        self.pos_weight = None if pos_weight is None else float(pos_weight)

    def params(self) -> dict[str, Any]:
        return {"pos_weight": self.pos_weight}

    def forward(self, score: Scorer, columns: Sequence[Sequence[str]], labels: Tensor | None = None) -> Tensor:
        queries, documents = columns
        y = _labels(labels, len(queries), "BinaryCrossEntropyLoss")
        if bool(((y < 0) | (y > 1)).any()):
            raise ValueError("BinaryCrossEntropyLoss: labels must lie in [0, 1]")
        logits = _up(score(queries, documents)).view(-1)
        weight = None if self.pos_weight is None else torch.tensor(self.pos_weight, device=logits.device)
        return F.binary_cross_entropy_with_logits(logits, y.to(logits), pos_weight=weight)


class ListNetLoss(CrossEncoderLoss):
    """ListNet (Cao et al. 2007), top-one probabilities. Rows (query, positive, negative_1, …,
    negative_k), as `mine_hard_negatives(output="n-tuple")` writes them; the list's labels are
    y = (1, 0, …, 0). With s the logits of (query, document_j):

        loss = mean_queries -Σ_j softmax(y)_j · log softmax(s)_j

    (softmax of the labels as the target distribution, as sentence-transformers' ListNetLoss
    does; a temperature t divides the logits: softmax(s / t))."""

    min_columns = 3

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"ListNetLoss: temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def params(self) -> dict[str, Any]:
        return {"temperature": self.temperature}

    def forward(self, score: Scorer, columns: Sequence[Sequence[str]], labels: Tensor | None = None) -> Tensor:
        queries, documents = columns[0], columns[1:]
        n, k = len(queries), len(documents)
        # one forward pass over all (query, document) pairs, query-major: row i, then its list
        flat_q = [q for q in queries for _ in range(k)]
        flat_d = [documents[j][i] for i in range(n) for j in range(k)]
        logits = _up(score(flat_q, flat_d)).view(n, k) / self.temperature
        target = torch.zeros_like(logits)
        target[:, 0] = 1.0
        return F.cross_entropy(logits, target.softmax(dim=1))


CROSS_ENCODER_LOSSES: dict[str, type[CrossEncoderLoss]] = {
    "bce": BinaryCrossEntropyLoss,
    "binary_cross_entropy": BinaryCrossEntropyLoss,
    "listnet": ListNetLoss,
    "list_net": ListNetLoss,
}
