"""Real clients against a live server on 127.0.0.1 (tiny model): the official `openai` package,
LangChain's `OpenAIEmbeddings` and LlamaIndex's `OpenAILikeEmbedding`, each configured as the
README shows, get the vectors `encode` gives. LangChain's default configuration sends tiktoken
ids; it gets correct vectors or a 422 that names its setting, never vectors of other tokens."""
from __future__ import annotations

import base64

import numpy as np
import pytest

from sentembed.server import ServerConfig, create_app
from sentembed.server import tokens
from support import small_tiktoken

TEXTS = ["A man is playing a guitar.", "A woman slices an onion.", "Dogs run in the park!"]
QUERY = "Who plays music?"
KEY = "test-key"


@pytest.fixture(scope="module")
def url(tiny_encoder, live_server):
    with live_server(create_app(tiny_encoder, config=ServerConfig(api_key=KEY, model_name="tiny"))) as base:
        yield base


def test_openai_package(url, tiny_encoder):
    from openai import OpenAI

    client = OpenAI(base_url=f"{url}/v1", api_key=KEY)
    want = tiny_encoder.encode(TEXTS)
    # The package asks for base64 unless told otherwise, and decodes it itself.
    got = client.embeddings.create(model="tiny", input=TEXTS)
    np.testing.assert_allclose([d.embedding for d in got.data], want, atol=1e-5)
    got = client.embeddings.create(model="tiny", input=TEXTS, encoding_format="float")
    np.testing.assert_allclose([d.embedding for d in got.data], want, atol=1e-5)
    assert got.model == "tiny" and got.usage.prompt_tokens == sum(tiny_encoder.count_tokens(TEXTS))
    raw = client.embeddings.create(model="tiny", input=TEXTS[0], encoding_format="base64").data[0].embedding
    if isinstance(raw, str):  # a base64 string when asked for by name
        raw = np.frombuffer(base64.b64decode(raw), dtype="<f4")
    np.testing.assert_allclose(raw, want[0], atol=1e-5)
    short = client.embeddings.create(model="tiny", input=TEXTS, dimensions=8)
    cut = want[:, :8] / np.linalg.norm(want[:, :8], axis=1, keepdims=True)  # unit length: the model normalizes
    np.testing.assert_allclose([d.embedding for d in short.data], cut, atol=1e-5)


def test_openai_package_wrong_key_is_an_authentication_error(url):
    import openai

    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0).embeddings.create(model="x", input="a")


def test_langchain_as_the_readme_configures_it(url, tiny_encoder):
    from langchain_openai import OpenAIEmbeddings

    emb = OpenAIEmbeddings(model="tiny", base_url=f"{url}/v1", api_key=KEY, check_embedding_ctx_length=False)
    np.testing.assert_allclose(emb.embed_documents(TEXTS), tiny_encoder.encode(TEXTS), atol=1e-5)
    np.testing.assert_allclose(emb.embed_query(QUERY), tiny_encoder.encode(QUERY), atol=1e-5)


@pytest.fixture
def tiktoken_here(monkeypatch):
    """What LangChain's default does where tiktoken's cl100k_base files are at hand."""
    import tiktoken

    encoding = small_tiktoken()
    monkeypatch.setattr(tiktoken, "encoding_for_model", lambda model: encoding)
    monkeypatch.setattr(tiktoken, "get_encoding", lambda name: encoding)
    monkeypatch.setattr(tokens, "_encodings", {})
    return encoding


def test_langchain_default_gets_the_422_that_names_its_setting(url, tiktoken_here):
    import openai
    from langchain_openai import OpenAIEmbeddings

    emb = OpenAIEmbeddings(model="tiny", base_url=f"{url}/v1", api_key=KEY, max_retries=0)
    assert emb.check_embedding_ctx_length and emb.tiktoken_enabled  # the defaults: tiktoken ids are sent
    with pytest.raises(openai.UnprocessableEntityError, match="check_embedding_ctx_length=False"):
        emb.embed_documents(TEXTS)


def test_langchain_default_with_tiktoken_ids_declared_gets_correct_vectors(url, tiny_encoder, tiktoken_here):
    from langchain_openai import OpenAIEmbeddings

    emb = OpenAIEmbeddings(model="tiny", base_url=f"{url}/v1", api_key=KEY,
                           model_kwargs={"extra_body": {"input_tokenizer": "cl100k_base"}})
    np.testing.assert_allclose(emb.embed_documents(TEXTS), tiny_encoder.encode(TEXTS), atol=1e-5)


def test_langchain_default_without_tiktoken_files_never_embeds_other_tokens(url, tiny_encoder):
    """As it is here: tiktoken cannot fetch its files. Whatever happens, no wrong vectors."""
    import openai
    from langchain_openai import OpenAIEmbeddings

    emb = OpenAIEmbeddings(model="tiny", base_url=f"{url}/v1", api_key=KEY, max_retries=0)
    try:
        got = emb.embed_documents(TEXTS)
    except openai.UnprocessableEntityError as err:  # the ids reached the server
        assert "check_embedding_ctx_length=False" in str(err)
    except OSError:  # tiktoken could not download cl100k_base: nothing was sent
        pass
    else:
        np.testing.assert_allclose(got, tiny_encoder.encode(TEXTS), atol=1e-5)


def test_llamaindex_openai_like(url, tiny_encoder):
    from llama_index.embeddings.openai_like import OpenAILikeEmbedding

    emb = OpenAILikeEmbedding(model_name="tiny", api_base=f"{url}/v1", api_key=KEY)
    np.testing.assert_allclose(emb.get_text_embedding_batch(TEXTS), tiny_encoder.encode(TEXTS), atol=1e-5)
    np.testing.assert_allclose(emb.get_query_embedding(QUERY), tiny_encoder.encode(QUERY), atol=1e-5)
    short = OpenAILikeEmbedding(model_name="tiny", api_base=f"{url}/v1", api_key=KEY, dimensions=8)
    want = tiny_encoder.encode(TEXTS)[:, :8]
    np.testing.assert_allclose(short.get_text_embedding_batch(TEXTS),
                               want / np.linalg.norm(want, axis=1, keepdims=True), atol=1e-5)
