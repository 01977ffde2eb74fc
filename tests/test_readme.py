"""The README's worked example runs as printed."""

import pathlib
import re

from helpers import ROUNDING, import_extra

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_worked_example_runs():
    text = README.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README has no python example"
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    assert namespace["report"].passed


def test_quick_start_has_exactly_two_commands():
    text = README.read_text()
    section = text.split("## Quick start", 1)[1].split("##", 1)[0]
    commands = re.findall(r"```bash\n(.*?)```", section, flags=re.S)[0].strip().splitlines()
    assert len(commands) == 2
    assert "adjoint-verify demo" in commands[0]
    assert "pytest" in commands[1]


def test_matrix_form_example_runs():
    """The matrix-form section's example: a 2,128-parameter network's gradient, and the
    printed formulas it promises."""
    text = README.read_text()
    section = text.split("## Network-sized dynamics: matrix form", 1)[1]
    block = re.findall(r"```python\n(.*?)```", section, flags=re.S)[0]
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    g, dyn = namespace["g"], namespace["dyn"]
    assert dyn.p == 2128 and g.theta.shape == (2128,)
    printed = str(namespace["derive_adjoint"](dyn, namespace["loss"]))
    assert "da/dt = -W1^T (" in printed and "dL/dW2 = a tanh.(W1 z + b1)^T" in printed


def test_peer_library_example_runs():
    """The torchdiffeq example of "Auditing torchdiffeq and diffrax" runs and both audits
    pass: the adjoint at O(rtol), backpropagation through rk4 (= rk4_38) at rounding."""
    import_extra("torchdiffeq")
    section = README.read_text().split("## Auditing torchdiffeq and diffrax", 1)[1]
    block = re.findall(r"```python\n(.*?)```", section.split("\n## ", 1)[0], flags=re.S)[0]
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["report"].passed
    assert namespace["exact_map"].passed
    assert max(row.error for row in namespace["exact_map"].rows) <= ROUNDING
