"""Losses on sentence embeddings: `loss(embeddings, labels) -> scalar`, where `embeddings`
holds one (batch, dim) tensor per column. Models are not involved, so each loss is tested
against its formula on plain tensors::

    >>> a, p = torch.randn(4, 8), torch.randn(4, 8)
    >>> MultipleNegativesRankingLoss(scale=20)([a, p]).shape
    torch.Size([])

Under torch.distributed the in-batch losses gather every rank's embeddings with their
gradients, so each anchor sees the whole global batch as negatives.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..vectors import paired_scores, pairwise_scores, resolve_similarity


def _world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def gather_with_grad(x: Tensor) -> Tensor:
    """All ranks' `x` concatenated along dim 0; gradients flow back to each rank's own part
    (torch.distributed.nn's all_gather sums the incoming gradients across ranks)."""
    rank, world = _world()
    if world == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x.contiguous()), dim=0)


def _up(x: Tensor) -> Tensor:
    """Losses run in at least fp32: bf16 logits lose the small differences they are made of."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


class EmbeddingLoss(nn.Module):
    """Base: `min_columns` texts per row, `needs_label` for scored pairs, `params()` for the card."""

    min_columns: int = 2
    max_columns: int | None = None
    needs_label: bool = False
    cached: bool = False

    def params(self) -> dict[str, Any]:
        return {}

    def check_columns(self, n: int, dataset: str = "") -> None:
        where = f"dataset {dataset!r}: " if dataset else ""
        name = type(self).__name__
        if n < self.min_columns:
            raise ValueError(f"{where}{name} needs at least {self.min_columns} text columns per row, the data has {n}")
        if self.max_columns is not None and n > self.max_columns:
            raise ValueError(f"{where}{name} takes {self.max_columns} text columns per row, the data has {n}")


class MultipleNegativesRankingLoss(EmbeddingLoss):
    """InfoNCE over in-batch negatives: row i's positive is the target among all positives
    (and hard negatives, columns 3+) of the batch, logits = scale × similarity.

    symmetric=True adds the positive -> anchor direction (the all-mpnet-base-v2 recipe):
    loss = (CE(anchor -> candidates) + CE(positive -> anchors)) / 2.
    """

    def __init__(self, scale: float = 20.0, similarity: str = "cosine", symmetric: bool = False) -> None:
        super().__init__()
        self.scale, self.similarity, self.symmetric = float(scale), resolve_similarity(similarity), symmetric

    def params(self) -> dict[str, Any]:
        return {"scale": self.scale, "similarity": self.similarity, "symmetric": self.symmetric}

    def forward(self, embeddings: Sequence[Tensor], labels: Tensor | None = None) -> Tensor:
        anchors, candidates = embeddings[0], list(embeddings[1:])
        rank, world = _world()
        n = anchors.shape[0]
        all_anchors = gather_with_grad(anchors)
        all_cands = [gather_with_grad(c) for c in candidates]
        # this rank's anchors against every positive and hard negative of the global batch
        scores = self.scale * pairwise_scores(anchors, torch.cat(all_cands, 0), self.similarity)
        target = torch.arange(rank * n, rank * n + n, device=anchors.device)
        loss = F.cross_entropy(_up(scores), target)
        if self.symmetric:
            # this rank's positives against every anchor of the global batch
            back = self.scale * pairwise_scores(candidates[0], all_anchors, self.similarity)
            loss = (loss + F.cross_entropy(_up(back), target)) / 2
        return loss


class CachedMultipleNegativesRankingLoss(MultipleNegativesRankingLoss):
    """MNRL with GradCache (Gao et al. 2021): embeddings are computed in mini-batches without a
    graph, the loss's gradient w.r.t. them is taken once, then each mini-batch is re-run
    with a graph and back-propagated with that gradient. Same gradients as MNRL, memory of
    one mini-batch. The trainer drives it through `step()`."""

    cached = True

    def __init__(self, scale: float = 20.0, similarity: str = "cosine", symmetric: bool = False,
                 mini_batch_size: int = 32) -> None:
        super().__init__(scale, similarity, symmetric)
        self.mini_batch_size = int(mini_batch_size)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "mini_batch_size": self.mini_batch_size}

    def step(self, embed: Any, columns: Sequence[Sequence[str]], labels: Tensor | None = None,
             grad_scale: float = 1.0) -> Tensor:
        """Forward and backward for one batch; returns the (detached) loss.

        embed(texts) -> (len(texts), dim) tensor with a graph. Parameter gradients are
        accumulated (multiplied by `grad_scale`), exactly as `loss.backward()` would."""
        m = self.mini_batch_size
        chunks = [[col[i:i + m] for i in range(0, len(col), m)] for col in columns]
        reps, states = [], []
        with torch.no_grad():
            for col in chunks:
                col_reps, col_states = [], []
                for texts in col:
                    # keep the RNG so the re-run draws the same dropout masks
                    col_states.append(torch.get_rng_state())
                    col_reps.append(_up(embed(texts).detach()))
                reps.append(torch.cat(col_reps))
                states.append(col_states)
        after = torch.get_rng_state()
        leaves = [r.requires_grad_() for r in reps]
        loss = self.forward(leaves, labels)
        (loss * grad_scale).backward()
        for col, col_states, leaf in zip(chunks, states, leaves):
            start = 0
            for texts, state in zip(col, col_states):
                torch.set_rng_state(state)
                out = embed(texts)
                g = leaf.grad[start:start + len(texts)]
                # one surrogate backward per mini-batch: d(out·g)/dθ = gᵀ ∂out/∂θ
                (_up(out) * g).sum().backward()
                start += len(texts)
        torch.set_rng_state(after)
        return loss.detach()


class TripletLoss(EmbeddingLoss):
    """loss = relu(d(a, p) - d(a, n) + margin), averaged; d is a TRUE distance (larger = farther).
    (sentence-transformers 5.0–5.3 fed negated Euclidean distances here and trained the
    wrong way; the tests check the formula itself.)"""

    min_columns = max_columns = 3

    def __init__(self, distance: str = "euclidean", margin: float = 5.0) -> None:
        super().__init__()
        self.distance, self.margin = resolve_similarity(distance, "TripletLoss distance"), float(margin)
        if self.distance == "dot":
            raise ValueError("TripletLoss: dot is not a distance; use euclidean, cosine or manhattan")

    def params(self) -> dict[str, Any]:
        return {"distance": self.distance, "margin": self.margin}

    def dist(self, a: Tensor, b: Tensor) -> Tensor:
        # Scores are negated distances for euclidean and manhattan; cosine distance is 1 - cos.
        score = paired_scores(a, b, self.distance)
        return 1 - score if self.distance == "cosine" else -score

    def forward(self, embeddings: Sequence[Tensor], labels: Tensor | None = None) -> Tensor:
        a, p, n = (_up(e) for e in embeddings)
        return F.relu(self.dist(a, p) - self.dist(a, n) + self.margin).mean()


def _labels(labels: Tensor | None, n: int, name: str) -> Tensor:
    if labels is None:
        raise ValueError(f"{name} needs a float label per pair (a 'label' or 'score' column)")
    if labels.numel() != n:
        raise ValueError(f"{name}: {labels.numel()} labels for {n} pairs")
    return labels.view(-1)


class CoSENTLoss(EmbeddingLoss):
    """CoSENT (Su 2022): for every two pairs with label_i > label_j, penalise
    cos_j > cos_i: loss = log(1 + Σ exp(scale·(cos_j - cos_i)))."""

    max_columns = 2
    needs_label = True

    def __init__(self, scale: float = 20.0) -> None:
        super().__init__()
        self.scale = float(scale)

    def params(self) -> dict[str, Any]:
        return {"scale": self.scale}

    def forward(self, embeddings: Sequence[Tensor], labels: Tensor | None = None) -> Tensor:
        a, b = (_up(e) for e in embeddings)
        y = _labels(labels, a.shape[0], "CoSENTLoss")
        s = F.cosine_similarity(a, b) * self.scale
        diff = s[None, :] - s[:, None]                       # [i, j] = s_j - s_i
        mask = y[:, None] > y[None, :]                       # pairs where i should beat j
        diff = diff[mask]
        # the leading 0 is the "1 +" inside the log
        return torch.logsumexp(torch.cat([diff.new_zeros(1), diff]), dim=0)


class CosineSimilarityLoss(EmbeddingLoss):
    """MSE between cos(a, b) and the label (scores in [0, 1] or [-1, 1])."""

    max_columns = 2
    needs_label = True

    def forward(self, embeddings: Sequence[Tensor], labels: Tensor | None = None) -> Tensor:
        a, b = (_up(e) for e in embeddings)
        y = _labels(labels, a.shape[0], "CosineSimilarityLoss")
        cos = F.cosine_similarity(a, b)
        return F.mse_loss(cos, y.to(cos.dtype))


class MatryoshkaLoss(EmbeddingLoss):
    """Σ_d w_d · loss(embeddings[..., :d]): the inner loss at several truncated dimensions,
    so the first d dimensions work alone (Kusupati et al. 2022)."""

    def __init__(self, loss: EmbeddingLoss, dims: Sequence[int], weights: Sequence[float] | None = None) -> None:
        super().__init__()
        if loss.cached:
            raise ValueError("MatryoshkaLoss wraps non-cached losses only")
        self.loss, self.dims = loss, [int(d) for d in dims]
        self.weights = [float(w) for w in weights] if weights is not None else [1.0] * len(self.dims)
        if len(self.weights) != len(self.dims):
            raise ValueError(f"{len(self.weights)} weights for {len(self.dims)} dims")
        self.min_columns, self.max_columns = loss.min_columns, loss.max_columns
        self.needs_label = loss.needs_label

    def params(self) -> dict[str, Any]:
        return {"loss": type(self.loss).__name__, **self.loss.params(), "dims": self.dims, "weights": self.weights}

    def forward(self, embeddings: Sequence[Tensor], labels: Tensor | None = None) -> Tensor:
        return sum(w * self.loss([e[..., :d] for e in embeddings], labels)
                   for d, w in zip(self.dims, self.weights))  # type: ignore[return-value]


LOSSES: dict[str, type[EmbeddingLoss]] = {
    "mnrl": MultipleNegativesRankingLoss,
    "multiple_negatives_ranking": MultipleNegativesRankingLoss,
    "cached_mnrl": CachedMultipleNegativesRankingLoss,
    "triplet": TripletLoss,
    "cosent": CoSENTLoss,
    "cosine_similarity": CosineSimilarityLoss,
}


def make_loss(name: str, params: dict[str, Any] | None = None) -> EmbeddingLoss:
    """Build a loss by name: `make_loss("triplet", {"distance": "euclidean", "margin": 5})`;
    "bce" and "listnet" train a cross-encoder (cross_encoder_losses.py).
    `matryoshka_dims` (and `matryoshka_weights`) in params wrap it in MatryoshkaLoss."""
    from .cross_encoder_losses import CROSS_ENCODER_LOSSES   # they build on EmbeddingLoss, defined here

    losses = {**LOSSES, **CROSS_ENCODER_LOSSES}
    params = dict(params or {})
    key = name.lower().replace("-", "_").removesuffix("loss").rstrip("_")
    key = {"multiplenegativesranking": "mnrl", "cachedmultiplenegativesranking": "cached_mnrl",
           "cosinesimilarity": "cosine_similarity", "binarycrossentropy": "bce"}.get(key, key)
    if key not in losses:
        hidden = {"multiple_negatives_ranking", "binary_cross_entropy", "list_net"}
        raise ValueError(f"unknown loss {name!r}; choose one of {sorted(set(losses) - hidden)}")
    dims, weights = params.pop("matryoshka_dims", None), params.pop("matryoshka_weights", None)
    if dims and key in CROSS_ENCODER_LOSSES:
        raise ValueError(f"loss {name!r} trains a cross-encoder, which has no embeddings to truncate (matryoshka_dims)")
    try:
        loss = losses[key](**params)
    except TypeError as e:
        raise ValueError(f"loss {name!r}: bad parameters {params} ({e})") from None
    return MatryoshkaLoss(loss, dims, weights) if dims else loss
