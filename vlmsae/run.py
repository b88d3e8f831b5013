"""Run one book notebook with other parameters: MyST source -> notebook -> papermill.

    python -m vlmsae.run book/03_energy_stability.md -p model siglip2
    python -m vlmsae.run book/05_modality_scores.md -p model open_clip:ViT-B-32/openai -p device cuda
    python -m vlmsae.run book/01_pareto.md -p quick 1 --out runs/pareto_quick

Writes `<out>/<stem>.ipynb` (the executed notebook), the notebook's figures (`.png`, `.json`) and
tables (`.csv`) into the same folder (it is passed as the notebook's `output_dir`), and a copy of
plotly.min.js so the executed notebook's figures also draw when converted to HTML offline.
Default `<out>`: `_outputs/<model>/<stem>`.

Unknown parameter names (compared with the names assigned in the notebook's cell tagged
`parameters`) and unknown model names stop with a clear message before anything runs.
"""

from __future__ import annotations

import argparse
import ast
import logging
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

from .atomic import atomic_path


def check_model(model: str) -> str:
    """The canonical name of `model`; `ValueError` listing the known names if it is not one.

    Delegates to `vlmsae.models.resolve` (which loads nothing); the notebooks call it right
    after their parameters cell so a typo stops the run before any heavy work.
    """
    from .models import resolve

    return resolve(model)


def read_notebook(path: str | os.PathLike):
    """The notebook of a Jupytext source (`.md` MyST, `.py`, ...) or an `.ipynb` file, as nbformat."""
    import jupytext
    import nbformat

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"notebook {str(path)!r} does not exist: give a path like book/03_energy_stability.md")
    if path.suffix == ".ipynb":
        return nbformat.read(path, as_version=4)
    return jupytext.read(path, fmt="md:myst" if path.suffix == ".md" else None)


def parameter_names(notebook) -> dict[str, str]:
    """Names assigned in the cell tagged `parameters`, mapped to their source expression."""
    cells = [c for c in notebook.cells if c.cell_type == "code" and "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"the notebook has {len(cells)} cells tagged 'parameters'; it needs exactly one")
    names: dict[str, str] = {}
    for node in ast.parse(cells[0].source).body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        for target in targets:
            if isinstance(target, ast.Name):
                names[target.id] = ast.get_source_segment(cells[0].source, node.value) or ""
    return names


def parse_value(text: str) -> Any:
    """A command-line value: a Python literal (`20000`, `0.5`, `True`, `[1, 2]`), else the string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def check_parameters(notebook, parameters: dict[str, Any]) -> None:
    known = parameter_names(notebook)
    unknown = sorted(set(parameters) - set(known))
    if unknown:
        raise ValueError(f"unknown parameter(s) {', '.join(unknown)}: this notebook's parameters are "
                         f"{', '.join(sorted(known))}")
    if "model" in parameters:
        check_model(parameters["model"])
    if "quick" in parameters:  # `-p quick 1` means on; papermill would inject the int 1, which is truthy anyway
        parameters["quick"] = bool(parameters["quick"])


def default_out(source: Path, parameters: dict[str, Any]) -> Path:
    model = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(parameters.get("model", "default"))).strip("_")
    return Path("_outputs") / model / source.stem


class _HideParameterInference(logging.Filter):
    """papermill cannot infer non-literal defaults (`quick = os.environ...`) and warns that a
    parameter we checked ourselves is unknown: drop that one message."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Passed unknown parameter")


def run_notebook(source: str | os.PathLike, parameters: dict[str, Any] | None = None,
                 out: str | os.PathLike | None = None, *, kernel: str = "python3", progress: bool = True,
                 timeout: int | None = None) -> Path:
    """Execute `source` with `parameters` through papermill; return the executed notebook's path."""
    import nbformat
    import papermill

    from .plots import PLOTLY_JS_NAME, plotly_js_path

    source = Path(source)
    parameters = dict(parameters or {})
    notebook = read_notebook(source)
    check_parameters(notebook, parameters)
    logging.getLogger("papermill").addFilter(_HideParameterInference())
    out = Path(out) if out is not None else default_out(source, parameters)
    out.mkdir(parents=True, exist_ok=True)
    parameters["output_dir"] = str(out.resolve())
    with atomic_path(out / PLOTLY_JS_NAME) as tmp:
        shutil.copyfile(plotly_js_path(), tmp)
    notebook.metadata.setdefault("kernelspec", {"name": kernel, "display_name": "Python 3", "language": "python"})
    source_ipynb = out / f".{source.stem}.source.ipynb"
    with atomic_path(source_ipynb) as tmp:
        nbformat.write(notebook, tmp)
    executed = out / f"{source.stem}.ipynb"
    running = out / f".{source.stem}.running.ipynb"  # papermill saves as it goes; renamed on success
    try:
        papermill.execute_notebook(str(source_ipynb), str(running), parameters=parameters, kernel_name=kernel,
                                   cwd=str(source.resolve().parent), progress_bar=progress,
                                   execution_timeout=timeout)
        os.replace(running, executed)
    except BaseException:
        if running.exists():  # keep the partly executed notebook for reading the error
            os.replace(running, out / f"{source.stem}.failed.ipynb")
        raise
    finally:
        source_ipynb.unlink(missing_ok=True)
    return executed


def _parameters(pairs: list[list[str]]) -> dict[str, Any]:
    parameters: dict[str, Any] = {}
    for name, value in pairs:
        if not name.isidentifier():
            raise ValueError(f"parameter name {name!r} is not a Python name")
        parameters[name] = parse_value(value)
    return parameters


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vlmsae.run", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebook", help="a book notebook, e.g. book/03_energy_stability.md")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="set a parameter (repeatable): -p model siglip2 -p quick 1 -p device cuda")
    parser.add_argument("--out", default=None, help="output folder (default _outputs/<model>/<notebook stem>)")
    parser.add_argument("--timeout", type=int, default=None, help="seconds per cell (default: none)")
    args = parser.parse_args(argv)
    try:
        executed = run_notebook(args.notebook, _parameters(args.parameter), args.out, timeout=args.timeout)
    except ValueError as error:  # bad notebook, parameter or model name: a message, not a traceback
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"executed notebook: {executed}\nfigures and tables: {executed.parent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
