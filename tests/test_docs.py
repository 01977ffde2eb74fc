"""Every code block of the documentation runs: the python blocks of each page in order, in
one namespace per page, in a scratch folder (docs/_ext/doc_blocks.py). A page, or the part of
a page, that documents a feature not installed here is skipped with the feature named."""

import itertools
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS / "_ext"))

import doc_blocks  # noqa: E402

PAGES = sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts)
WITH_CODE = [p for p in PAGES if any(b.language == "python" for b in
                                     doc_blocks.blocks(p.read_text()))]


def _run(page: pathlib.Path) -> tuple[dict, list]:
    """The namespace the page's code leaves and each python block run with what it printed;
    skips (after running what it can) when a block needs a feature that is not installed."""
    text = page.read_text()
    namespace: dict = {"__name__": "__main__"}
    with doc_blocks.scratch_folder():
        ran = doc_blocks.run_blocks(str(page.relative_to(ROOT)), text, namespace)
    wanted = [b for b in doc_blocks.blocks(text) if b.language == "python"]
    if len(ran) < len(wanted):
        missing = doc_blocks.missing_features(wanted[len(ran)])
        pytest.skip(f"{page.relative_to(DOCS)} from line {wanted[len(ran)].line} needs "
                    f"{', '.join(missing)}, not installed here")
    return namespace, ran


def run_page(page: pathlib.Path) -> dict:
    """The namespace the page's code leaves (see :func:`_run`)."""
    return _run(page)[0]


@pytest.mark.parametrize("page", WITH_CODE, ids=lambda p: str(p.relative_to(DOCS)))
def test_page_code_runs(page):
    """Every python block runs, and a block the page shows with its output (an
    ``{output}`` fence right after it, filled by the build) prints something: an empty
    fence would publish nothing under the code."""
    _, ran = _run(page)
    fences = doc_blocks.blocks(page.read_text())
    shown = {fences[k].start for k in range(len(fences) - 1)
             if fences[k].language == "python" and fences[k + 1].language == "{output}"}
    assert ran, f"{page.relative_to(DOCS)} has python blocks but none ran"
    for block, printed in ran:
        if block.start in shown:
            assert printed.strip(), (f"{page.relative_to(DOCS)}, line {block.line}: the "
                                     "block's output fence would be empty")


def test_pages_have_code_where_promised():
    """The guides and the pages of the mathematics that show results carry code."""
    names = {str(p.relative_to(DOCS)) for p in WITH_CODE}
    for page in ("guides/learning-dynamics.md", "guides/audit-your-gradient.md",
                 "guides/testing.md", "guides/network-form.md", "guides/peers.md",
                 "guides/stiff.md", "guides/reference-files.md",
                 "math/discrete-adjoint.md", "math/matrix-form.md"):
        assert page in names, page


def test_network_page_computes_the_2128_parameter_gradient_and_prints_the_formulas():
    namespace = run_page(DOCS / "guides" / "network-form.md")
    g, dyn = namespace["g"], namespace["dyn"]
    assert dyn.p == 2128 and g.theta.shape == (2128,)
    printed = str(namespace["derive_adjoint"](dyn, namespace["loss"]))
    assert "da/dt = -W1^T (" in printed and "dL/dW2 = a tanh.(W1 z + b1)^T" in printed


def test_learning_page_recovers_w_star_and_its_audits_pass():
    namespace = run_page(DOCS / "guides" / "learning-dynamics.md")
    assert namespace["report"].passed and namespace["at_fit"].passed
    error = abs(namespace["learned"] - namespace["w_true"]).max()
    assert error <= 1e-6


def test_output_fences_follow_printing_blocks():
    """An empty ```{output} fence is filled by the build with what the python block before
    it printed: it must come right after one."""
    for page in PAGES:
        found = doc_blocks.blocks(page.read_text())
        for before, block in itertools.pairwise(found):
            if block.language == "{output}":
                assert before.language == "python", f"{page}:{block.line}"
                assert "print(" in before.code, f"{page}:{block.line}"


def test_no_page_points_outside_the_repository():
    for page in [*PAGES, ROOT / "README.md"]:
        text = page.read_text()
        assert "shared/" not in text and "MATH.md" not in text, page
