"""Atomic file writes: a reader sees the old file or the new one, never a part.

Every result, report and scenario file cowlab writes goes through
:func:`write_text_atomic`: the text goes to a temporary file in the target's own
directory (so the rename cannot cross file systems), is flushed to disk, and replaces
the target with ``os.replace``. If anything fails, the temporary file is removed and
the target is untouched.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> write_text_atomic(d / "sub" / "a.txt", "hello\\n")
    >>> (d / "sub" / "a.txt").read_text()
    'hello\\n'
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["write_text_atomic"]


def write_text_atomic(path: str | Path, text: str) -> None:
    """Replace ``path`` by ``text`` (UTF-8) atomically, creating missing parent folders.

    The file gets the usual permissions of a new file (0644 before the umask), not the
    0600 of a temporary file.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
