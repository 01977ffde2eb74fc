"""The files of a suite folder: atomic writes and an append-only JSON-lines index.

A crash at any moment leaves the folder readable: a file is written to a temporary name
and renamed into place (``os.replace`` is atomic), and an index line is appended in one
write and synced, so an interruption leaves at most one incomplete last line, which
:func:`read_lines` reports and :func:`repair_lines` drops.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "TEMP_SUFFIX",
    "JsonLines",
    "append_line",
    "read_lines",
    "repair_lines",
    "rewrite_lines",
    "sha256_of",
    "write_atomically",
]

#: Suffix of the temporary files an atomic write renames into place; a crash may leave
#: one behind (hidden, with this suffix): readers ignore them and a sweep removes them.
TEMP_SUFFIX = ".tmp"


def sha256_of(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def _sync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; a no-op where folders cannot be synced)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a
    part: a hidden temporary file in the same folder, synced, then renamed over ``path``."""
    path = Path(path)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    _sync_folder(path.parent)


def append_line(path: Path, entry: dict[str, Any]) -> None:
    """Append ``entry`` as one JSON line in a single write, then sync: a crash leaves the
    earlier lines intact and at most this line incomplete."""
    line = (json.dumps(entry, sort_keys=True, separators=(",", ":")) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(fd, line)
        while written < len(line):  # a short write (rare, e.g. a signal): finish it
            written += os.write(fd, line[written:])
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class JsonLines:
    """What a JSON-lines file holds.

    Attributes
    ----------
    entries : dict
        The last valid entry of each ``name``, in the order names first appeared.
    damaged : list of (int, str)
        Line numbers (1-based) that are not a JSON object with a ``name``, and why; an
        incomplete last line (no newline) is one of them.
    lines : int
        Valid lines read, repeated names included.
    """

    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    damaged: list[tuple[int, str]] = field(default_factory=list)
    lines: int = 0


def read_lines(path: Path) -> JsonLines:
    """Read a JSON-lines file written by :func:`append_line`; a missing file is empty."""
    out = JsonLines()
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return out
    chunks = data.split(b"\n")
    for number, chunk in enumerate(chunks, start=1):
        last = number == len(chunks)
        if last and not chunk:
            break  # the file ends with a newline, as it should
        if last:
            out.damaged.append((number, "incomplete: the write of this line was interrupted"))
            break
        try:
            entry = json.loads(chunk)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            out.damaged.append((number, f"not valid JSON ({exc})"))
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            out.damaged.append((number, "not an entry with a name"))
            continue
        out.entries[entry["name"]] = entry
        out.lines += 1
    return out


def rewrite_lines(path: Path, entries: dict[str, dict[str, Any]]) -> None:
    """Replace the file, atomically, by one line per entry."""
    body = "".join(json.dumps(e, sort_keys=True, separators=(",", ":")) + "\n"
                   for e in entries.values())
    write_atomically(Path(path), body.encode())


def repair_lines(path: Path) -> JsonLines:
    """Read the file and, if it has damaged lines or repeated names, rewrite it with the
    valid entries only (one per name); returns what was read."""
    content = read_lines(path)
    if content.damaged or content.lines != len(content.entries):
        rewrite_lines(path, content.entries)
    return content
