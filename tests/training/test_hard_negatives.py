"""Hard-negative mining: no judged-relevant text is ever a negative, the margins hold against
the encoder's own scores, the rank window and outputs are as documented, and an index (or
anything with its search_many) stands in for the corpus."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from support import HashEncoder

from sentembed.training.hard_negatives import mine_hard_negatives
from sentembed.vectors import paired_scores

WORDS = "beer hops malt coffee grind roast data model cell gene protein market bank stocks dog cat".split()
RNG = np.random.default_rng(0)
CORPUS = [" ".join(RNG.choice(WORDS, size=6)) for _ in range(300)]
PAIRS = [(" ".join(RNG.choice(WORDS, size=3)), CORPUS[i]) for i in range(0, 120, 2)]
# the same query with a second judged positive: neither may be a negative of either row
PAIRS += [(PAIRS[0][0], CORPUS[1]), (PAIRS[3][0], CORPUS[7])]


def positives_by_query():
    out: dict[str, set[str]] = {}
    for q, p in PAIRS:
        out.setdefault(q, set()).add(p)
    return out


def score(enc, a, b):
    return float(paired_scores(enc.encode([a]), enc.encode([b]), "cosine")[0])


@pytest.mark.parametrize("sampling", ["top", "random"])
def test_relative_margin_holds_and_judged_texts_are_never_negatives(sampling):
    enc = HashEncoder(dimension=64)
    rows = list(mine_hard_negatives(PAIRS, corpus=CORPUS, encoder=enc, num_negatives=4, range_max=40,
                                    relative_margin=0.1, sampling=sampling, show_progress=False, chunk_size=16))
    assert rows and all(len(r) == 3 for r in rows)
    judged = positives_by_query()
    for query, positive, negative in rows:
        assert negative not in judged[query]
        assert score(enc, query, negative) <= (1 - 0.1) * score(enc, query, positive) + 1e-6


def test_absolute_margin_max_score_and_the_rank_window():
    enc = HashEncoder(dimension=64)
    query, positive = PAIRS[5]
    everything = list(mine_hard_negatives([(query, positive)], corpus=CORPUS, encoder=enc, num_negatives=300,
                                          range_max=300, show_progress=False))
    ranked = [n for _, _, n in everything]
    scores = [score(enc, query, n) for n in ranked]
    assert all(a >= b - 1e-6 for a, b in zip(scores, scores[1:])) and positive not in ranked
    window = [n for _, _, n in mine_hard_negatives([(query, positive)], corpus=CORPUS, encoder=enc, num_negatives=3,
                                                   range_min=5, range_max=20, show_progress=False)]
    assert window == ranked[5:8]
    pos = score(enc, query, positive)
    capped = mine_hard_negatives([(query, positive)], corpus=CORPUS, encoder=enc, num_negatives=300, range_max=300,
                                 margin=0.05, max_score=0.5, show_progress=False)
    assert all(score(enc, query, n) <= min(pos - 0.05, 0.5) + 1e-6 for _, _, n in capped)


def test_outputs():
    enc = HashEncoder(dimension=64)
    tuples = list(mine_hard_negatives(PAIRS[:10], corpus=CORPUS, encoder=enc, num_negatives=3, output="n-tuple",
                                      show_progress=False))
    assert len(tuples) == 10 and all(len(t) == 5 for t in tuples)
    labelled = list(mine_hard_negatives(PAIRS[:2], corpus=CORPUS, encoder=enc, num_negatives=2,
                                        output="labeled-pairs", show_progress=False))
    assert [r[2] for r in labelled] == [1.0, 0.0, 0.0, 1.0, 0.0, 0.0]
    assert labelled[0][:2] == PAIRS[0] and labelled[1][0] == PAIRS[0][0]
    # too strict a margin leaves too few: the n-tuple of that pair is skipped, not padded
    assert list(mine_hard_negatives(PAIRS[:3], corpus=CORPUS, encoder=enc, num_negatives=3, output="n-tuple",
                                    max_score=-1.0, show_progress=False)) == []


class CountingEncoder(HashEncoder):
    """Records every text it embeds."""

    def __init__(self):
        super().__init__(dimension=64)
        self.embedded: list[str] = []

    def encode(self, texts, **kw):
        self.embedded += [texts] if isinstance(texts, str) else list(texts)
        return super().encode(texts, **kw)


def test_each_distinct_text_is_embedded_once():
    """A positive found in the corpus reuses its corpus vector; one outside it is embedded,
    and its score (the margin's base) is right either way."""
    enc = CountingEncoder()
    outside = (PAIRS[2][0], PAIRS[2][0] + " outside")   # close to its query, so negatives pass the margin
    pairs = PAIRS + [outside]
    rows = list(mine_hard_negatives(pairs, corpus=CORPUS, encoder=enc, num_negatives=3, relative_margin=0.1,
                                    show_progress=False, chunk_size=16))
    queries = {q for q, _ in pairs}
    assert Counter(t for t in enc.embedded if t not in queries) == Counter(CORPUS + [outside[1]])
    fresh = HashEncoder(dimension=64)
    assert any(p == outside[1] for _, p, _ in rows)
    for query, positive, negative in rows:
        assert score(fresh, query, negative) <= (1 - 0.1) * score(fresh, query, positive) + 1e-6


def test_without_a_corpus_the_positives_are_the_corpus():
    enc = HashEncoder(dimension=64)
    rows = list(mine_hard_negatives(PAIRS, encoder=enc, num_negatives=2, show_progress=False))
    positives = {p for _, p in PAIRS}
    judged = positives_by_query()
    assert rows and all(n in positives and n not in judged[q] for q, _, n in rows)


def test_an_index_stands_in_for_the_corpus(tmp_path):
    from sentembed.search import Index

    enc = HashEncoder(dimension=64)
    index = Index.create(tmp_path / "index", enc, chunk_tokens=None)
    index.add(CORPUS)
    from_index = list(mine_hard_negatives(PAIRS, index=index, num_negatives=3, relative_margin=0.1,
                                          show_progress=False))
    from_corpus = list(mine_hard_negatives(PAIRS, corpus=CORPUS, encoder=enc, num_negatives=3, relative_margin=0.1,
                                           show_progress=False))
    assert from_index == from_corpus
    hybrid = list(mine_hard_negatives(PAIRS, index=index, num_negatives=3, relative_margin=0.1, mode="hybrid",
                                      show_progress=False))
    judged = positives_by_query()
    for query, positive, negative in hybrid:
        assert negative not in judged[query]
        assert score(enc, query, negative) <= 0.9 * score(enc, query, positive) + 1e-6


@pytest.mark.parametrize("kwargs, message", [
    (dict(mode="hybrid"), "mode='hybrid' ranks with an index"),
    (dict(range_min=10, range_max=5), "range_max .5. must be greater than range_min .10."),
    (dict(num_negatives=0), "num_negatives must be a positive integer"),
    (dict(output="pairs"), "unknown output 'pairs'; valid: triplets, n-tuple, labeled-pairs"),
    (dict(relative_margin=1.5), r"relative_margin must lie in \[0, 1\)"),
    (dict(index=object()), "give corpus= or index=, not both"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        list(mine_hard_negatives(PAIRS, **{"corpus": CORPUS, "encoder": HashEncoder(), **kwargs}))


def test_bad_pairs():
    with pytest.raises(TypeError, match="pair 1 is not a"):
        list(mine_hard_negatives([("q", "p"), "nope"], corpus=CORPUS, encoder=HashEncoder()))
    with pytest.raises(ValueError, match="no pairs"):
        list(mine_hard_negatives([], corpus=CORPUS, encoder=HashEncoder()))


def test_the_command_line_mines_from_a_corpus_file_and_from_an_index(tiny_model, tmp_path):
    import json

    from typer.testing import CliRunner

    import sentembed
    from sentembed.cli import app
    from sentembed.search import Index

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"query": q, "positive": p}) + "\n" for q, p in PAIRS[:20]))
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in CORPUS[:100]))
    runner = CliRunner()
    result = runner.invoke(app, ["mine-negatives", str(pairs), "-o", str(tmp_path / "out.jsonl"), "--corpus",
                                 str(corpus), "-m", str(tiny_model), "--output", "n-tuple", "--num-negatives", "2"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(rows) == 20 and list(rows[0]) == ["query", "positive", "negative_1", "negative_2"]
    assert "negative_1" in result.output
    index = Index.create(tmp_path / "index", sentembed.load(str(tiny_model)), chunk_tokens=None)
    index.add(CORPUS[:100])
    index.close()
    result = runner.invoke(app, ["mine-negatives", str(pairs), "-o", str(tmp_path / "idx.jsonl"), "--index",
                                 str(tmp_path / "index"), "-m", str(tiny_model), "--mode", "hybrid"])
    assert result.exit_code == 0, result.output
    judged = positives_by_query()
    assert all(r["negative"] not in judged[r["query"]] for r in map(json.loads, (tmp_path / "idx.jsonl").open()))
    result = runner.invoke(app, ["mine-negatives", str(pairs), "-o", str(tmp_path / "x.jsonl"), "-m", str(tiny_model),
                                 "--mode", "hybrid"])
    assert result.exit_code == 2 and "mode='hybrid' ranks with an index" in result.output
