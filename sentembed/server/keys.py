"""Who is calling: the API keys and the name each answers to.

Two sources, either or both:

- `--api-key KEY` (or SENTEMBED_API_KEY): the operator's key, named "admin"; `GET /usage`
  shows it every caller's usage.
- `--api-keys FILE`: one client key a line, `KEY [NAME]`; blank lines and `#` comments are
  skipped. A line without a name is named `key-` and the first 8 hex digits of the key's
  SHA-256, so usage and metrics never show a key. Keys sharing a name share its usage and its
  rate limit (an old and a new key while a client rotates). The file is read again when it
  changes (checked at most once a second) or on SIGHUP; a file that no longer reads keeps the
  keys it had, and says why in the log.

With neither, every caller is "anonymous" and nothing is checked.

    ring = KeyRing(admin_key=None, file=Path("keys.txt"))
    ring.identify(b"sk-live-123")    # Caller(name='team-a', admin=False), or None: refused
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("sentembed.server")

ADMIN, ANONYMOUS = "admin", "anonymous"
_NAME = re.compile(r"[A-Za-z0-9_.:@-]{1,64}")
_CHECK_EVERY_S = 1.0  # how often the file's mtime is looked at


class KeysError(ValueError):
    """A key or keys file that cannot be used; the message is one line naming it."""


@dataclass(frozen=True)
class Caller:
    name: str
    admin: bool = False


def _digest(key: bytes) -> bytes:
    # Keys are looked up by their hash: a dict lookup leaks nothing a timing attack can use.
    return hashlib.sha256(key).digest()


def parse_keys(text: str, source: str) -> dict[bytes, Caller]:
    """The callers of a keys file's text, by the SHA-256 of their key; KeysError names the line."""
    callers: dict[bytes, Caller] = {}
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) > 2:
            raise KeysError(f"{source}:{number}: expected 'KEY [NAME]', got {len(words)} words")
        key = words[0].encode()
        digest = _digest(key)
        name = words[1] if len(words) == 2 else f"key-{digest.hex()[:8]}"
        if not _NAME.fullmatch(name):
            raise KeysError(f"{source}:{number}: name {name!r} must be 1-64 of A-Z a-z 0-9 _ . : @ -")
        if name in (ADMIN, ANONYMOUS):
            raise KeysError(f"{source}:{number}: the name {name!r} is reserved")
        if digest in callers:
            raise KeysError(f"{source}:{number}: this key is already on an earlier line")
        callers[digest] = Caller(name)
    return callers


class KeyRing:
    """The keys the server accepts. `identify(key)` is the caller, or None for a wrong or
    missing key; without keys every caller is anonymous."""

    def __init__(self, admin_key: str | None = None, file: str | os.PathLike | None = None) -> None:
        if admin_key is not None and not admin_key.strip():
            raise KeysError("the API key (--api-key or SENTEMBED_API_KEY) is empty; set a key, or unset it "
                            "to serve without one")
        self.file = Path(file) if file is not None else None
        self._admin = {_digest(admin_key.encode()): Caller(ADMIN, admin=True)} if admin_key else {}
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._checked = 0.0
        self._stale = False
        self._callers: dict[bytes, Caller] = {}
        if self.file is not None:
            self._callers = self._read()
            if not self._callers:
                raise KeysError(f"{self.file} holds no keys; write one per line as 'KEY [NAME]'")
            if self._admin.keys() & self._callers.keys():
                raise KeysError(f"{self.file}: a key there is also the admin key (--api-key)")

    @property
    def enabled(self) -> bool:
        """Whether a key is asked for at all."""
        return bool(self._admin) or self.file is not None

    @property
    def names(self) -> list[str]:
        return sorted({c.name for c in self._callers.values()} | {c.name for c in self._admin.values()})

    def identify(self, given: bytes | None) -> Caller | None:
        """The caller a key belongs to; None when a key is wanted and this is not one."""
        if not self.enabled:
            return Caller(ANONYMOUS, admin=True)  # nothing is secret on an open server
        if given is None:
            return None
        self._maybe_reload()
        digest = _digest(given)
        return self._admin.get(digest) or self._callers.get(digest)

    def reload_soon(self) -> None:
        """Read the file again before the next key is checked (the SIGHUP handler: no I/O here)."""
        self._stale = True

    def _stat(self) -> tuple[int, int, int]:
        st = self.file.stat()  # type: ignore[union-attr]
        return st.st_mtime_ns, st.st_size, st.st_ino  # the inode: a file replaced by rename

    def _read(self) -> dict[bytes, Caller]:
        assert self.file is not None
        try:
            stamp = self._stat()
            text = self.file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise KeysError(f"cannot read the keys file {self.file}: {err}") from None
        callers = parse_keys(text, str(self.file))
        self._stamp = stamp
        return callers

    def _maybe_reload(self) -> None:
        if self.file is None:
            return
        now = time.monotonic()
        if not self._stale and now - self._checked < _CHECK_EVERY_S:
            return
        with self._lock:
            self._checked, stale, self._stale = now, self._stale, False
            try:
                if not stale and self._stat() == self._stamp:
                    return
                callers = self._read()
            except (OSError, KeysError) as err:
                log.error("keeping the %d keys read before: %s", len(self._callers), err)
                return
            if self._admin.keys() & callers.keys():
                log.error("keeping the keys read before: %s now holds the admin key", self.file)
                return
            self._callers = callers
            log.info("read %d keys from %s", len(callers), self.file)
