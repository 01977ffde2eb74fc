"""Sphinx extension: the docstrings' references to the mathematics become links.

The source cites its formulas by section (``(MATH.md, "Error measure")``), the names of the
sections of the mathematics these pages explain. In the API reference each citation becomes
a link to the page that explains that section; a citation of a section no page explains
fails the build, so that a new one is mapped here.
"""

from __future__ import annotations

import re

from sphinx.util import logging

logger = logging.getLogger(__name__)

#: Section cited in a docstring -> the page of the mathematics that explains it.
SECTIONS = {
    "conventions": "math/conventions",
    "continuous adjoint": "math/continuous-adjoint",
    "forward sensitivity": "math/forward-sensitivity",
    "discrete adjoint": "math/discrete-adjoint",
    "about 1e-13": "math/discrete-adjoint",  # a quotation from that section
    "frozen grid": "math/frozen-grid",
    "exact references": "math/references",
    "exact": "math/references",
    "high precision": "math/references",
    "finite differences": "math/finite-differences",
    "complex step": "math/finite-differences",
    "error measure": "math/error-measure",
    "tolerances": "math/error-measure",
    "matrix form": "math/matrix-form",
    "matrix form: reverse accumulation over matrix expressions": "math/matrix-form",
    "directional checks": "math/directional-checks",
    "non-smooth and discontinuous dynamics": "math/nonsmooth",
    "non-smooth": "math/nonsmooth",
    "rosenbrock methods and their discrete adjoint": "math/rosenbrock",
    "rosenbrock": "math/rosenbrock",
}

TITLE = r'"[^"]+"'
CITATION = re.compile(
    r"(?:shared/)?MATH\.md(?P<possessive>'s)?"
    rf"(?:(?P<sep>,\s*|\s*\(\s*|\s+|:\s*)(?P<titles>{TITLE}(?:\s+and\s+{TITLE})*))?"
)


def _link(title: str, where: str) -> str:
    key = " ".join(title.split()).lower()
    if key not in SECTIONS:
        logger.warning("%s cites the mathematics' section %r, which no page explains; add it "
                       "to SECTIONS in docs/_ext/docstring_links.py", where, title)
        return title
    return f":doc:`{' '.join(title.split())} </{SECTIONS[key]}>`"


def rewrite(text: str, where: str) -> str:
    """``text`` with every citation of the mathematics replaced by links to its pages."""

    def replace(match: re.Match) -> str:
        if match.group("titles") is None:
            link = ":doc:`the mathematics </math/index>`"
            return link + ("'" if match.group("possessive") else "")
        titles = re.findall(TITLE, match.group("titles"))
        links = " and ".join(_link(t.strip('"'), where) for t in titles)
        if "(" in match.group("sep"):
            return f"the mathematics ({links}"
        return f"the mathematics, {links}"

    return CITATION.sub(replace, text)


#: Spans a doc-comment keeps as they are: literals, roles, math.
MARKUP = re.compile(r"``.*?``|:\w+:`[^`]*`|`[^`]*`", re.S)


def escape_bars(text: str) -> str:
    """``|x|`` outside literals and roles, escaped: the ``#:`` comments that document
    constants are written in plain text, where ``|x|`` is an absolute value, not a reST
    substitution."""
    pieces, last = [], 0
    for match in MARKUP.finditer(text):
        pieces += [text[last:match.start()].replace("|", "\\|"), match.group()]
        last = match.end()
    pieces.append(text[last:].replace("|", "\\|"))
    return "".join(pieces)


def process_docstring(app, what, name, obj, options, lines: list[str]) -> None:
    text = "\n".join(lines)
    if what in ("data", "attribute"):
        text = escape_bars(text)
    if "MATH.md" in text:
        text = rewrite(text, name)
    lines[:] = text.split("\n")


def setup(app):
    # before numpydoc (priority 500) turns the sections into reST
    app.connect("autodoc-process-docstring", process_docstring, priority=400)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
