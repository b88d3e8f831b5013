"""One look for every figure of the book, and figures that survive Jupyter Book 1 with no network.

    from vlmsae import plots
    plots.set_output_dir(output_dir)            # the notebook's `output_dir` parameter
    fig = plots.layout(go.Figure(...), title="Energy share")
    plots.show(fig, "energy_share")             # displays; saves energy_share.png (+ .json)
    plots.table(rows, "claims")                 # displays; saves claims.csv

Why `show` and not `fig.show()`: plotly's renderer emits the MIME type
``application/vnd.plotly.v1+json`` (JupyterLab and VS Code draw it), which myst-nb drops, and its
HTML renderers load plotly.js from a CDN. `show` emits one display bundle with both:

* ``text/html``: a ``<div>`` and a script calling ``Plotly.newPlot`` with the figure's JSON. In the
  built book, plotly.js is the book's own ``_static/plotly.min.js``, added to a page's ``<head>``
  by the sphinx extension `vlmsae.book_assets` only on pages that hold a figure. Anywhere else
  (an executed notebook converted to HTML) the script loads ``plotly.min.js`` from the folder of
  the page, once per page; `vlmsae.run` puts a copy there.
* ``application/vnd.plotly.v1+json``: the same figure for Jupyter front ends.

Static images: ``<output_dir>/<name>.png`` through kaleido (>= 1, it drives the machine's
Chromium: Debian's ``chromium``); if that fails, ``.svg``; if that fails too, a standalone
``<name>.html`` that loads ``plotly.min.js`` from the same folder, with a warning saying so.
``<name>.json`` holds the figure (data and layout) as plotly JSON.
"""

from __future__ import annotations

import atexit
import csv
import html
import io
import json
import os
import re
import shutil
import uuid
import warnings
from pathlib import Path
from typing import Any, Mapping

from .atomic import atomic_path, atomic_write_text

#: one palette for the whole book. Modality: text-only blue .. image-only orange (a modality
#: score of 0 is text-only, 1 image-only; the middle, bimodal, is light grey).
COLORS: dict[str, Any] = {
    "text": "#2166ac",
    "image": "#e08214",
    "bimodal": "#bababa",
    "reference": "#444444",
    "methods": {
        "batchtopk": "#d62728", "topk": "#9467bd", "jumprelu": "#8c564b", "relu": "#e377c2",
        "pca": "#7f7f7f", "kmeans": "#17becf", "seminmf": "#bcbd22", "sparse_coding": "#2ca02c",
    },
    "sequence": ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#17becf", "#bcbd22", "#7f7f7f"],
}
#: diverging colour scale for a modality score in [0, 1] (cmin=0, cmax=1)
MODALITY_SCALE = [[0.0, "#2166ac"], [0.25, "#92c5de"], [0.5, "#f7f7f7"], [0.75, "#fdb863"], [1.0, "#e08214"]]
COLORS["modality_scale"] = MODALITY_SCALE

PLOTLY_JS_NAME = "plotly.min.js"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_output_dir: Path | None = None
_kaleido_server = False


def plotly_js_path() -> Path:
    """The plotly.js bundle shipped inside the installed `plotly` package (served, never fetched)."""
    import plotly

    path = Path(plotly.__file__).resolve().parent / "package_data" / PLOTLY_JS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall plotly (pip install --force-reinstall plotly)")
    return path


def set_output_dir(path: str | os.PathLike) -> Path:
    """Set (and create) the folder where `show` and `table` save their files."""
    global _output_dir
    _output_dir = Path(path)
    _output_dir.mkdir(parents=True, exist_ok=True)
    return _output_dir


def output_dir() -> Path:
    if _output_dir is None:
        raise ValueError("no output folder set: call vlmsae.plots.set_output_dir(output_dir) first "
                         "(the notebooks pass their `output_dir` parameter)")
    return _output_dir


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"figure/table name {name!r} is not a plain file stem: use letters, digits, '_', '-', '.'")
    return name


def layout(fig, title: str | None = None, *, height: int | None = None, width: int | None = None, **kwargs):
    """Apply the book's look to `fig` (white template, one font, compact margins) and return it."""
    fig.update_layout(
        template="plotly_white",
        font=dict(family="DejaVu Sans, Arial, sans-serif", size=13),
        margin=dict(l=60, r=30, t=60 if title else 30, b=50),
        legend=dict(bgcolor="rgba(255,255,255,0.6)"),
        **kwargs,
    )
    if title is not None:
        fig.update_layout(title=dict(text=title, x=0.02, xanchor="left"))
    if height is not None:
        fig.update_layout(height=height)
    if width is not None:
        fig.update_layout(width=width)
    return fig


def figure_json(fig) -> str:
    """The figure as plotly JSON (data + layout); numpy arrays become lists."""
    import plotly.io as pio

    return pio.to_json(fig, validate=False)


def figure_html(fig, name: str = "figure") -> str:
    """A `<div>` plus a script that draws `fig` with `Plotly.newPlot`.

    Uses the page's `window.Plotly` (the book adds `_static/plotly.min.js` to the page head);
    otherwise loads `plotly.min.js` from the page's folder, once per page.
    """
    div_id = f"vlmsae-{_check_name(name).replace('.', '-')}-{uuid.uuid4().hex[:8]}"
    height = fig.layout.height or 450
    # "</" inside a <script> would end it early; JSON allows the escaped form
    spec = figure_json(fig).replace("</", "<\\/")
    return f"""<div id="{div_id}" class="vlmsae-plotly" style="width:100%;height:{int(height)}px;"></div>
<script type="text/javascript">
(function () {{
  var fig = {spec};
  var config = {{responsive: true, displaylogo: false}};
  function draw() {{ window.Plotly.newPlot("{div_id}", fig.data, fig.layout, config); }}
  if (window.Plotly) {{ draw(); return; }}
  var s = document.querySelector("script[data-vlmsae-plotly]");
  if (!s) {{
    s = document.createElement("script");
    s.src = "{PLOTLY_JS_NAME}";
    s.setAttribute("data-vlmsae-plotly", "1");
    document.head.appendChild(s);
  }}
  s.addEventListener("load", draw);
}})();
</script>"""


