"""Sphinx extension: the examples run at build time and leave their pictures and output
in ``docs/_generated/`` for the pages to show (nothing there is committed).

Each entry of :data:`EXAMPLES` is a script of ``examples/`` with its arguments, in a short
configuration so that the build stays fast; what it prints goes to ``_generated/NAME.txt``.
A script that fails, or does not write the files it promises, fails the build.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import time

from sphinx.errors import ExtensionError
from sphinx.util import logging

logger = logging.getLogger(__name__)

#: name -> (script and arguments, files it must write); ``{out}`` is ``docs/_generated``.
EXAMPLES = {
    # the spiral of the Neural-ODE literature, 60 L-BFGS evaluations, audited twice
    "spiral": (["examples/learn_spiral.py", "--iterations", "60", "--audit-every", "30",
                "--plot", "{out}/spiral.png"], ["spiral.png"]),
}


def run_examples(app) -> None:
    src = pathlib.Path(app.srcdir)
    root, out = src.parent, src / "_generated"
    out.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(root), *filter(None, [os.environ.get("PYTHONPATH")])]), "MPLBACKEND": "Agg"}
    for name, (argv, files) in EXAMPLES.items():
        for f in files:
            (out / f).unlink(missing_ok=True)
        start = time.perf_counter()
        args = [a.replace("{out}", str(out)) for a in argv]
        done = subprocess.run([sys.executable, *args], cwd=root, env=env, capture_output=True,
                              text=True, check=False)
        if done.returncode != 0:
            raise ExtensionError(f"example {name} ({' '.join(argv)}) exited with "
                                 f"{done.returncode}:\n{done.stdout}\n{done.stderr}")
        missing = [f for f in files if not (out / f).is_file()]
        if missing:
            raise ExtensionError(f"example {name} did not write {missing}")
        text = done.stdout.replace(str(out) + os.sep, "")
        (out / f"{name}.txt").write_text(text)
        logger.info("example %s ran in %.1f s", name, time.perf_counter() - start)


def setup(app):
    app.connect("builder-inited", run_examples)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
