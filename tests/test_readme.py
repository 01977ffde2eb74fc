"""The README: short, with the two Quick start commands and links into the documentation
(whose examples run in tests/test_docs.py)."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def test_quick_start_has_exactly_two_commands():
    text = README.read_text()
    section = text.split("## Quick start", 1)[1].split("##", 1)[0]
    commands = re.findall(r"```bash\n(.*?)```", section, flags=re.S)[0].strip().splitlines()
    assert len(commands) == 2
    assert "adjoint-verify demo" in commands[0]
    assert "pytest" in commands[1]


def test_readme_links_into_the_docs_resolve():
    links = re.findall(r"\]\((docs/[^)#]+)", README.read_text())
    assert {"docs/guides/index.md", "docs/math/index.md", "docs/api/index.md"} <= set(links)
    for link in links:
        assert (ROOT / link).is_file(), link


def test_readme_gives_the_docs_build_command():
    text = README.read_text()
    assert "python -m sphinx -W --keep-going -n -b html docs docs/_build/html" in text
    ci = (ROOT / ".ci" / "run").read_text()
    assert "sphinx -W --keep-going -n" in ci
