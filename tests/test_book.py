"""The book: every notebook runs in quick mode and produces finite figures and tables; the built
book renders its plotly figures in headless Chromium with the network blocked.

(a) `test_notebook_quick`: each notebook of `_toc.yml` that has a `parameters` cell runs through
    `vlmsae.run` (jupytext -> papermill) with `VLMSAE_QUICK=1`; every figure/table name the source
    passes to `plots.show` / `plots.table` must exist, figures as PNG (or SVG) + JSON whose data
    arrays hold finite numbers, tables as CSV with rows and no NaN.
(b) `test_built_book_offline`: `jupyter-book build` of a copy of the book (notebooks executed by (a)
    go in executed; any other is executed by the build with the same session-wide `VLMSAE_CACHE`,
    so heavy steps are computed once), then each page in
    Chromium with every host unresolvable and a dead proxy: each figure page has one rendered
    plotly SVG per figure, math is typeset by the local MathJax, and no resource load failed or
    left the machine.
Pages of `_toc.yml` that do not exist yet are skipped (a) or left out of the build (b), with the
reason printed.
"""

from __future__ import annotations

import ast
import base64
import csv
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TOC = yaml.safe_load((ROOT / "_toc.yml").read_text())
FIGURE_PAGE = re.compile(r"^book/0\d_")  # the paper's figures and the ablation: each must draw plots


def toc_pages(toc=TOC) -> list[str]:
    pages = [toc["root"]]
    for part in toc.get("parts", [toc]):
        for chapter in part.get("chapters", []):
            pages.append(chapter["file"])
            pages += [s["file"] for s in chapter.get("sections", [])]
    return pages


PAGES = toc_pages()
EXECUTED: dict[str, Path] = {}  # page -> notebook executed by (a) in this session, reused by (b)


def source_of(page: str) -> Path:
    return ROOT / f"{page}.md"


def required_outputs(path: Path) -> tuple[list[str], list[str]]:
    """Names the notebook must save: literal names of `plots.show` / `plots.table` calls that are not
    under an `if` or `try` (a conditional figure is checked when it is there, not required)."""
    from vlmsae.run import read_notebook

    names: dict[str, list[str]] = {"show": [], "table": []}

    def visit(node, conditional=False):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in names \
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "plots" and not conditional:
            name = node.args[1] if len(node.args) > 1 else next((k.value for k in node.keywords if k.arg == "name"), None)
            if isinstance(name, ast.Constant) and isinstance(name.value, str):
                names[node.func.attr].append(name.value)
        for child in ast.iter_child_nodes(node):
            visit(child, conditional or isinstance(node, (ast.If, ast.Try, ast.IfExp)))

    for cell in read_notebook(path).cells:
        if cell.cell_type == "code":
            code = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))
            visit(ast.parse(code))
    return names["show"], names["table"]


def has_parameters(path: Path) -> bool:
    return bool(re.search(r":tags:\s*\[[^\]]*parameters", path.read_text()))


@pytest.fixture(scope="session")
def book_env(tmp_path_factory):
    """Quick mode and one artifact cache for the whole session (set VLMSAE_TEST_CACHE to reuse one
    across sessions while developing)."""
    cache = os.environ.get("VLMSAE_TEST_CACHE") or str(tmp_path_factory.mktemp("vlmsae_cache"))
    patch = pytest.MonkeyPatch()
    patch.setenv("VLMSAE_QUICK", "1")
    patch.setenv("VLMSAE_CACHE", cache)
    yield {"VLMSAE_QUICK": "1", "VLMSAE_CACHE": cache}
    patch.undo()


def decode(array):
    """A plotly JSON data array as numpy (plotly >= 6 stores numpy arrays as typed base64 `bdata`)."""
    if isinstance(array, dict) and "bdata" in array:
        values = np.frombuffer(base64.b64decode(array["bdata"]), dtype=np.dtype(array["dtype"]))
        if "shape" in array:
            values = values.reshape([int(s) for s in str(array["shape"]).split(",")])
        return values.astype(float)
    return array


NUMERIC_KEYS = ("x", "y", "z", "values", "r", "theta", "size", "color", "text")


def numeric_arrays(trace, prefix=""):
    """(key, float array) for each numeric data array of a trace, nested ones (marker.size) too."""
    for key, value in trace.items():
        if isinstance(value, dict) and "bdata" not in value:
            yield from numeric_arrays(value, f"{prefix}{key}.")
            continue
        value = decode(value)
        if key not in NUMERIC_KEYS:
            continue
        if isinstance(value, np.ndarray):
            yield prefix + key, value.ravel()
        elif isinstance(value, list) and value and all(v is None or isinstance(v, (int, float)) for v in np.ravel(np.array(value, dtype=object))):
            yield prefix + key, np.array([np.nan if v is None else v for v in np.ravel(np.array(value, dtype=object))],
                                         dtype=float)


