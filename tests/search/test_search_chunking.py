"""Chunking: every passage is a span of its document, windows fit, cuts fall between words."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from sentembed.search.chunking import Chunker


@pytest.fixture(scope="module")
def model_tokenizer(real_model_path):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(real_model_path / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    return tok


def tokens_of(chunker: Chunker, text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    (t,) = chunker._tokenize([text])
    return t.starts, t.ends, t.words


def check(chunker: Chunker, text: str, whole_words: bool) -> list[tuple[int, int]]:
    spans = chunker.spans(text)
    assert spans and spans == chunker.split([text])[0]
    starts, ends, words = tokens_of(chunker, text)
    if len(starts) <= chunker.tokens:
        assert spans == [(0, len(text))]
        return spans
    prev = -1
    covered = np.zeros(len(starts), dtype=bool)
    for s, e in spans:
        passage = text[s:e]
        assert 0 <= s < e <= len(text) and passage and passage == text[s:e]
        assert s > prev  # windows move forward
        prev = s
        inside = (starts >= s) & (ends <= e)
        assert inside.sum() <= chunker.tokens  # the window fits the model
        covered |= inside
        if whole_words and e < len(text):
            nxt = np.searchsorted(starts, e)  # the first token after the cut
            # Only a word too long to leave the window room past its overlap may be cut.
            if 0 < nxt < len(starts) and (words == words[nxt]).sum() < chunker.tokens - chunker.overlap:
                assert words[nxt] != words[nxt - 1], f"cut inside a word at {e}: {text[max(0, e - 10):e + 10]!r}"
    assert covered.all()  # no token is lost
    return spans


# Words of several scripts, punctuation and whitespace, with sentence and paragraph breaks.
WORD = st.one_of(
    st.text(st.characters(whitelist_categories=("Lu", "Ll", "Nd")), min_size=1, max_size=8),
    st.sampled_from(["東京", "タワー", "😀", "naïve", "x_y", "e-mail", "don't", "Ünïcödé", "数据"]),
)
SEPARATOR = st.sampled_from([" ", " ", " ", ". ", ", ", "\n", "\n\n", "! ", "。", "\t", "  "])
PROSE = st.lists(st.tuples(WORD, SEPARATOR), max_size=120).map(lambda ws: "".join(w + s for w, s in ws))
ANY_TEXT = st.one_of(st.text(max_size=300), PROSE, st.sampled_from(["", " ", "\n\n\t ", "a" * 500, "😀" * 50]),
                     st.text(st.characters(min_codepoint=0x4E00, max_codepoint=0x4FFF), max_size=200))
SIZES = st.tuples(st.integers(2, 24), st.integers(0, 23)).filter(lambda t: t[1] < t[0])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=ANY_TEXT, sizes=SIZES)
def test_spans_without_a_model(text, sizes):
    check(Chunker(*sizes), text, whole_words=False)


@settings(max_examples=200, deadline=None)
@given(text=PROSE, sizes=SIZES)
def test_prose_is_cut_between_words(text, sizes):
    check(Chunker(*sizes), text, whole_words=True)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=ANY_TEXT, sizes=SIZES)
def test_spans_with_the_model_tokenizer(model_tokenizer, text, sizes):
    check(Chunker(*sizes, tokenizer=model_tokenizer), text, whole_words=False)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=PROSE, sizes=SIZES)
def test_model_tokenizer_cuts_between_words(model_tokenizer, text, sizes):
    check(Chunker(*sizes, tokenizer=model_tokenizer), text, whole_words=True)


def test_prefers_sentence_and_paragraph_ends():
    text = ("The first paragraph ends here.\n\nThe second paragraph has a sentence. "
            "Then another sentence follows it and goes on for a while longer than that.")
    spans = Chunker(tokens=9, overlap=2).spans(text)
    assert text[slice(*spans[0])] == "The first paragraph ends here."
    assert text[slice(*spans[1])].endswith("has a sentence.")


def test_a_long_document_in_pieces_equals_one_piece(monkeypatch, model_tokenizer):
    """Tokenizing a long text piece by piece gives the same windows as all at once."""
    from sentembed.search import chunking

    rng = np.random.default_rng(0)
    vocab = ["alpha", "beta.", "gamma,", "delta\n\n", "epsilon", "zeta!", "ηθ", "東京", "internationalization"]
    text = " ".join(rng.choice(vocab, 30_000))
    chunker = Chunker(60, 10, tokenizer=model_tokenizer)
    whole = chunker._windows(text, iter(chunker._tokenize([text])))
    monkeypatch.setattr(chunking, "PIECE_CHARS", 5_000)
    assert chunker.spans(text) == whole and len(whole) > 100


def test_defaults_fit_the_model(tiny_model):
    import sentembed

    enc = sentembed.load(str(tiny_model))
    chunker = Chunker.for_encoder(enc)
    assert chunker.tokens == enc.max_seq_length - 2 and chunker.overlap == chunker.tokens // 6
    text = " ".join(f"word{i}" for i in range(400))
    for s, e in chunker.spans(text):
        assert enc.count_tokens([text[s:e]])[0] <= enc.max_seq_length
    with pytest.raises(ValueError, match="does not fit the model"):
        Chunker.for_encoder(enc, tokens=enc.max_seq_length)


@pytest.mark.parametrize("tokens,overlap,message", [
    (10, 10, "must be smaller than chunk_tokens"), (10, 12, "must be smaller"), (1, 0, "at least 2"),
    (10, -1, "non-negative"), (10.5, 1, "integer"),
])
def test_bad_sizes(tokens, overlap, message):
    with pytest.raises(ValueError, match=message):
        Chunker(tokens, overlap)
