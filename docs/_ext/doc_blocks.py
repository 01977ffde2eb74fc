"""The code of the documentation's pages: what the build executes and the tests run.

A page's ```` ```python ```` blocks run in order in one namespace per page. Output shown on
a page is not pasted: an empty ```` ```{output} ```` fence right after a python block is
replaced, at build time, by what that block printed. Blocks that show something else (a
shell session, printed text quoted from elsewhere) use another fence language (``bash``,
``text``).

A page, or the rest of a page, that documents a feature of a later release declares it in a
MyST comment line, ``% requires: FEATURE``; its python blocks from there on run only where
the feature is installed (:data:`FEATURES`), and are skipped with that reason elsewhere.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import pathlib
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["FEATURES", "Block", "blocks", "missing_features", "run_blocks", "scratch_folder"]

#: The repository's root: pages refer to ``examples/`` and ``references/`` from there.
ROOT = pathlib.Path(__file__).resolve().parents[2]
#: Folders of the repository a page's code may read, linked into its scratch folder.
LINKED = ("examples", "references")

FENCE = re.compile(r"^(?P<fence>`{3,})(?P<info>[^`\n]*)\n(?P<body>.*?)^(?P=fence)[ \t]*$",
                   re.M | re.S)
REQUIRES = re.compile(r"^% requires: (?P<names>[\w, ]+)$", re.M)


def _has_module(name: str) -> bool:
    """Whether ``name`` imports here (imported, not only found: a module of another
    checkout on the path must not count)."""
    try:
        module = importlib.import_module(name)
        top = importlib.import_module(name.split(".")[0])
    except ImportError:
        return False
    if module is top or not getattr(top, "__file__", None):
        return True
    # a submodule must come from the same checkout as its package
    return pathlib.Path(module.__file__).is_relative_to(pathlib.Path(top.__file__).parent)


def _has_attribute(module: str, name: str) -> bool:
    try:
        return hasattr(importlib.import_module(module), name)
    except ImportError:
        return False


#: Features a page may require, each with the check that it is installed.
FEATURES: dict[str, Callable[[], bool]] = {
    # non-smooth f, bad numbers as the library's errors, reference files as data
    "robust": lambda: _has_attribute("numeric", "UnresolvedGrid"),
    # verification.adapters with torch + torchdiffeq and jax + diffrax installed
    "peers": lambda: all(map(_has_module, ("verification.adapters", "torch", "torchdiffeq",
                                           "jax", "diffrax"))),
    # solver="rodas4" and the stiff built-in problems
    "rodas4": lambda: _has_module("numeric._rosenbrock"),
    # verification.sweep / check_suite
    "suites": lambda: _has_attribute("verification", "sweep"),
}


@dataclass(frozen=True)
class Block:
    """One fenced block of a page: its language, its code, where it starts (character
    offset and line), and the features the page requires at that point."""

    language: str
    code: str
    start: int
    end: int
    line: int
    requires: tuple[str, ...]


def blocks(text: str) -> list[Block]:
    """Every fenced block of a page in order (nested fences are not used in the docs)."""
    found = []
    for match in FENCE.finditer(text):
        before = text[: match.start()]
        requires: list[str] = []
        for req in REQUIRES.finditer(before):
            requires += [n.strip() for n in req.group("names").split(",") if n.strip()]
        unknown = [n for n in requires if n not in FEATURES]
        if unknown:
            raise ValueError(f"unknown feature(s) {unknown} in '% requires:'; known: "
                             f"{sorted(FEATURES)}")
        found.append(Block(match.group("info").strip(), match.group("body"), match.start(),
                           match.end(), before.count("\n") + 1, tuple(requires)))
    return found


def missing_features(block: Block) -> list[str]:
    """The features ``block`` requires that are not installed here."""
    return [name for name in block.requires if not FEATURES[name]()]


def run_blocks(page: str, text: str, namespace: dict | None = None) -> list[tuple[Block, str]]:
    """Run the page's python blocks in order in one namespace; return each block run with
    what it printed. Blocks that require a missing feature are not run (nor any after
    them, which may depend on them)."""
    namespace = {"__name__": "__main__"} if namespace is None else namespace
    done = []
    for block in blocks(text):
        if block.language != "python":
            continue
        if missing_features(block):
            break
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(block.code, f"{page}, line {block.line}", "exec"), namespace)
        done.append((block, out.getvalue()))
    return done


@contextlib.contextmanager
def scratch_folder():
    """Run a page's code in a fresh folder, as a reader would from a clone's root: the
    repository's ``examples/`` and ``references/`` are linked in, and whatever the code
    writes stays in the folder (yielded, removed afterwards)."""
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="adjoint-verify-docs-") as folder:
        for name in LINKED:
            os.symlink(ROOT / name, pathlib.Path(folder) / name)
        os.chdir(folder)
        try:
            yield pathlib.Path(folder)
        finally:
            os.chdir(cwd)