def check_figure(json_path: Path) -> int:
    """Number of finite values in the figure; fails on a trace with no numbers or a non-finite one."""
    spec = json.loads(json_path.read_text())
    assert spec.get("data"), f"{json_path.name}: the figure has no traces"
    finite = 0
    for i, trace in enumerate(spec["data"]):
        arrays = list(numeric_arrays(trace))
        if trace.get("type") in ("table",):
            continue
        assert arrays, f"{json_path.name} trace {i} ({trace.get('type')}): no numeric data"
        for key, values in arrays:
            real = values[~np.isnan(values)]
            assert real.size, f"{json_path.name} trace {i} {key}: every value is NaN/None"
            assert np.isfinite(real).all(), f"{json_path.name} trace {i} {key}: infinite values"
            # None is plotly's gap marker in line/scatter data (edge lists: x0, x1, None, ...)
            if trace.get("type", "scatter") not in ("scatter", "scattergl"):
                assert not np.isnan(values).any(), f"{json_path.name} trace {i} {key}: NaN in the data"
            finite += real.size
    return finite


def check_table(csv_path: Path) -> None:
    rows = list(csv.reader(csv_path.open()))
    assert len(rows) >= 2, f"{csv_path.name}: a header and no rows"
    numbers = 0
    for row in rows[1:]:
        for cell in row:
            assert cell.strip().lower() not in ("nan", "inf", "-inf", "none"), f"{csv_path.name}: {cell!r} in {row}"
            try:
                numbers += math.isfinite(float(cell))
            except ValueError:
                pass
    assert numbers, f"{csv_path.name}: no numbers in the table"


# ---------------------------------------------------------------------------------------------
# vlmsae.plots and vlmsae.run on their own (fast)

TINY = """---
jupytext:
  text_representation:
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---
# tiny

```{code-cell} ipython3
:tags: [parameters]
import os
model = "toyclip"
n = 3
label: str = "a"
output_dir = "_outputs/tiny"
```

```{code-cell} ipython3
from pathlib import Path
from vlmsae.run import check_model
check_model(model)
Path(output_dir, "result.txt").write_text(f"{n * 2} {label}")
```
"""


def test_run_checks_names_before_running(tmp_path):
    from vlmsae.run import check_model, read_notebook, parameter_names, run_notebook

    source = tmp_path / "tiny.md"
    source.write_text(TINY)
    assert set(parameter_names(read_notebook(source))) == {"model", "n", "label", "output_dir"}  # not the import
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) nn: this notebook's parameters are label, model, n"):
        run_notebook(source, {"nn": 5}, tmp_path / "out")
    with pytest.raises(ValueError, match="unknown model 'clipp'.*toyclip, clip, siglip, siglip2, aimv2"):
        run_notebook(source, {"model": "clipp"}, tmp_path / "out")
    assert not (tmp_path / "out").exists(), "a refused run must not start"
    with pytest.raises(ValueError, match="does not exist"):
        run_notebook(tmp_path / "missing.md", {}, tmp_path / "out")
    assert check_model("siglip2") == "hf:google/siglip2-base-patch16-224"
    with pytest.raises(ValueError, match="Known names"):
        check_model("not-a-model")


@pytest.mark.timeout(120)
def test_run_injects_parameters_and_output_dir(tmp_path):
    from vlmsae.run import main

    source = tmp_path / "tiny.md"
    source.write_text(TINY)
    out = tmp_path / "out"
    assert main([str(source), "-p", "n", "21", "-p", "label", "b c", "--out", str(out)]) == 0
    assert (out / "result.txt").read_text() == "42 b c"
    assert (out / "tiny.ipynb").exists() and (out / "plotly.min.js").exists()
    assert main([str(source), "-p", "colour", "red", "--out", str(out)]) == 2


def test_plots_show_saves_image_and_data(tmp_path, capsys):
    import plotly.graph_objects as go

    from vlmsae import plots

    plots.set_output_dir(tmp_path)
    y = np.array([0.25, 1.5, -2.0])
    fig = plots.layout(go.Figure(go.Bar(x=["a", "b", "c"], y=y)), title="bars")
    plots.show(fig, "bars")
    spec = json.loads((tmp_path / "bars.json").read_text())
    np.testing.assert_array_equal(decode(spec["data"][0]["y"]), y)
    assert check_figure(tmp_path / "bars.json") == 3
    image = tmp_path / "bars.png"
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", "kaleido + Chromium should give a PNG here"
    markup = plots.figure_html(fig, "bars")
    assert 'class="vlmsae-plotly"' in markup and "Plotly.newPlot" in markup and "cdn" not in markup.lower()
    embedded = json.loads(re.search(r"var fig = (.*);\n  var config", markup).group(1).replace("<\\/", "</"))
    np.testing.assert_array_equal(decode(embedded["data"][0]["y"]), y)
    with pytest.raises(ValueError, match="plain file stem"):
        plots.show(fig, "../escape")


