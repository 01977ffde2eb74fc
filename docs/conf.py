"""Sphinx configuration of adjoint-verify's documentation.

Build: ``python -m sphinx -W --keep-going -n -b html docs docs/_build/html`` (every warning,
a broken link or an unresolved cross-reference included, fails the build).
"""

from __future__ import annotations

import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE / "_ext"))

project = "adjoint-verify"
author = "the adjoint-verify authors"
copyright = "the adjoint-verify authors"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinx-mathjax-offline",
    "docstring_links",
    "generated_figures",
    "executed_blocks",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "_ext", "README.md"]
nitpicky = True

# Markdown: $...$ and $$...$$ math, ::: fences, anchors for every heading up to level 3
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
myst_dmath_double_inline = True

# API reference: numpydoc renders the docstrings; types live in the docstrings (with
# shapes), so signatures are shown without annotations
autodoc_typehints = "none"
autodoc_member_order = "bysource"
numpydoc_show_class_members = False
numpydoc_xref_param_type = False
numpydoc_validation_checks: set[str] = set()

html_theme = "pydata_sphinx_theme"
html_title = "adjoint-verify"
html_static_path = ["_static"]
html_css_files = ["wide.css"]
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "footer_start": ["copyright"],
    "footer_end": [],
}
html_show_sourcelink = False
