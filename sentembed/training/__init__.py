"""Fine-tuning: datasets and samplers, losses, the training loop, model cards.

    from sentembed.training import TrainConfig, train
    train(TrainConfig(model="all-mpnet-base-v2", output_dir="runs/x",
                      datasets=[{"path": "pairs.jsonl"}], loss="mnrl"))
"""
from .config import TrainConfig
from .data import DataError, DatasetSpec, TrainDataset, load_data_config, weights_from_lines
from .losses import (CachedMultipleNegativesRankingLoss, CoSENTLoss, CosineSimilarityLoss, MatryoshkaLoss,
                     MultipleNegativesRankingLoss, TripletLoss, make_loss)
from .run import train
from .samplers import MixtureBatchSampler
from .trainer import Trainer, TrainingError, TrainResult

__all__ = ["TrainConfig", "DataError", "DatasetSpec", "TrainDataset", "load_data_config", "weights_from_lines",
           "CachedMultipleNegativesRankingLoss", "CoSENTLoss", "CosineSimilarityLoss", "MatryoshkaLoss",
           "MultipleNegativesRankingLoss", "TripletLoss", "make_loss", "train", "MixtureBatchSampler", "Trainer",
           "TrainingError", "TrainResult"]
