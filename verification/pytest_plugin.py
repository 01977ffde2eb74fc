"""pytest plugin of adjoint-verify (registered through the ``pytest11`` entry point).

Gives every test suite, once adjoint-verify is installed:

- the fixture ``assert_gradient_correct(grad_fn, problem, **options)``, which fails the test
  with the audit table and its diagnosis when the gradient is wrong;
- the marker ``@pytest.mark.adjoint_verify(rtol=..., reference=..., solver=..., steps=...)``
  that sets those options for one test;
- the options ``--adjoint-verify-rtol`` and ``--adjoint-verify-reference`` for a whole run.

Options given in the call win over the marker, which wins over the command line.
"""

from __future__ import annotations

import pytest

from ._assertions import GradientMismatch
from ._assertions import assert_gradient_correct as _assert_gradient_correct
from ._references import REFERENCES

MARKER = "adjoint_verify"


def pytest_addoption(parser):
    group = parser.getgroup("adjoint-verify", "gradient audits by adjoint-verify")
    group.addoption("--adjoint-verify-rtol", type=float, default=None, metavar="RTOL",
                    help="tolerance per gradient block of assert_gradient_correct "
                    "(default 1e-6)")
    group.addoption("--adjoint-verify-reference", choices=REFERENCES, default=None,
                    help="the reference assert_gradient_correct holds gradients to "
                    "(default: the most accurate available)")


def pytest_configure(config):
    rtol = config.getoption("--adjoint-verify-rtol")
    if rtol is not None and not (rtol > 0 and rtol < float("inf")):
        raise pytest.UsageError(
            f"--adjoint-verify-rtol must be a finite number > 0, got {rtol}"
        )
    config.addinivalue_line(
        "markers",
        f"{MARKER}(rtol=None, reference=None, solver='rk4', steps=None): options of the "
        "assert_gradient_correct fixture for this test",
    )


@pytest.fixture(scope="session")
def assert_gradient_correct(request):
    """``assert_gradient_correct(grad_fn, problem, **options)``: fail the test with the
    audit table when ``grad_fn`` gets ``problem``'s gradient wrong.

    Session-scoped, so that a ``@given`` test may use it (hypothesis rejects
    function-scoped fixtures); the options of the running test's marker are read at each
    call.
    """
    config = request.config

    def check(grad_fn, problem, **overrides):
        __tracebackhide__ = True  # the failure is the caller's line, not the library's
        options = {**_options(config, _RUNNING.get("item")), **overrides}
        # the audit table is the failure message: raised here, outside any except block,
        # so that pytest prints it once, with the test's own line and hypothesis's notes
        return _assert_gradient_correct(grad_fn, problem, **options)

    return check


#: The test item being run (set before its fixtures and body run).
_RUNNING: dict = {}


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    _RUNNING["item"] = item


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed audit's short-summary line is one line, not the table again: pytest puts the
    whole exception message there when it runs on CI (the ``CI`` variable set)."""
    outcome = yield
    excinfo = call.excinfo
    if excinfo is None or not excinfo.errisinstance(GradientMismatch):
        return
    crash = getattr(outcome.get_result().longrepr, "reprcrash", None)
    if crash is not None:
        crash.message = f"{GradientMismatch.__name__}: {excinfo.value.summary}"


def _options(config, item) -> dict:
    """Options from the command line, overridden by the running test's marker."""
    options = {}
    rtol = config.getoption("--adjoint-verify-rtol")
    reference = config.getoption("--adjoint-verify-reference")
    if rtol is not None:
        options["rtol"] = rtol
    if reference is not None:
        options["reference"] = reference
    marker = item.get_closest_marker(MARKER) if item is not None else None
    if marker is not None:
        if marker.args:
            raise pytest.UsageError(f"@pytest.mark.{MARKER} takes keyword arguments only")
        options.update(marker.kwargs)
    return options
