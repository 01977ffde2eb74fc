"""Expression trees: scalar and matrix expressions round-trip; only whitelisted forms are
read, with numbers bounded; the string parser of format-1 files evaluates nothing."""

import json

import pytest
import sympy as sp

from symbolic._parse import parse_expression
from symbolic._tree import TreeError, declarations_from_tree, from_tree, to_tree

Z, W = sp.symbols("z w")
MATRIX_Z, MATRIX_W = sp.MatrixSymbol("v", 3, 1), sp.MatrixSymbol("M", 3, 3)


@pytest.mark.parametrize(
    "expr",
    [
        pytest.param(W * Z + sp.tanh(Z) - sp.Rational(1, 3) * Z**2, id="polynomial-tanh"),
        pytest.param(sp.Float("0.1") * Z + sp.pi * sp.exp(-Z), id="float-constants"),
        pytest.param(sp.Piecewise((Z, Z > 0.5), (0, True)) + sp.Max(Z, 0), id="non-smooth"),
        pytest.param(MATRIX_W * (MATRIX_W * MATRIX_Z).applyfunc(sp.tanh), id="matrix-layer"),
        pytest.param(sp.HadamardProduct(MATRIX_W * MATRIX_Z, MATRIX_Z).T, id="hadamard"),
        pytest.param((MATRIX_Z.T * MATRIX_Z)[0, 0], id="matrix-element"),
    ],
)
def test_trees_round_trip_scalar_and_matrix_expressions(expr):
    table = {s.name: s for s in (Z, W, MATRIX_Z, MATRIX_W)}
    tree = json.loads(json.dumps(to_tree(expr)))
    assert to_tree(from_tree(tree, table)) == tree


TABLE = {"z": Z, "w": W}


@pytest.mark.parametrize(
    ("tree", "message"),
    [
        pytest.param(["Pow", ["Integer", "2"], ["Integer", "100000"]], "too large",
                     id="huge-power"),
        pytest.param(["Integer", "1" * 101], "at most 100 digits", id="huge-integer"),
        pytest.param(["Float", "nan", 53], "not a decimal number", id="nan"),
        pytest.param(["Float", "1.0", 10**6], "precision", id="huge-precision"),
        pytest.param(["Symbol", "os"], "undeclared symbol", id="undeclared"),
        pytest.param(["eval", ["Symbol", "z"]], "unknown node type", id="eval"),
        pytest.param(["sin", ["Symbol", "z"], ["Symbol", "w"]], "TypeError", id="arity"),
        pytest.param(["Bound", 0], "outside its Lambda", id="free-bound"),
        pytest.param("z", "not a node", id="bare-string"),
        pytest.param(["Add"] + [["Symbol", "z"]] * 200_001, "more than 200000 nodes",
                     id="too-many-nodes"),
    ],
)
def test_trees_outside_the_whitelist_are_refused(tree, message):
    with pytest.raises(TreeError, match=message):
        from_tree(tree, TABLE)


def test_declarations_refuse_duplicates_and_other_heads():
    with pytest.raises(TreeError, match="declared twice"):
        declarations_from_tree([["Symbol", "z"], ["Symbol", "z"]])
    with pytest.raises(TreeError, match="not a symbol declaration"):
        declarations_from_tree([["Function", "z"]])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("__import__('os').system('true')", "plain calls", id="import"),
        pytest.param("z.__class__", "Attribute", id="attribute"),
        pytest.param("(lambda: 1)()", "plain calls", id="lambda"),
        pytest.param("[z for z in ()]", "ListComp", id="comprehension"),
        pytest.param("exec('1')", "unknown function 'exec'", id="exec"),
        pytest.param("2**10**10", "too large", id="huge-power"),
        pytest.param("z +", "does not parse", id="syntax"),
        pytest.param("q + 1", "unknown name 'q'", id="unknown-name"),
    ],
)
def test_the_string_parser_evaluates_nothing(text, message):
    with pytest.raises(TreeError, match=message):
        parse_expression(text, TABLE)


@pytest.mark.parametrize(
    "expr",
    [
        pytest.param(W * Z + sp.tanh(Z) / 2 - Z**2, id="polynomial-tanh"),
        pytest.param(sp.Piecewise((Z, Z > 0), (-Z, True)) + sp.Abs(W), id="piecewise"),
        pytest.param(sp.Max(Z, 0) + sp.Heaviside(Z - 1) + sp.Mod(Z, 3) + sp.pi, id="switches"),
        pytest.param(sp.Float("0.1") * Z + sp.sqrt(W) + sp.exp(-Z), id="float-sqrt"),
    ],
)
def test_the_string_parser_reads_what_str_prints(expr):
    assert parse_expression(str(expr), TABLE) == expr
