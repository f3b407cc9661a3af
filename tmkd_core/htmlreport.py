"""One HTML page of the executed notebooks that opens from disk, without a server: every
figure and table is embedded. Only the scripts of nbconvert's template (MathJax,
require.js) come from a CDN: offline, equations show as TeX source.

    python -m tmkd_core.htmlreport notebooks/executed/0*.ipynb -o notebooks/executed/report.html
"""
from __future__ import annotations

import argparse
import html
import re
from pathlib import Path
from typing import Sequence

from .utils import atomic_write_text


def image_outputs(notebook) -> int:
    """How many image outputs (PNG, JPEG, SVG) an executed notebook holds."""
    return len(image_alts(notebook, ""))


# where nbconvert's lab template writes an image output, with its placeholder alt text if any
_IMAGE_OUTPUT = re.compile(r'(<div class="jp-RenderedImage[^"]*"[^>]*>\s*<img)(?: alt="[^"]*")?')


def image_alts(notebook, name: str) -> list[str]:
    """One alt text per image output of a notebook, in page order: the notebook and the
    heading the figure stands under, which says what it shows."""
    heading, alts = name, []
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            heads = [line.lstrip("#").strip() for line in cell.source.splitlines() if line.startswith("#")]
            heading = heads[-1] if heads else heading
        elif cell.cell_type == "code":
            for out in cell.get("outputs", []):
                if any(k.startswith("image/") for k in out.get("data", {})):
                    alts.append(f"Figure of {name}: {heading}")
    return alts


def html_report(paths: Sequence[str | Path], out: str | Path, title: str = "TMKD companion: executed notebooks") -> Path:
    """Concatenate executed notebooks (in the order given) behind a table of contents and
    write them as one HTML page with nbconvert's lab template."""
    import nbformat
    from nbconvert import HTMLExporter

    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("html_report needs at least one executed notebook")
    for p in paths:
        if not p.exists():
            raise FileNotFoundError(f"executed notebook {p.resolve()} not found: run `make reproduce` first")
    notebooks = [nbformat.read(p, as_version=4) for p in paths]
    merged = nbformat.v4.new_notebook(metadata=notebooks[0].metadata)
    alts = [alt for p, nb in zip(paths, notebooks) for alt in image_alts(nb, p.stem)]
    toc = [f"# {title}", "", "Executed by `make reproduce`; every table and figure below was computed in that run.", ""]
    toc += [f"- [{p.stem}](#{p.stem})" for p in paths]
    merged.cells.append(nbformat.v4.new_markdown_cell("\n".join(toc)))
    for p, nb in zip(paths, notebooks):
        merged.cells.append(nbformat.v4.new_markdown_cell(f'<a id="{p.stem}"></a>\n\n---\n\n`notebooks/executed/{p.name}`'))
        merged.cells.extend(nb.cells)
    body, _ = HTMLExporter(template_name="lab", embed_images=True).from_notebook_node(
        merged, resources={"metadata": {"name": title}})  # the page's <title>
    found = len(_IMAGE_OUTPUT.findall(body))
    if found != len(alts):
        raise RuntimeError(f"html_report: nbconvert wrote {found} image outputs for the {len(alts)} of {paths}; "
                           "its lab template changed: update htmlreport._IMAGE_OUTPUT")
    texts = iter(alts)
    body = _IMAGE_OUTPUT.sub(lambda m: f'{m.group(1)} alt="{html.escape(next(texts))}"', body)
    return atomic_write_text(body, out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+")
    parser.add_argument("-o", "--out", required=True)
    args = parser.parse_args(argv)
    print(html_report(args.notebooks, args.out))


if __name__ == "__main__":
    main()