def test_plots_table_csv(tmp_path):
    from vlmsae import plots

    plots.set_output_dir(tmp_path)
    rows = [{"claim": "top-512 stability", "paper": 0.92, "measured": np.float64(0.875)},
            {"claim": "energy in 512", "paper": 0.99, "measured": 0.5}]
    plots.table(rows, "claims")
    expected = "claim,paper,measured\ntop-512 stability,0.92,0.875\nenergy in 512,0.99,0.5\n"
    assert (tmp_path / "claims.csv").read_text() == expected
    check_table(tmp_path / "claims.csv")
    plots.table({"n": [1, 2], "x": [float("nan"), 1.0]}, "bad")
    with pytest.raises(AssertionError, match="nan"):
        check_table(tmp_path / "bad.csv")
    with pytest.raises(ValueError, match="different lengths"):
        plots.table({"n": [1, 2], "x": [1.0]}, "ragged")


def test_check_figure_rejects_nan(tmp_path):
    import plotly.graph_objects as go

    from vlmsae import plots

    path = tmp_path / "f.json"
    path.write_text(plots.figure_json(go.Figure(go.Bar(x=[1, 2], y=np.array([1.0, np.nan])))))
    with pytest.raises(AssertionError, match="NaN"):
        check_figure(path)
    path.write_text(plots.figure_json(go.Figure(go.Scatter(x=[0, 1, None, 2, 3], y=[0, 1, None, 1, 0]))))
    assert check_figure(path) == 8  # gaps between segments are allowed in line data
    path.write_text(plots.figure_json(go.Figure(go.Histogram(x=np.full(4, np.nan)))))
    with pytest.raises(AssertionError, match="every value"):
        check_figure(path)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("page", PAGES)
def test_notebook_quick(page, book_env, tmp_path):
    from vlmsae.run import run_notebook

    source = source_of(page)
    if not source.exists():
        pytest.skip(f"{source.relative_to(ROOT)} does not exist yet (listed in _toc.yml)")
    if not has_parameters(source):
        pytest.skip(f"{source.relative_to(ROOT)} has no parameters cell: a text page, nothing to execute")
    figures, tables = required_outputs(source)
    if FIGURE_PAGE.match(page):
        assert figures, f"{page} draws no figure through plots.show"
        assert tables, f"{page} has no 'measured in this build' table through plots.table"
    executed = run_notebook(source, {"quick": True}, tmp_path / "out", progress=False)
    assert executed.exists()
    EXECUTED[page] = executed
    out = executed.parent
    for name in figures:
        images = [out / f"{name}.{ext}" for ext in ("png", "svg")]
        assert any(p.exists() and p.stat().st_size > 1000 for p in images), f"{page}: no static image of {name!r}"
        assert check_figure(out / f"{name}.json") > 0, f"{page}: figure {name!r} holds no numbers"
    for name in tables:
        check_table(out / f"{name}.csv")
    for path in out.glob("*.json"):  # every figure saved, conditional ones too (claims JSON is not a figure)
        spec = json.loads(path.read_text())
        if isinstance(spec, dict) and "data" in spec and "layout" in spec:
            assert check_figure(path) > 0, f"{page}: figure {path.stem!r} holds no numbers"
    for path in out.glob("*.csv"):
        check_table(path)


# ---------------------------------------------------------------------------------------------
# (b) the built book in Chromium, network blocked


