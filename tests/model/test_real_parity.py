"""The real all-mpnet-base-v2 against sentence-transformers on real text."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

pytestmark = pytest.mark.real_model

EDGE_CASES = ["", "   \t ", "😀🎉🔥 emoji only", "日本語の文章と中文句子", "café naïve résumé Ångström",
              "a" * 5000, "Ünïcödé " * 300]


@pytest.fixture(scope="module")
def texts(stsb_dev):
    sentences = list(dict.fromkeys(stsb_dev[0] + stsb_dev[1]))[:500]
    # 20 texts past 384 tokens: runs of dev sentences glued together.
    long = [" ".join(sentences[i: i + 70]) for i in range(0, 20 * 20, 20)]
    return sentences + long + EDGE_CASES


@pytest.fixture(scope="module")
def expected(reference_real, texts):
    return reference_real.encode(texts, batch_size=32)


def test_long_texts_really_are_long(real_encoder, texts):
    assert sum(n > 384 for n in real_encoder.count_tokens(texts)) >= 20


def test_matches_reference_within_1e5(real_encoder, texts, expected):
    got = real_encoder.encode(texts)
    assert got.shape == (len(texts), 768) and got.dtype == np.float32
    assert np.abs(got - expected).max() <= 1e-5


@pytest.mark.parametrize("batch_size", [1, 7, 64])
def test_batch_size_does_not_change_vectors(real_encoder, texts, expected, batch_size):
    subset = list(range(0, 500, 25)) + list(range(500, len(texts)))
    got = real_encoder.encode([texts[i] for i in subset], batch_size=batch_size)
    assert np.abs(got - expected[subset]).max() <= 1e-5


def test_single_string_gives_a_vector(real_encoder, texts, expected):
    vector = real_encoder.encode(texts[0])
    assert vector.shape == (768,)
    assert np.abs(vector - expected[0]).max() <= 1e-5


def test_stsb_dev_spearman(real_encoder, stsb_dev):
    a, b, gold = stsb_dev
    ea, eb = real_encoder.encode(a, batch_size=64), real_encoder.encode(b, batch_size=64)
    cosine = (ea * eb).sum(axis=1) / np.linalg.norm(ea, axis=1) / np.linalg.norm(eb, axis=1)
    assert spearmanr(gold, cosine).statistic == pytest.approx(0.88109, abs=2e-5)
