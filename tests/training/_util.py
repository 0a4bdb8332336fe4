"""Helpers shared by the training tests."""
from __future__ import annotations

import torch


def no_dropout(enc) -> None:
    """Turn dropout off everywhere (nn.Dropout and the attention's dropout_p), so runs that
    split a batch differently still compute the same function."""
    for m in enc.pipeline.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        if hasattr(m, "dropout_p"):
            m.dropout_p = 0.0
