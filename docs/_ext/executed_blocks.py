"""Sphinx extension: a page's output fences are filled with what its code printed.

On every page that has an empty ```` ```{output} ```` fence or shows a picture from
``_generated/``, the python blocks run at build time (see ``doc_blocks``) in a scratch
folder, and each output fence becomes a ``text`` block holding what the python block before
it printed; the pictures the code wrote there (``.png``, ``.svg``) are copied to
``_generated/`` under their names. A block that raises fails the build; so does an output
fence with nothing before it, or a block that printed nothing.
"""

from __future__ import annotations

import pathlib
import shutil

from doc_blocks import blocks, missing_features, run_blocks, scratch_folder
from sphinx.errors import ExtensionError

OUTPUT = "{output}"
#: Files a page's code writes that become pictures of the site (``_generated/NAME``).
PICTURES = (".png", ".svg")


def fill_outputs(app, docname: str, source: list[str]) -> None:
    text = source[0]
    if "```" + OUTPUT not in text and "_generated/" not in text:
        return
    page = f"{docname}.md"
    found = blocks(text)
    for block in found:
        if block.language == OUTPUT and missing_features(block):
            raise ExtensionError(f"{page}: an output fence under '% requires:' cannot be "
                                 "filled where the feature is missing; quote the output "
                                 "in a text block instead")
    with scratch_folder() as scratch:
        try:
            printed = {b.start: out for b, out in run_blocks(page, text)}
        except Exception as exc:
            raise ExtensionError(f"{page}: a code block failed: {exc!r}") from exc
        generated = pathlib.Path(app.srcdir) / "_generated"
        generated.mkdir(exist_ok=True)
        for picture in scratch.iterdir():
            if picture.suffix in PICTURES:
                shutil.copyfile(picture, generated / picture.name)
    pieces, last, previous = [], 0, None
    for block in found:
        if block.language == OUTPUT:
            if previous is None or not printed.get(previous.start, "").strip():
                raise ExtensionError(f"{page}, line {block.line}: an output fence must follow "
                                     "a python block that prints something")
            body = printed[previous.start].rstrip("\n")
            fence = "`" * max(3, 1 + max((len(r) for r in body.split("\n") if set(r) == {"`"}),
                                         default=0))
            pieces += [text[last:block.start], f"{fence}text\n{body}\n{fence}"]
            last = block.end
        elif block.language == "python":
            previous = block
    pieces.append(text[last:])
    source[0] = "".join(pieces)


def setup(app):
    app.connect("source-read", fill_outputs)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
