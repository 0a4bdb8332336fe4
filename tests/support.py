"""Helpers shared by every test: the one module for them (importable as `support`, since
pytest puts tests/ on the path; a child process gets tests/ on its PYTHONPATH).

    from support import HashEncoder, build_tiny_st_model, no_dropout, read_stsb
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.util
import socket
import string
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import numpy as np
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


# A WordPiece vocabulary of its own, so tiny models need no real weights: MPNet's special
# tokens, common English words, and every ASCII character alone and as a "##" continuation,
# so any ASCII word splits into known pieces instead of one [UNK].
TINY_WORDS = """
the of and to in is was for on are with as by at be this that from or an it not but have has had
were which their they one all can more will been there also who when its into than other some
only new time two about over after first would these may such most many before then where any
between each under through years during while both same well because what them those very
man woman men women people child children boy girl dog dogs cat cats horse bird fish animal
is are playing plays played play eating eats eat riding rides ride walking walks walk running
runs run sitting sits sit standing stands stand cutting cuts cut cooking cooks slicing talking
dancing singing swimming jumping driving reading writing looking holding wearing car bike
ball guitar flute piano music food meal water street road park beach field house room table
a small large big little young old red blue black white green brown yellow good bad long short
question answer document passage query search index text sentence word words first second
stocks fell rose rates interest today market price prices money bank news report said says
data model models learning training test cell cells protein gene disease patients study results
""".split()
_CHARS = string.ascii_lowercase + string.digits + string.punctuation
TINY_VOCAB = list(dict.fromkeys(
    ["<s>", "<pad>", "</s>", "<unk>", "[UNK]", *_CHARS, *("##" + c for c in _CHARS), *TINY_WORDS, "<mask>"]))


def save_tiny_tokenizer(out: Path) -> Path:
    """Write an MPNet-style WordPiece tokenizer (tokenizer.json and its config) that
    transformers, sentence-transformers and sentembed all load; built here, not downloaded."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(TINY_VOCAB)}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None,
                                                lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    tok.decoder = decoders.WordPiece()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                                   cls_token="<s>", unk_token="[UNK]", pad_token="<pad>", mask_token="<mask>",
                                   model_max_length=512)
    fast.save_pretrained(str(out))
    return Path(out)


TINY_CONFIG = dict(
    vocab_size=30527,  # MPNet's: code that builds dummy batches (the ONNX export) may use any id below it
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
    pooling: str | list[str] = "mean",
    normalize: bool = True,
    dense_out: int | None = None,
    similarity: str | None = None,
    prompts: dict | None = None,
    include_prompt: bool = True,
    max_seq_length: int = 64,
    seed: int = 0,
) -> Path:
    """Build and save a random-weight MPNet Sentence Transformers model with the reference,
    with the tiny tokenizer (no real weights needed)."""
    from sentence_transformers import SentenceTransformer, models
    from transformers import MPNetConfig, MPNetModel

    torch.manual_seed(seed)
    hf_dir = out / "hf"
    MPNetModel(MPNetConfig(**TINY_CONFIG)).save_pretrained(hf_dir)
    save_tiny_tokenizer(hf_dir)
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


def build_cross_encoder(out: Path, num_labels: int = 1, activation: torch.nn.Module | None = None,
                        seed: int = 0, max_length: int = 64) -> Path:
    """A random-weight MPNetForSequenceClassification saved by sentence-transformers' CrossEncoder
    (3 labels: contradiction, entailment, neutral), with the tiny tokenizer."""
    from sentence_transformers import CrossEncoder
    from transformers import MPNetConfig, MPNetForSequenceClassification

    torch.manual_seed(seed)
    hf = out / "hf"
    config = MPNetConfig(**TINY_CONFIG, num_labels=num_labels)
    if num_labels == 3:
        config.id2label = {0: "contradiction", 1: "entailment", 2: "neutral"}
        config.label2id = {v: k for k, v in config.id2label.items()}
    MPNetForSequenceClassification(config).save_pretrained(hf)
    save_tiny_tokenizer(hf)
    model = CrossEncoder(str(hf), device="cpu", max_length=max_length, activation_fn=activation)
    model.save(str(out / "model"))
    return out / "model"