def _start_kaleido() -> None:
    """One persistent headless Chromium for all exports of this process (about 0.2 s a figure
    instead of about 4 s)."""
    global _kaleido_server
    if _kaleido_server:
        return
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if chromium:
        os.environ.setdefault("BROWSER_PATH", chromium)
    import kaleido

    if hasattr(kaleido, "start_sync_server"):
        kaleido.start_sync_server(silence_warnings=True)
        atexit.register(kaleido.stop_sync_server, silence_warnings=True)
    _kaleido_server = True


def save_static(fig, name: str, folder: str | os.PathLike | None = None) -> Path:
    """Save `fig` as `<folder>/<name>.png`, else `.svg`, else standalone `.html`; return the path."""
    folder = Path(folder) if folder is not None else output_dir()
    name = _check_name(name)
    errors = []
    for fmt in ("png", "svg"):
        try:
            _start_kaleido()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # plotly warns that kaleido's server ignores kopts
                data = fig.to_image(format=fmt, scale=2 if fmt == "png" else 1)
        except Exception as error:  # kaleido or Chromium missing or failing: try the next format
            errors.append(f"{fmt}: {type(error).__name__}: {str(error)[:200]}")
            continue
        path = folder / f"{name}.{fmt}"
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
        if errors:
            warnings.warn(f"saved {path.name} instead of a PNG ({'; '.join(errors)})")
        return path
    path = folder / f"{name}.html"
    page = ("<!DOCTYPE html><html><head><meta charset='utf-8'>"
            f"<script src='{PLOTLY_JS_NAME}'></script></head><body>{figure_html(fig, name)}</body></html>")
    atomic_write_text(path, page)
    js = folder / PLOTLY_JS_NAME
    if not js.exists():
        with atomic_path(js) as tmp:
            shutil.copyfile(plotly_js_path(), tmp)
    warnings.warn(f"no static image export worked ({'; '.join(errors)}); saved {path.name} "
                  "(interactive, needs plotly.min.js beside it) instead. Install Chromium "
                  "(apt-get install -y chromium) and kaleido>=1 for PNGs.")
    return path


def show(fig, name: str) -> None:
    """Display `fig` (survives Jupyter Book 1, no CDN) and save `<name>.png` and `<name>.json`
    in the output folder (see `set_output_dir`)."""
    from IPython.display import display

    folder = output_dir()
    name = _check_name(name)
    spec = figure_json(fig)
    atomic_write_text(folder / f"{name}.json", spec)
    image = save_static(fig, name, folder)
    bundle = {
        "text/html": figure_html(fig, name),
        "application/vnd.plotly.v1+json": json.loads(spec),
        "text/plain": f"<plotly figure {name!r}: {image}>",
    }
    display(bundle, raw=True)


def _rows(data) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows of a pandas DataFrame, a list of dicts or a dict of columns."""
    if hasattr(data, "to_dict") and hasattr(data, "columns"):  # pandas DataFrame, without importing pandas
        columns = [str(c) for c in data.columns]
        return columns, [list(r) for r in data.itertuples(index=False, name=None)]
    if isinstance(data, Mapping):
        columns = [str(c) for c in data]
        lengths = {len(v) for v in data.values()}
        if len(lengths) > 1:
            raise ValueError(f"table columns have different lengths {sorted(lengths)}: give equal-length columns")
        return columns, [list(r) for r in zip(*data.values())]
    data = list(data)
    if not data or not all(isinstance(r, Mapping) for r in data):
        raise ValueError("table expects a DataFrame, a non-empty list of dicts or a dict of columns")
    columns: list[str] = []
    for r in data:
        columns += [str(c) for c in r if str(c) not in columns]
    return columns, [[r.get(c, "") for c in columns] for r in data]


def _cell(value) -> str:
    if isinstance(value, float) or type(value).__name__.startswith("float"):
        return f"{float(value):.4g}"
    return str(value)


def table(data, name: str) -> None:
    """Display a table (DataFrame, list of dicts or dict of columns) and save `<name>.csv`."""
    from IPython.display import display

    name = _check_name(name)
    columns, rows = _rows(data)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([[_py(v) for v in r] for r in rows])
    atomic_write_text(output_dir() / f"{name}.csv", buffer.getvalue())
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in r) + "</tr>" for r in rows)
    markup = f'<table class="vlmsae-table table"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
    text = "\n".join(["\t".join(columns)] + ["\t".join(_cell(v) for v in r) for r in rows])
    display({"text/html": markup, "text/plain": text}, raw=True)


def _py(value):
    """numpy scalars as plain Python values, so the CSV holds `0.5`, not `np.float64(0.5)`."""
    return value.item() if hasattr(value, "item") and getattr(value, "ndim", 1) == 0 else value


__all__ = ["COLORS", "MODALITY_SCALE", "figure_html", "figure_json", "layout", "output_dir", "plotly_js_path",
           "save_static", "set_output_dir", "show", "table"]
