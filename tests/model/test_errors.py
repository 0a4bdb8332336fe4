"""Bad input: a clear error that names what was wrong, never a silently wrong model."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import sentembed
from sentembed.model import ModelNotFoundError, UnknownModuleError, WeightsError


@pytest.fixture(scope="module")
def encoder(tiny_model):
    return sentembed.load(str(tiny_model))


def test_encode_none(encoder):
    with pytest.raises(TypeError, match="NoneType"):
        encoder.encode(None)


def test_encode_non_string_item_names_index(encoder):
    with pytest.raises(TypeError, match="item 0 is int"):
        encoder.encode([1, "a"])
    with pytest.raises(TypeError, match="item 2"):
        encoder.encode(["a", "b", b"bytes"])


def test_encode_empty_list(encoder, real_encoder):
    assert encoder.encode([]).shape == (0, encoder.dimension)
    assert real_encoder.encode([]).shape == (0, 768)


def test_bad_arguments(encoder):
    with pytest.raises(ValueError, match="batch_size"):
        encoder.encode(["a"], batch_size=0)
    with pytest.raises(ValueError, match="precision"):
        encoder.encode(["a"], precision="int4")
    with pytest.raises(ValueError, match="truncate_dim"):
        encoder.encode(["a"], truncate_dim=10_000)
    with pytest.raises(ValueError, match="unknown prompt_name 'nope'"):
        encoder.encode(["a"], prompt_name="nope")


def test_unknown_model_lists_places_searched(tmp_path, monkeypatch):
    monkeypatch.setenv("SENTEMBED_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError) as err:
        sentembed.load("no-such-model-anywhere")
    message = str(err.value)
    assert "local path" in message and "cache" in message and "Hugging Face Hub" in message
    with pytest.raises(ModelNotFoundError, match="not a model directory"):
        sentembed.load(str(tmp_path))


def copy_model(src, tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(src, dst)
    return dst


def test_truncated_weights_name_the_file(tiny_model, tmp_path):
    path = copy_model(tiny_model, tmp_path)
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(WeightsError, match="model.safetensors"):
        sentembed.load(str(path))


def test_corrupt_weights_name_the_file(tiny_model, tmp_path):
    path = copy_model(tiny_model, tmp_path)
    weights = path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    header = int.from_bytes(data[:8], "little")
    data[8 + header + 64: 8 + header + 128] = b"\xff" * 64  # NaN bit patterns inside a tensor
    weights.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="model.safetensors"):
        sentembed.load(str(path))
    weights.write_bytes(b"garbage" * 10)
    with pytest.raises(WeightsError, match="model.safetensors"):
        sentembed.load(str(path))


def test_weights_that_do_not_fit_config(tiny_model, tmp_path):
    path = copy_model(tiny_model, tmp_path)
    config = json.loads((path / "config.json").read_text())
    config["hidden_size"] = 64
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match="shape"):
        sentembed.load(str(path))


def test_unknown_module_type(tiny_model, tmp_path):
    path = copy_model(tiny_model, tmp_path)
    modules = json.loads((path / "modules.json").read_text())
    modules[1]["type"] = "sentence_transformers.models.LSTM"
    (path / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(UnknownModuleError, match="LSTM"):
        sentembed.load(str(path))


def test_unknown_similarity_lists_valid_names(tiny_model, tmp_path, encoder):
    path = copy_model(tiny_model, tmp_path)
    settings = json.loads((path / "config_sentence_transformers.json").read_text())
    settings["similarity_fn_name"] = "jaccard"
    (path / "config_sentence_transformers.json").write_text(json.dumps(settings))
    with pytest.raises(ValueError, match="jaccard.*cosine, dot, euclidean, manhattan"):
        sentembed.load(str(path))
    with pytest.raises(ValueError, match="valid: cosine"):
        encoder.similarity_fn_name = "jaccard"


def test_wrong_config(tiny_model, tmp_path):
    path = copy_model(tiny_model, tmp_path)
    (path / "config.json").write_text('{"model_type": "bert", "hidden_size": 32}')
    with pytest.raises(ValueError, match="bert"):
        sentembed.load(str(path))
    (path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json"):
        sentembed.load(str(path))


def test_huge_text_is_truncated_fast_and_exactly(encoder):
    huge = "lorem ipsum dolor " * 200_000  # 3.6 MB
    clipped = encoder.encode(huge)
    direct = encoder.encode(("lorem ipsum dolor " * 40))  # well past the 64-token limit
    np.testing.assert_allclose(clipped, direct, atol=1e-6)


def test_tokenize_texts_cuts_before_tokenizing_with_the_same_ids(encoder):
    long = "lorem ipsum dolor " * 10_000  # 180 kB
    exact = encoder.tokenize_texts(["short one", long])
    cut = encoder.tokenize_texts(["short one", long], exact_counts=False)
    assert cut.ids == exact.ids
    assert cut.counts[0] == exact.counts[0]
    assert encoder.max_seq_length < cut.counts[1] < exact.counts[1]  # the prefix passes the window, no more


def _with_config(tiny_model, tmp_path, **changes):
    path = copy_model(tiny_model, tmp_path)
    config = json.loads((path / "config.json").read_text())
    config.update(changes)
    (path / "config.json").write_text(json.dumps(config))
    return path, config


@pytest.mark.parametrize("delta", [-1, 1])
def test_a_layer_count_that_differs_from_the_checkpoint_names_the_field(tiny_model, tmp_path, delta):
    layers = json.loads((tiny_model / "config.json").read_text())["num_hidden_layers"]
    path, _ = _with_config(tiny_model, tmp_path, num_hidden_layers=layers + delta)
    with pytest.raises(WeightsError, match=rf"config.json: num_hidden_layers is {layers + delta}, but .* holds {layers} layers"):
        sentembed.load(str(path))


def test_a_size_that_differs_from_the_checkpoint_names_the_field(tiny_model, tmp_path):
    size = json.loads((tiny_model / "config.json").read_text())["intermediate_size"]
    path, _ = _with_config(tiny_model, tmp_path, intermediate_size=size * 2)
    with pytest.raises(WeightsError, match=rf"config.json: intermediate_size is {size * 2}, but"):
        sentembed.load(str(path))


@pytest.mark.parametrize("field, value", [
    ("num_attention_heads", 0), ("num_attention_heads", 3), ("intermediate_size", -4), ("vocab_size", "many"),
    ("num_hidden_layers", 2.5), ("hidden_size", True), ("hidden_dropout_prob", "x"), ("layer_norm_eps", 0),
    ("pad_token_id", -1), ("max_position_embeddings", 2), ("hidden_act", None),
])
def test_bad_config_values_are_one_line_errors_naming_the_field(tiny_model, tmp_path, field, value):
    path, _ = _with_config(tiny_model, tmp_path, **{field: value})
    with pytest.raises(ValueError) as err:
        sentembed.load(str(path))
    message = str(err.value)
    assert type(err.value) is ValueError and "\n" not in message, message
    assert "config.json" in message and field in message, message


def test_config_that_is_not_an_object(tiny_model, tmp_path):
    path = copy_model(tiny_model, tmp_path)
    (path / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="config.json must hold a JSON object"):
        sentembed.load(str(path))


def test_check_finite_looks_past_a_sum_that_overflows():
    """The check sums first: a sum that overflows on finite values must not be taken for corruption,
    and inf, -inf and NaN (alone or cancelling) must still be found."""
    import torch

    from sentembed.model.weights import check_finite

    big = torch.full((8,), 3e38)  # finite, its sum is inf
    check_finite({"big": big, "ids": torch.arange(3)}, Path("w.safetensors"))
    for bad in (float("inf"), float("-inf"), float("nan")):
        t = torch.zeros(5)
        t[3] = bad
        with pytest.raises(WeightsError, match="'t'"):
            check_finite({"t": t}, Path("w.safetensors"))
    both = torch.tensor([float("inf"), float("-inf"), 1.0])  # their sum is NaN
    with pytest.raises(WeightsError, match="'both'"):
        check_finite({"both": both}, Path("w.safetensors"))
