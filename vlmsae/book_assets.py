"""Sphinx extension of the book: plotly.js and MathJax served from the book's own `_static`.

Listed in `_config.yml` (`sphinx.extra_extensions`), it makes the built HTML render with the
network off:

* `plotly.min.js` is copied from the installed `plotly` package into `_build/html/_static/` and
  added to the `<head>` of the pages that hold a `vlmsae.plots.show` figure (no CDN; one load a page);
* MathJax 3 (the files of the PyPI package `sphinx-mathjax-offline`) is copied to
  `_static/mathjax/`; `_config.yml` sets `mathjax_path: mathjax/tex-chtml.js` (a relative
  `mathjax_path` is taken under `_static`) instead of Sphinx's CDN default.

Nothing is committed to the repository: both come from installed packages at build time.
"""

from __future__ import annotations

import shutil
from importlib import metadata
from pathlib import Path

MATHJAX_DIST = "sphinx-mathjax-offline"
MATHJAX_ENTRY = "mathjax/tex-chtml.js"
FIGURE_MARKER = 'class="vlmsae-plotly"'


def mathjax_dir() -> Path:
    """The MathJax 3 `es5`-style folder shipped inside the `sphinx-mathjax-offline` wheel."""
    try:
        dist = metadata.distribution(MATHJAX_DIST)
    except metadata.PackageNotFoundError as error:
        raise FileNotFoundError(f"{MATHJAX_DIST} is not installed: pip install -r requirements.txt "
                                "(it ships MathJax 3 for the offline book)") from error
    path = Path(dist.locate_file("sphinx-mathjax-offline/static/mathjax"))
    if not (path / "tex-chtml.js").is_file():
        raise FileNotFoundError(f"{path}/tex-chtml.js is missing: reinstall {MATHJAX_DIST}")
    return path


def _copy_assets(app) -> None:
    """Copy before writing pages so a page never points at a file that is not there yet."""
    from .plots import PLOTLY_JS_NAME, plotly_js_path

    if app.builder.format != "html":
        return
    static = Path(app.outdir) / "_static"
    static.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(plotly_js_path(), static / PLOTLY_JS_NAME)
    shutil.copytree(mathjax_dir(), static / "mathjax", dirs_exist_ok=True)


def _add_plotly_to_figure_pages(app, pagename, templatename, context, doctree) -> None:
    from .plots import PLOTLY_JS_NAME

    if FIGURE_MARKER in context.get("body", ""):
        # called inside html-page-context, add_js_file adds the script to this page only
        app.add_js_file(PLOTLY_JS_NAME, priority=100)


def _drop_duplicate_scripts(app, pagename, templatename, context, doctree) -> None:
    """sphinx-thebe and sphinx-togglebutton add their inline scripts twice on every page; the second
    `const THEBE_JS_URL = ...` is a SyntaxError in the browser console. Keep the first of each."""
    scripts = context.get("script_files")
    if not isinstance(scripts, list):
        return
    seen, unique = set(), []
    for script in scripts:
        key = (getattr(script, "filename", None) or None, getattr(script, "attributes", {}).get("body"))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    scripts[:] = unique


def setup(app):
    app.connect("builder-inited", _copy_assets)
    app.connect("html-page-context", _add_plotly_to_figure_pages)
    app.connect("html-page-context", _drop_duplicate_scripts, priority=900)  # after the other extensions
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
