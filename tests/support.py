"""Helpers shared by the tests (importable as `support`: pytest puts tests/ on the path)."""
from __future__ import annotations

from pathlib import Path

import torch


def read_stsb(path: Path) -> tuple[list[str], list[str], list[float]]:
    """The original STS-B TSV: fields 4, 5, 6 are score, sentence1, sentence2."""
    a, b, scores = [], [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        scores.append(float(parts[4]))
        a.append(parts[5])
        b.append(parts[6])
    return a, b, scores


TINY_CONFIG = dict(
    vocab_size=30527,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=514,
    relative_attention_num_buckets=32,
    layer_norm_eps=1e-5,
    pad_token_id=1,
    bos_token_id=0,
    eos_token_id=2,
)


def build_tiny_st_model(
    out: Path,
    src: Path,
    pooling: str | list[str] = "mean",
    normalize: bool = True,
    dense_out: int | None = None,
    similarity: str | None = None,
    prompts: dict | None = None,
    include_prompt: bool = True,
    max_seq_length: int = 64,
    seed: int = 0,
) -> Path:
    """Build and save a random-weight MPNet Sentence Transformers model with the reference."""
    from sentence_transformers import SentenceTransformer, models
    from transformers import AutoTokenizer, MPNetConfig, MPNetModel

    torch.manual_seed(seed)
    hf_dir = out / "hf"
    MPNetModel(MPNetConfig(**TINY_CONFIG)).save_pretrained(hf_dir)
    AutoTokenizer.from_pretrained(str(src)).save_pretrained(hf_dir)
    word = models.Transformer(str(hf_dir), max_seq_length=max_seq_length)
    modes = [pooling] if isinstance(pooling, str) else pooling
    pool = models.Pooling(
        word.get_embedding_dimension(), pooling_mode=modes[0] if len(modes) == 1 else tuple(modes),
        include_prompt=include_prompt,
    )
    mods = [word, pool]
    if dense_out:
        mods.append(models.Dense(pool.get_embedding_dimension(), dense_out, activation_function=torch.nn.Tanh()))
    if normalize:
        mods.append(models.Normalize())
    model = SentenceTransformer(modules=mods, device="cpu", prompts=prompts, similarity_fn_name=similarity)
    path = out / "model"
    model.save(str(path))
    return path
