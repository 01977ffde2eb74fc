"""The optional libraries the adapters need, and the one-line error when one is missing."""

from __future__ import annotations

import importlib

from numeric import InputError

__all__ = ["EXTRAS", "MissingExtra", "installed", "require"]

#: extra name -> the modules it installs (see pyproject.toml).
EXTRAS = {"torch": ("torch", "torchdiffeq"), "jax": ("jax", "diffrax")}
#: What to type for each extra. torch first, as the CPU build: a plain ``pip install torch``
#: can fetch a CUDA build of several GB.
INSTALL = {
    "torch": "pip install torch==2.13.0 'adjoint-verify[torch]'",
    "jax": "pip install 'adjoint-verify[jax]'",
}


class MissingExtra(InputError, ImportError):
    """An adapter was called without the optional library it needs installed."""


def _missing(extra: str) -> list[str]:
    missing = []
    for module in EXTRAS[extra]:
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
    return missing


def installed(extra: str) -> bool:
    """Whether every module of ``extra`` (``"torch"`` or ``"jax"``) imports."""
    return not _missing(extra)


def require(extra: str, what: str) -> None:
    """Raise :class:`MissingExtra` naming the install command when ``extra`` is missing."""
    missing = _missing(extra)
    if missing:
        raise MissingExtra(
            f"{what} needs {' and '.join(EXTRAS[extra])}, but {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not installed; install the extra: "
            f"{INSTALL[extra]}"
        )
