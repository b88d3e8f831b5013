# The two commands of the README. Each creates .venv and installs requirements.txt once.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test book chromium clean

$(STAMP): requirements.txt pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

# Debian's Chromium and its driver: the book test opens the built pages in it, and kaleido draws
# the figures' PNGs with it (we run as root; apt-get only when one of the two is missing).
chromium:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		(apt-get update && apt-get install -y --no-install-recommends chromium chromium-driver)

test: $(STAMP) chromium
	$(PY) -m pytest -q $(PYTEST_ARGS)

# The whole book on the embedded default (toyclip + shapes). plotly.js and MathJax are copied from
# installed packages into _build/html/_static by the extension vlmsae.book_assets: nothing to fetch.
book: $(STAMP) chromium
	$(VENV)/bin/jupyter-book build .

clean:
	rm -rf _build book/_outputs