def browser(user_data_dir: Path):
    """Debian's headless Chromium through its chromedriver, with every host unresolvable and a dead proxy."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.fail("Debian's chromium and chromium-driver are needed: apt-get install -y chromium chromium-driver "
                    "(make test installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
                 f"--user-data-dir={user_data_dir}", "--host-resolver-rules=MAP * ~NOTFOUND",
                 "--proxy-server=127.0.0.1:9", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=options)


LOCAL = ("file:", "data:", "blob:", "about:", "chrome:", "devtools:")


def page_problems(driver, url: str, n_figures: int, has_math: bool) -> list[str]:
    driver.get_log("performance"), driver.get_log("browser")  # drop what came before (the start page)
    driver.get(url)
    deadline = time.time() + 20
    rendered = 0
    while time.time() < deadline:
        state = driver.execute_script(
            "return [document.readyState,"
            " Array.from(document.querySelectorAll('div.vlmsae-plotly')).filter(d => d.querySelector('svg.main-svg')).length,"
            " document.querySelectorAll('mjx-container').length]")
        rendered = state[1]
        if state[0] == "complete" and rendered >= n_figures and (state[2] > 0 or not has_math):
            break
        time.sleep(0.2)
    problems = []
    if rendered < n_figures:
        problems.append(f"{rendered} of {n_figures} plotly figures rendered an svg.main-svg")
    if has_math and not driver.execute_script("return document.querySelectorAll('mjx-container').length"):
        problems.append("math was not typeset by MathJax")
    urls = {}
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        params = message.get("params", {})
        if message["method"] == "Network.requestWillBeSent":
            urls[params["requestId"]] = request_url = params["request"]["url"]
            if not request_url.startswith(LOCAL):
                problems.append(f"request off the machine: {request_url}")
        elif message["method"] == "Network.loadingFailed" and params.get("requestId") in urls:
            # Only this page's requests: Chromium's own background fetches (seen once, failing on the
            # dead proxy before the page asked for anything) are not the page's resources.
            problems.append(f"failed load ({params.get('errorText')}): {urls[params['requestId']]}")
    for entry in driver.get_log("browser"):
        # resource failures and script errors; the theme's console.error about an unset colour mode is not one
        if entry["level"] == "SEVERE" and "invalid theme mode" not in entry["message"]:
            problems.append(f"console error: {entry['message'][:300]}")
    return problems


def book_copy(dest: Path) -> list[str]:
    """A copy of the book with the TOC cut to the pages that exist; returns the pages left out.

    Pages that (a) executed in this session go in as their executed notebooks, which Jupyter Book
    (`execute_notebooks: auto`) renders without running them again; the others are executed by the
    build. Either way the build is the one `make book` runs, on the same sources.
    """
    missing = [p for p in PAGES if not source_of(p).exists()]
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["execute"]["execute_notebooks"] = "auto"  # run what has no outputs; fail on errors as in the book
    (dest / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    shutil.copytree(ROOT / "book", dest / "book", ignore=shutil.ignore_patterns("_outputs", "_build", ".ipynb_checkpoints"))
    for page, executed in EXECUTED.items():
        (dest / f"{page}.md").unlink()
        shutil.copy(executed, dest / f"{page}.ipynb")
    toc = json.loads(json.dumps(TOC))
    for part in toc.get("parts", [toc]):
        part["chapters"] = [c for c in part.get("chapters", []) if c["file"] not in missing]
    toc["parts"] = [p for p in toc.get("parts", []) if p["chapters"]]
    (dest / "_toc.yml").write_text(yaml.safe_dump(toc, sort_keys=False))
    return missing


@pytest.mark.timeout(900)  # alone (without (a) first) it executes every notebook itself
def test_built_book_offline(book_env, tmp_path):
    missing = book_copy(tmp_path)
    if missing:
        print(f"left out of the test build (not written yet): {', '.join(missing)}")
    env = {**os.environ, **book_env}
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    build = subprocess.run([str(jupyter_book), "build", str(tmp_path)], env=env, capture_output=True, text=True)
    assert build.returncode == 0, f"jupyter-book build failed:\n{build.stdout[-4000:]}\n{build.stderr[-4000:]}"
    assert "Execution Failed" not in build.stdout + build.stderr, build.stdout[-4000:]
    html = tmp_path / "_build" / "html"
    assert (html / "_static" / "plotly.min.js").exists() and (html / "_static" / "mathjax" / "tex-chtml.js").exists()

    driver = browser(tmp_path / "chromium-profile")
    try:
        report = {}
        for page in PAGES:
            if page in missing:
                continue
            path = html / f"{page}.html"
            assert path.exists(), f"{page} was not built"
            markup = path.read_text()
            n_figures = markup.count('class="vlmsae-plotly"')
            if FIGURE_PAGE.match(page):
                assert n_figures, f"{page}: a figure page without a plotly figure in its HTML"
            has_math = "\\(" in markup or "\\[" in markup or 'class="math' in markup
            report[page] = page_problems(driver, path.as_uri(), n_figures, has_math)
    finally:
        driver.quit()
    broken = {page: problems for page, problems in report.items() if problems}
    assert not broken, "pages that do not render offline:\n" + "\n".join(
        f"  {page}: {'; '.join(problems)}" for page, problems in broken.items())