def encode_in_threads(encoder, texts: list[str], threads: int = 4, timeout: float = 120.0) -> list[np.ndarray]:
    """`encoder.encode(texts)` from `threads` threads at once (each its own rotation of the
    texts, returned in the original order); fails, instead of hanging, if any does not finish."""
    out: list = [None] * threads

    def run(i: int) -> None:
        order = list(range(i, len(texts))) + list(range(i))
        vectors = encoder.encode([texts[j] for j in order], normalize=False)
        out[i] = vectors[np.argsort(order)]

    workers = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(threads)]
    for worker in workers:
        worker.start()
    deadline = time.monotonic() + timeout
    for worker in workers:
        worker.join(max(0.0, deadline - time.monotonic()))
    assert not any(w.is_alive() for w in workers), f"encode from {threads} threads at once did not finish in {timeout} s"
    assert all(o is not None for o in out), "an encode call failed in its thread"
    return out


def no_dropout(enc) -> None:
    """Turn dropout off everywhere (nn.Dropout and the attention's dropout_p), so runs that
    split a batch differently still compute the same function."""
    for m in enc.pipeline.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        if hasattr(m, "dropout_p"):
            m.dropout_p = 0.0


class HashEncoder:
    """A tiny deterministic stand-in encoder: hashed bag of words, so similar texts score higher."""

    def __init__(self, dimension: int = 32, similarity: str = "cosine", normalize: bool = True, name: str = "hash-encoder", seed: int = 0):
        self.dimension = dimension
        self.similarity_fn_name = similarity
        self.normalizes = normalize
        self.name = name
        self.seed = seed
        self.calls = 0
        self._cache: dict[str, np.ndarray] = {}

    def _word(self, w: str) -> np.ndarray:
        v = self._cache.get(w)
        if v is None:
            v = self._cache[w] = self._make(w)
        return v

    def _make(self, w: str) -> np.ndarray:
        h = int.from_bytes(hashlib.sha1(f"{self.seed}:{w}".encode()).digest()[:8], "little")
        return np.random.default_rng(h).standard_normal(self.dimension)

    def encode(self, texts, **kw):
        self.calls += 1
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                out[i] += self._word(w.strip(".,?!"))
            if not t.split():
                out[i] = self._word("<empty>")
        if self.normalizes:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out[0] if single else out

    def encode_query(self, texts, **kw):
        return self.encode(texts, **kw)

    def encode_document(self, texts, **kw):
        return self.encode(texts, **kw)


def small_tiktoken(name: str = "cl100k_base"):
    """A real tiktoken Encoding, small and built here, standing in for `name`: tiktoken's own
    files come by download, and there is no network here. Bytes plus a few merges."""
    import tiktoken

    ranks = {bytes([i]): i for i in range(256)}
    for word in (b"th", b"the", b" the", b"in", b" in", b"an", b" an"):
        ranks[word] = len(ranks)
    return tiktoken.Encoding(name, pat_str=r"""'s|'t| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
                             mergeable_ranks=ranks, special_tokens={})


@contextlib.contextmanager
def live_server(app, host: str = "127.0.0.1") -> Iterator[str]:
    """Run app on uvicorn in a thread on a free port of host; yields the base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


def embed_concurrently(url: str, texts: list[str], clients: int, requests: int) -> tuple[int, list[tuple[str, "np.ndarray"]]]:
    """`clients` asyncio clients, each sending `requests` POST /v1/embeddings of 1-16 of `texts`
    (client i draws with random.Random(i)); returns the failed requests and every (text, vector)
    served, repeats included."""
    import random

    import httpx
    import numpy as np

    got: list[tuple[str, np.ndarray]] = []

    async def client(rng: random.Random) -> int:
        errors = 0
        async with httpx.AsyncClient(base_url=url, timeout=120) as http:
            for _ in range(requests):
                batch = rng.sample(texts, rng.randint(1, 16))
                r = await http.post("/v1/embeddings", json={"input": batch})
                if r.status_code != 200:
                    errors += 1
                    continue
                got.extend((t, np.asarray(item["embedding"], np.float32)) for t, item in zip(batch, r.json()["data"]))
        return errors

    async def main() -> list[int]:
        return await asyncio.gather(*(client(random.Random(i)) for i in range(clients)))

    return sum(asyncio.run(main())), got


def mean_batch_size(metrics: str) -> float:
    """The server's mean inputs per model batch, read from its /metrics text."""
    import re

    total = float(re.search(r"^sentembed_batch_size_sum (\S+)$", metrics, re.M).group(1))
    count = float(re.search(r"^sentembed_batch_size_count (\S+)$", metrics, re.M).group(1))
    return total / count


BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def benchmark_script(name: str):
    """A benchmarks/ script as a module (its `import plots` finds plots.py beside it)."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
