"""What a suite folder holds, checked against its index before anything is trusted.

Every indexed problem with a reference must have its file, with the sha256 the index
records; every file in the folder must be indexed; every index line must be whole. A
suite that fails any of these is reported as damaged, problem by problem, and not
audited: a verdict on a suite that is not the one that was swept would mean nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from numeric import InputError

from ._suite_files import TEMP_SUFFIX, read_lines, sha256_of
from ._sweep import INDEX

__all__ = ["SuiteContents", "SuiteError", "SuiteIssue", "read_suite"]


@dataclass(frozen=True)
class SuiteIssue:
    """One way a suite folder disagrees with its index.

    ``kind`` is "missing" (indexed, no file), "changed" (the file's sha256 differs from
    the index), "extra" (a file the index does not list) or "index" (a damaged line).
    """

    kind: str
    where: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.where}: {self.detail}"


class SuiteError(InputError):
    """A suite folder that is not one, or whose files and index disagree (``issues``)."""

    def __init__(self, headline: str, issues: tuple[SuiteIssue, ...] = ()):
        shown = "; ".join(str(issue) for issue in issues[:5])
        more = "; ..." if len(issues) > 5 else ""
        super().__init__(f"{headline}: {shown}{more}" if issues else headline)
        self.headline = headline
        self.issues = tuple(issues)

    def __reduce__(self):
        return (type(self), (self.headline, self.issues))


@dataclass
class SuiteContents:
    """An intact suite: its references (name -> file bytes, verified against the index)
    and the problems it holds no reference for (name -> the index entry)."""

    path: Path
    references: dict[str, bytes] = field(default_factory=dict)
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    without_reference: dict[str, dict[str, Any]] = field(default_factory=dict)


def _file_name(entry: dict[str, Any]) -> str | None:
    """The entry's file, if it is a plain ``.json`` name inside the folder."""
    name = entry.get("file")
    if not isinstance(name, str) or Path(name).name != name or not name.endswith(".json"):
        return None
    return name


def read_suite(path: str | Path) -> SuiteContents:
    """Read a suite folder and verify it against its index.

    Raises
    ------
    SuiteError
        The folder or its index is missing, or files and index disagree; ``issues`` lists
        every disagreement.
    """
    path = Path(path)
    if not path.is_dir():
        raise SuiteError(f"suite {path} is not a folder; give the folder a sweep wrote "
                         "(adjoint-verify sweep --out FOLDER).")
    if not (path / INDEX).is_file():
        raise SuiteError(f"{path} is not a suite: it has no {INDEX}; give the folder a sweep "
                         "wrote, or run the sweep again.")
    index = read_lines(path / INDEX)
    issues = [SuiteIssue("index", f"{INDEX} line {number}",
                         f"{reason}; run the same sweep again to repair the index")
              for number, reason in index.damaged]
    contents = SuiteContents(path, entries=index.entries)
    indexed_files = set()
    for name, entry in index.entries.items():
        if entry.get("status") != "ok":
            contents.without_reference[name] = entry
            continue
        file_name = _file_name(entry)
        if file_name is None:
            issues.append(SuiteIssue("index", name, f"its file entry {entry.get('file')!r} "
                                     "is not a .json file name in the suite folder"))
            continue
        indexed_files.add(file_name)
        try:
            data = (path / file_name).read_bytes()
        except OSError:
            issues.append(SuiteIssue("missing", file_name, "indexed but not in the folder"))
            continue
        if sha256_of(data) != entry.get("sha256"):
            issues.append(SuiteIssue("changed", file_name, "its sha256 differs from the index: "
                                     "it was changed after the sweep wrote it"))
            continue
        contents.references[name] = data
    for item in sorted(path.iterdir()):
        if item.name == INDEX or item.name in indexed_files:
            continue
        if item.name.startswith(".") and item.name.endswith(TEMP_SUFFIX):
            continue  # a temporary file an interrupted write left
        issues.append(SuiteIssue("extra", item.name, "in the folder but not in the index"))
    if issues:
        raise SuiteError(f"suite {path} does not match its index ({len(issues)} "
                         f"issue{'s' if len(issues) != 1 else ''})", tuple(issues))
    return contents
