"""Fine-tuning: datasets and samplers, losses, the training loop, model cards.

    from sentembed.training import TrainConfig, train
    train(TrainConfig(model="all-mpnet-base-v2", output_dir="runs/x",
                      datasets=[{"path": "pairs.jsonl"}], loss="mnrl"))

The names load on first use, so `sentembed --help` does not import torch.
"""
from __future__ import annotations

from ..model.lazy import lazy_names

_HOMES = {
    "TrainConfig": "config", "DataError": "data", "DatasetSpec": "data", "TrainDataset": "data",
    "load_data_config": "data", "weights_from_lines": "data",
    "CachedMultipleNegativesRankingLoss": "losses", "CoSENTLoss": "losses", "CosineSimilarityLoss": "losses",
    "MatryoshkaLoss": "losses", "MultipleNegativesRankingLoss": "losses", "TripletLoss": "losses",
    "make_loss": "losses", "train": "run", "MixtureBatchSampler": "samplers", "Trainer": "trainer",
    "TrainingError": "trainer", "TrainResult": "trainer",
    "BinaryCrossEntropyLoss": "cross_encoder_losses", "ListNetLoss": "cross_encoder_losses",
    "mine_hard_negatives": "hard_negatives",
}
__all__ = list(_HOMES)

__getattr__ = lazy_names(__name__, _HOMES)
