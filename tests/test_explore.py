"""The concept explorer: embedded numbers against vlmsae.metrics and numpy, escaping, degenerate
inputs, and the page itself in headless Chromium with the network blocked.

Inputs are tiny and real: shapes pairs embedded by a small deterministic embedder (a fixed random
projection of 8x8-downsampled pixels for images, of hashed caption words for texts), a BatchTopK
SAE trained for a few hundred steps on them.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from vlmsae import metrics
from vlmsae.data.shapes import ShapesPairs
from vlmsae.embed import extract
from vlmsae.explore import build_explorer, script_json
from vlmsae.explore_layout import concept_layout
from vlmsae.sae import BatchTopKSAE
from vlmsae.train import train_sae

D_EMBED, N_CONCEPTS, K = 32, 48, 4
HOSTILE = [
    "<img src=x onerror=alert(1)>",
    "</script><script>alert(1)</script>",
    "a red circle <script>window.__pwned = 1</script> & \u2028 line \u2029 sep",
    "<svg onload=\"window.__pwned = 2\"></svg> blue square",
]
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


class TinyEmbedder:
    """Deterministic stand-in for a VLM: pixels and hashed words through fixed random projections."""

    name = "tiny-test-embedder"

    def __init__(self, d: int = D_EMBED, buckets: int = 64, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.image_proj = torch.randn(8 * 8 * 3, d, generator=g)
        self.text_proj = torch.randn(buckets, d, generator=g)
        self.offset = torch.randn(d, generator=g)  # a modality gap, as in real VLMs
        self.buckets = buckets

    def encode_images(self, images) -> torch.Tensor:
        pixels = np.stack([np.asarray(im.convert("RGB").resize((8, 8)), dtype=np.float32) / 255 for im in images])
        x = torch.from_numpy(pixels.reshape(len(images), -1))
        return (x - x.mean(1, keepdim=True)) @ self.image_proj + self.offset

    def encode_texts(self, texts) -> torch.Tensor:
        bags = torch.zeros(len(texts), self.buckets)
        for r, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                bags[r, zlib.crc32(word.encode()) % self.buckets] += 1
        return bags @ self.text_proj - self.offset


class EditedShapes:
    """Shapes pairs with some captions replaced (hostile ones) or all removed (no text side).

    Its config names a source that `vlmsae.data.load` does not know: images cannot be re-opened."""

    def __init__(self, n: int, seed: int, hostile_every: int | None = None, no_text: bool = False):
        self.inner = ShapesPairs(n=n, seed=seed, captions_per_image=2)
        self.hostile_every, self.no_text = hostile_every, no_text

    @property
    def config(self) -> dict:
        return {"source": "edited-shapes-test", "n": len(self.inner), "hostile": self.hostile_every, "no_text": self.no_text}

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, i: int):
        image, captions, item_id = self.inner[i]
        if self.no_text:
            return image, [], item_id
        if self.hostile_every and i % self.hostile_every == 0:
            captions = [HOSTILE[(i // self.hostile_every) % len(HOSTILE)], captions[1]]
        return image, captions, item_id


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """An explorer of shapes embeddings whose source re-opens (thumbnails from the shapes world)."""
    root = tmp_path_factory.mktemp("explore")
    embeddings = extract(TinyEmbedder(), ShapesPairs(n=240, seed=1, captions_per_image=2), root / "emb",
                         batch_size=64, progress=False)
    torch.manual_seed(0)
    sae = BatchTopKSAE(D_EMBED, N_CONCEPTS, K)
    train_sae(sae, np.asarray(embeddings.all), steps=250, batch_size=128, lr=3e-3, seed=0, progress=False)
    result = build_explorer(embeddings, sae, root / "explorer.html", layout="pca", progress=False, n_bridges=40)
    return embeddings, sae, result


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, built):
    """Shapes pairs with hostile captions, through the same embedder and SAE, images passed explicitly."""
    root = tmp_path_factory.mktemp("hostile")
    source = EditedShapes(n=160, seed=2, hostile_every=3)
    embeddings = extract(TinyEmbedder(), source, root / "emb", batch_size=64, progress=False)
    sae = built[1]
    images = [source.inner[i][0] for i in range(len(source))]
    result = build_explorer(embeddings, sae, root / "hostile.html", layout="pca", images=images, progress=False)
    return embeddings, sae, result


def page_data(path: Path) -> dict:
    """The JSON blocks of a written page, parsed independently of the builder."""
    text = Path(path).read_text()
    blocks = dict(re.findall(r'<script type="application/json" id="([\w-]+)">(.*?)</script>', text, flags=re.S))
    data = {"meta": json.loads(blocks["vlmsae-meta"]), "concepts": json.loads(blocks["vlmsae-concepts"]),
            "thumbs": json.loads(blocks["vlmsae-thumbs"])}
    details = []
    for b in range(len([k for k in blocks if k.startswith("vlmsae-detail-")])):
        details.extend(json.loads(blocks[f"vlmsae-detail-{b}"]))
    data["details"] = details
    return data


def dense_codes(sae, rows) -> np.ndarray:
    with torch.no_grad():
        return sae.encode(torch.from_numpy(np.asarray(rows, dtype=np.float32)))[1].numpy()


def _close(embedded, expected, rtol=2e-5, atol=1e-9):
    embedded = np.array([np.nan if v is None else v for v in embedded], dtype=np.float64)
    np.testing.assert_allclose(embedded, expected, rtol=rtol, atol=atol, equal_nan=True)


# ------------------------------------------------------------------------------ numbers
def test_embedded_numbers_equal_metrics(built):
    embeddings, sae, result = built
    data = page_data(result.path)
    z_img, z_txt = dense_codes(sae, embeddings.image), dense_codes(sae, embeddings.text)
    D = sae.dictionary.detach().numpy()
    assert data["meta"]["n_concepts"] == N_CONCEPTS == len(data["details"]) == len(data["concepts"]["energy"])
    assert (data["meta"]["n_image"], data["meta"]["n_text"]) == (240, 480)
    _close(data["concepts"]["energy"], metrics.energy(np.concatenate([z_img, z_txt])))
    _close(data["concepts"]["score"], metrics.modality_score(z_img, z_txt))
    _close(data["concepts"]["acc"], metrics.modality_classifier_accuracy(embeddings.image, embeddings.text, D))
    pairs = np.asarray(embeddings.pairs)
    B = metrics.bridge_matrix(z_img[pairs[:, 0]], z_txt[pairs[:, 1]], D)
    expected = metrics.top_bridges(B, 40)
    assert len(data["meta"]["bridges"]) == len(expected) == 40
    assert [(i, j) for i, j, _ in data["meta"]["bridges"]] == [(i, j) for i, j, _ in expected]
    _close([b for _, _, b in data["meta"]["bridges"]], [b for _, _, b in expected])
    # firing frequency and dead concepts: a plain count
    fires = (z_img > 0).sum(0) + (z_txt > 0).sum(0)
    _close(data["concepts"]["freq"], fires / (len(z_img) + len(z_txt)))
    assert data["concepts"]["dead"] == [bool(f == 0) for f in fires]
    assert result.n_dead == int((fires == 0).sum())


def test_panel_details_match_numpy_loops(built):
    embeddings, sae, result = built
    data = page_data(result.path)
    z_img, z_txt = dense_codes(sae, embeddings.image), dense_codes(sae, embeddings.text)
    D = sae.dictionary.detach().numpy()
    Dn = D / np.linalg.norm(D, axis=1, keepdims=True)
    captions, pairs = embeddings.captions, np.asarray(embeddings.pairs)
    pairs_b = metrics.bridge_matrix(z_img[pairs[:, 0]], z_txt[pairs[:, 1]], D)
    for i, d in enumerate(data["details"]):
        for codes, entries, kind in ((z_img, d["images"], "image"), (z_txt, d["texts"], "text")):
            column = codes[:, i]
            order = sorted((r for r in range(len(column)) if column[r] > 0), key=lambda r: (-column[r], r))[:8]
            if kind == "image":
                assert [e[0] for e in entries] == order
                for row, _, caption in entries:  # the image's own (first) caption
                    assert caption == captions[pairs[pairs[:, 0] == row][0, 1]]
            else:
                assert [e[0] for e in entries] == [captions[r] for r in order]
            _close([e[1] for e in entries], column[order], rtol=1e-5)
        # histograms: every positive activation counted once, in the bin of value / max * bins
        top = max(z_img[:, i].max(), z_txt[:, i].max())
        for codes, counts in ((z_img, d["hist_image"]), (z_txt, d["hist_text"])):
            expected = np.zeros(20, int)
            for v in codes[:, i]:
                if v > 0:
                    expected[min(int(v / top * 20), 19)] += 1
            assert counts == expected.tolist()
        assert d["fires"] == [int((z_img[:, i] > 0).sum()), int((z_txt[:, i] > 0).sum())]
        cos = Dn @ Dn[i]
        cos[i] = -np.inf
        assert [j for j, _ in d["neighbors"]] == list(np.argsort(-cos, kind="stable")[:8])
        row = pairs_b[i].copy()
        row[i] = -np.inf
        expected_partners = [j for j in np.argsort(-row, kind="stable")[:5] if row[j] > 0]
        assert [j for j, _ in d["bridges_as_image"]] == expected_partners
        # the label's words come from the captions behind the concept
        label = data["concepts"]["label"][i]
        if label:
            behind = " ".join(captions[r] for r in range(len(captions))).lower()
            assert all(word in behind for word in label.split())


def test_thumbnails_are_reencoded_shapes_images(built):
    embeddings, _, result = built
    data = page_data(result.path)
    assert data["meta"]["images_available"] and result.images_available
    shown = {e[0] for d in data["details"] for e in d["images"]}
    assert set(map(int, data["thumbs"])) == shown and result.n_thumbnails == len(shown)
    import base64
    import io

    from PIL import Image

    world = ShapesPairs(n=240, seed=1, captions_per_image=2)
    for row in sorted(shown)[:5]:
        uri = data["thumbs"][str(row)]
        assert uri.startswith("data:image/png;base64,")
        decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGB"))
        np.testing.assert_array_equal(decoded, np.asarray(world[row][0]))  # PNG is lossless at 32x32


def test_hostile_captions_are_escaped_in_the_file(hostile):
    embeddings, _, result = hostile
    text = result.path.read_text()
    assert any(h in embeddings.captions for h in HOSTILE)
    for payload in HOSTILE:
        assert payload not in text
    assert "<img src=x" not in text and "<svg onload" not in text and "\u2028" not in text and "\u2029" not in text
    # only the page's own script elements: 2 executable + 3 + ceil(c / block) JSON blocks
    assert len(re.findall(r"<script\b", text)) == 2 + 3 + 1
    data = page_data(result.path)  # and the captions survive the round trip unchanged
    texts = {t for d in data["details"] for t, _ in d["texts"]}
    assert texts & set(HOSTILE)
    assert texts <= set(embeddings.captions)


def test_script_json_escapes_markup_and_line_separators():
    value = {"a": "</script><!-- & \u2028\u2029 é"}
    text = script_json(value)
    assert not set("<>&\u2028\u2029é") & set(text)
    assert json.loads(text) == value


def test_degenerate_inputs_give_a_page_with_missing_parts_marked(tmp_path, built):
    source = EditedShapes(n=96, seed=4, no_text=True)
    embeddings = extract(TinyEmbedder(), source, tmp_path / "emb", batch_size=48, progress=False)
    assert embeddings.n_text == 0
    sae = copy.deepcopy(built[1])
    with torch.no_grad():
        sae.W_enc[:5] = 0  # five concepts that can never fire: dead
        sae.b_enc[:5] = -10
    result = build_explorer(embeddings, sae, tmp_path / "x.html", layout="pca", progress=False)
    data = page_data(result.path)
    meta, concepts = data["meta"], data["concepts"]
    assert all(concepts["dead"][:5]) and result.n_dead >= 5
    assert concepts["score"] == [None] * N_CONCEPTS and concepts["acc"] == [None] * N_CONCEPTS
    assert meta["bridges"] == [] and "no text" in meta["missing"]["modality"]
    assert not meta["images_available"] and "cannot be re-opened" in meta["images_reason"]
    assert all(d["texts"] == [] and d["images"] for d, dead in zip(data["details"], concepts["dead"]) if not dead)
    # energies still equal the metric on the image side alone
    _close(concepts["energy"], metrics.energy(dense_codes(sae, embeddings.image)))


def test_folder_source_is_reopened_for_thumbnails(tmp_path, built):
    """A JSONL folder source: thumbnails come from its files; a moved folder marks images unavailable."""
    from vlmsae.data import load
    from vlmsae.explore_images import ImagesUnavailable, source_images

    world = ShapesPairs(n=24, seed=7)
    folder = tmp_path / "pairs"
    folder.mkdir()
    with open(folder / "index.jsonl", "w") as index:
        for i in range(len(world)):
            image, captions, _ = world[i]
            image.save(folder / f"{i}.png")
            index.write(json.dumps({"image": f"{i}.png", "caption": captions[0], "id": f"item-{i}"}) + "\n")
    embeddings = extract(TinyEmbedder(), load(f"folder:{folder}"), tmp_path / "emb", batch_size=8, progress=False)
    get = source_images(embeddings)
    for row in (0, 5, 23):  # the right image for each row, matched by id
        assert embeddings.ids[row] == f"item-{row}"
        np.testing.assert_array_equal(np.asarray(get(row)), np.asarray(world[row][0]))
    result = build_explorer(embeddings, built[1], tmp_path / "f.html", layout="pca", progress=False)
    assert result.images_available and result.n_thumbnails > 0
    (folder / "index.jsonl").write_text("")  # the index changed since extraction
    with pytest.raises(ImagesUnavailable, match="changed"):
        source_images(embeddings)
    shutil.rmtree(folder)
    result = build_explorer(embeddings, built[1], tmp_path / "g.html", layout="pca", progress=False)
    meta = page_data(result.path)["meta"]
    assert not meta["images_available"] and "cannot be opened again" in meta["images_reason"]


def test_bad_arguments_raise_named_errors(built):
    embeddings, sae, _ = built
    with pytest.raises(ValueError, match="layout"):
        concept_layout(sae.dictionary, "tsne")
    with pytest.raises(ValueError, match="n_top"):
        build_explorer(embeddings, sae, "/tmp/unused.html", n_top=0)
    with pytest.raises(ValueError, match="d=16"):
        build_explorer(embeddings, BatchTopKSAE(16, 8, 2), "/tmp/unused.html", layout="pca")
    with pytest.raises(ValueError, match="one image per row"):
        build_explorer(embeddings, sae, "/tmp/unused.html", layout="pca", images=[None] * 3, progress=False)


def test_umap_layout_is_cached_by_dictionary(tmp_path, monkeypatch):
    import vlmsae.explore_layout as layout

    calls = []

    def fake_umap(D, **kwargs):  # stands in for umap-learn: counts calls, returns a known layout
        calls.append(D.shape)
        return D[:, :2] * 3

    monkeypatch.setattr(layout, "umap_layout", fake_umap)
    D = torch.nn.functional.normalize(torch.randn(20, 6), dim=1)
    first = layout.concept_layout(D, "umap", cache_dir=tmp_path)
    second = layout.concept_layout(D, "umap", cache_dir=tmp_path)
    assert calls == [(20, 6)] and np.array_equal(first, second) and np.allclose(first, D[:, :2].numpy() * 3)
    layout.concept_layout(D.flip(0), "umap", cache_dir=tmp_path)  # another dictionary, another key
    assert len(calls) == 2 and len(list(tmp_path.glob("*.npy"))) == 2


# ------------------------------------------------------------------------------ in the browser
@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists() or shutil.which("chromium") is None:
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install selenium)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
                 "--disable-dev-shm-usage", "--window-size=1400,900",
                 # the network is blocked three ways: a dead proxy, no name resolution, offline emulation
                 "--proxy-server=http://127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.emulateNetworkConditions",
                           {"offline": True, "latency": 0, "downloadThroughput": 0, "uploadThroughput": 0})
    yield driver
    driver.quit()


def _open(driver, path: Path, fragment: str = ""):
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(path.resolve().as_uri() + fragment)
    WebDriverWait(driver, 30).until(lambda d: d.execute_script("return document.body.getAttribute('data-ready')") == "1")


def _network_requests(driver) -> list[str]:
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return [u for u in urls if u.startswith(("http:", "https:", "ws:", "wss:", "ftp:"))]


def test_page_renders_offline_and_selects_from_the_url(browser, built):
    embeddings, _, result = built
    data = page_data(result.path)
    concept = max(range(N_CONCEPTS), key=lambda i: data["concepts"]["energy"][i])  # live, with images and texts
    _open(browser, result.path, f"#concept={concept}")
    assert browser.execute_script("return window.Plotly !== undefined")
    n_points = int(browser.execute_script("return document.getElementById('map').getAttribute('data-points')"))
    live = sum(not d for d in data["concepts"]["dead"])
    assert n_points == live  # dead concepts hidden by default
    drawn = browser.execute_script(
        "var m = document.getElementById('map');"
        "return {svg: m.querySelectorAll('svg.main-svg').length, points: m.querySelectorAll('.scatterlayer .point').length,"
        " canvas: m.querySelectorAll('canvas').length, type: m.getAttribute('data-trace-type')};")
    assert drawn["svg"] > 0
    if drawn["type"] == "scatter":  # SVG: one path per point (+ 1 selection ring)
        assert drawn["points"] == n_points + 1
    else:
        assert drawn["canvas"] > 0
    assert browser.find_element("css selector", "#details h2").text.startswith(f"Concept {concept}")
    ring = browser.execute_script("var t = document.getElementById('map').data[4]; return [t.name, t.x, t.y];")
    assert ring == ["selected", [data["concepts"]["x"][concept]], [data["concepts"]["y"][concept]]]
    shown_captions = [e.text for e in browser.find_elements("css selector", "#details .top-texts .caption")]
    assert shown_captions == [t for t, _ in data["details"][concept]["texts"]] and shown_captions
    decoded = browser.execute_script(
        "return Array.from(document.querySelectorAll('#details .top-images img')).map(i => i.complete && i.naturalWidth);")
    assert len(decoded) == len(data["details"][concept]["images"]) > 0 and all(w == 32 for w in decoded)
    assert _network_requests(browser) == []


def test_bridge_slider_and_toggle_change_drawn_edges(browser, built):
    _, _, result = built
    _open(browser, result.path)
    script = """
      var s = document.getElementById(arguments[0]);
      if (s.type === 'checkbox') { s.checked = arguments[1]; } else { s.value = String(arguments[1]); }
      s.dispatchEvent(new Event('input'));
      var m = document.getElementById('map');
      return [+m.getAttribute('data-edges'), m.data[0].x.filter(v => v !== null).length / 2];"""
    counts = {}
    browser.execute_script(script, "hide-dead", False)
    for n in (0, 5, 40):
        counts[n] = browser.execute_script(script, "bridge-n", n)
        assert counts[n][0] == counts[n][1]  # the counter tells what the trace holds
    assert counts[0][0] == 0 and counts[5][0] == 5 and counts[40][0] == 40
    assert browser.execute_script(script, "show-bridges", False)[1] == 0
    assert browser.execute_script(script, "show-bridges", True)[1] == 40


def test_hostile_captions_show_as_text_and_never_run(browser, hostile):
    from selenium.common.exceptions import NoAlertPresentException

    embeddings, _, result = hostile
    data = page_data(result.path)
    concept = next(i for i, d in enumerate(data["details"]) if {t for t, _ in d["texts"]} & set(HOSTILE))
    _open(browser, result.path, f"#concept={concept}")
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text
    assert browser.execute_script("return window.__pwned === undefined")
    shown = [e.get_attribute("textContent") for e in browser.find_elements("css selector", "#details .top-texts .caption")]
    assert set(shown) & set(HOSTILE) and shown == [t for t, _ in data["details"][concept]["texts"]]
    # the markup inside captions created no elements
    assert browser.execute_script("return document.querySelectorAll('img[src=\"x\"], #details svg[onload], #details script').length") == 0
    # search by a word of a hostile caption: results are links with text only
    box = browser.find_element("id", "search")
    box.send_keys("onerror\n")
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text
    assert browser.execute_script("return window.__pwned === undefined")


def test_filters_search_and_links(browser, built):
    _, _, result = built
    data = page_data(result.path)
    concepts = data["concepts"]
    _open(browser, result.path)
    set_value = """
      var s = document.getElementById(arguments[0]);
      if (s.type === 'checkbox') { s.checked = arguments[1]; } else { s.value = String(arguments[1]); }
      s.dispatchEvent(new Event('input'));
      return +document.getElementById('map').getAttribute('data-points');"""
    live = [i for i in range(N_CONCEPTS) if not concepts["dead"][i]]
    shown = browser.execute_script(set_value, "score-min", 0.5)
    assert shown == sum(concepts["score"][i] is None or concepts["score"][i] >= 0.5 for i in live)
    browser.execute_script(set_value, "score-min", 0)
    # energy slider on a log scale between the smallest and largest positive energy
    positive = np.log10([e for e in concepts["energy"] if e and e > 0])
    cut = positive.min() + 0.5 * (positive.max() - positive.min())
    shown = browser.execute_script(set_value, "energy-min", 0.5)
    assert shown == sum(concepts["energy"][i] > 0 and np.log10(concepts["energy"][i]) >= cut - 1e-9 for i in live)
    browser.execute_script(set_value, "energy-min", 0)
    assert browser.execute_script(set_value, "hide-dead", False) == N_CONCEPTS
    # search by word: the listed concepts are those with a caption word starting with it
    word = next(w[0] for w in concepts["words"] if w)
    box = browser.find_element("id", "search")
    box.clear()
    box.send_keys(word + "\n")
    expected = {i for i, words in enumerate(concepts["words"]) if any(w.startswith(word) for w in words)}
    links = browser.find_elements("css selector", "#search-results .concept-link")
    assert expected and {int(link.text.split()[0][1:]) for link in links} == expected  # c = 48 < 50 listed
    # following a link selects that concept and puts it in the address
    target = int(links[0].text.split()[0][1:])
    links[0].click()
    assert browser.find_element("css selector", "#details h2").text.startswith(f"Concept {target}")
    assert browser.execute_script("return location.hash") == f"#concept={target}"
    neighbor = data["details"][target]["neighbors"][0][0]
    browser.find_element("css selector", "#details .concept-list .concept-link").click()
    assert browser.find_element("css selector", "#details h2").text.startswith(f"Concept {neighbor}")
