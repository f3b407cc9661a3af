"""One HTML page of the executed notebooks that opens from disk, without a server: every
figure and table is embedded. Only the scripts of nbconvert's template (MathJax,
require.js) come from a CDN: offline, equations show as TeX source.

    python -m tmkd_core.htmlreport notebooks/executed/0*.ipynb -o notebooks/executed/report.html
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from .utils import atomic_write_text


def image_outputs(notebook) -> int:
    """How many image outputs (PNG, JPEG, SVG) an executed notebook holds."""
    return sum(1 for cell in notebook.cells if cell.cell_type == "code" for out in cell.get("outputs", [])
               if any(k.startswith("image/") for k in out.get("data", {})))


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
    toc = [f"# {title}", "", "Executed by `make reproduce`; every table and figure below was computed in that run.", ""]
    toc += [f"- [{p.stem}](#{p.stem})" for p in paths]
    merged.cells.append(nbformat.v4.new_markdown_cell("\n".join(toc)))
    for p, nb in zip(paths, notebooks):
        merged.cells.append(nbformat.v4.new_markdown_cell(f'<a id="{p.stem}"></a>\n\n---\n\n`notebooks/executed/{p.name}`'))
        merged.cells.extend(nb.cells)
    body, _ = HTMLExporter(template_name="lab", embed_images=True).from_notebook_node(
        merged, resources={"metadata": {"name": title}})  # the page's <title>
    return atomic_write_text(body, out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+")
    parser.add_argument("-o", "--out", required=True)
    args = parser.parse_args(argv)
    print(html_report(args.notebooks, args.out))


if __name__ == "__main__":
    main()
