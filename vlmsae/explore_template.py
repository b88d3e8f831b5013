"""The explorer's page: one HTML document with CSS and JavaScript; `vlmsae.explore` fills the slots.

Slots (replaced in one pass, so inserted text is never scanned again): ``{{TITLE}}`` (HTML-escaped
text), ``{{PLOTLY_JS}}`` (plotly.js itself), ``{{APP_JS}}`` (``APP_JS`` below), ``{{DATA}}``
(``<script type="application/json">`` blocks: ``vlmsae-meta``, ``vlmsae-concepts``,
``vlmsae-thumbs``, ``vlmsae-detail-<b>``), ``{{SCRIPT_HASHES}}`` (the sha256 sources of the two
executable scripts for the Content-Security-Policy).

Safety: the script never assigns untrusted text to innerHTML; captions and labels go into the
page through ``textContent``, thumbnails only through ``img.src`` of ``data:image/`` URIs. The
JSON blocks are parsed from ``textContent`` with ``JSON.parse`` (never evaluated), lazily: the
thumbnails on the first panel that shows images, each block of concept details on the first
click into it. Defence in depth: the Content-Security-Policy runs only the two scripts whose
hashes it lists (no inline event handler, no injected script) and allows no network request.
"""

TEMPLATE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src {{SCRIPT_HASHES}} 'unsafe-eval'; style-src 'unsafe-inline'; img-src data: blob:; font-src data:; worker-src blob:">
<title>{{TITLE}}</title>
<style>
  :root { --muted: #777; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; background: #fff; }
  header { padding: 8px 14px; border-bottom: 1px solid #ddd; }
  header h1 { font-size: 17px; margin: 0; }
  header .sub { color: var(--muted); font-size: 12px; }
  #app { display: grid; grid-template-columns: minmax(0, 1fr) 430px; height: calc(100vh - 58px); min-height: 480px; }
  #left { display: flex; flex-direction: column; min-width: 0; }
  #controls { display: flex; flex-wrap: wrap; gap: 6px 18px; padding: 6px 14px; border-bottom: 1px solid #eee; font-size: 12px; align-items: center; }
  #controls fieldset { border: 0; padding: 0; margin: 0; display: flex; gap: 6px; align-items: center; }
  #controls legend { float: left; font-weight: 600; margin-right: 4px; padding: 0; }
  #controls input[type=range] { width: 90px; }
  #controls .val { min-width: 44px; display: inline-block; font-variant-numeric: tabular-nums; }
  #map { flex: 1; min-height: 360px; }
  #panel { border-left: 1px solid #ddd; overflow-y: auto; padding: 10px 14px; }
  #panel h2 { font-size: 16px; margin: 4px 0; }
  #panel h3 { font-size: 13px; margin: 14px 0 4px; text-transform: uppercase; letter-spacing: .04em; color: #444; }
  .missing { color: #a33; font-style: italic; }
  .hint { color: var(--muted); }
  .stats { display: grid; grid-template-columns: auto 1fr; gap: 2px 10px; margin: 0; }
  .stats dt { color: var(--muted); } .stats dd { margin: 0; font-variant-numeric: tabular-nums; }
  .top-images { display: grid; grid-template-columns: repeat(4, 1fr); gap: 6px; }
  .top-images figure { margin: 0; text-align: center; font-size: 11px; }
  .top-images img { width: 88px; height: 88px; object-fit: contain; image-rendering: pixelated; background: #f3f3f3; border: 1px solid #ddd; }
  .top-texts { padding-left: 0; list-style: none; margin: 0; }
  .top-texts li { display: flex; gap: 8px; padding: 2px 0; border-bottom: 1px dotted #eee; }
  .value { font-variant-numeric: tabular-nums; color: var(--muted); min-width: 52px; text-align: right; flex: none; }
  .caption { overflow-wrap: anywhere; }
  .concept-list { display: flex; flex-direction: column; gap: 2px; }
  .concept-link { text-align: left; background: none; border: 0; padding: 1px 0; color: #1558b0; cursor: pointer; font: inherit; }
  .concept-link:hover { text-decoration: underline; }
  #hist { height: 170px; }
  #search-results { max-height: 160px; overflow-y: auto; }
  @media (max-width: 900px) { #app { grid-template-columns: 1fr; height: auto; } #map { height: 70vh; } #panel { border-left: 0; border-top: 1px solid #ddd; } }
</style>
</head>
<body>
<header>
  <h1 id="title">{{TITLE}}</h1>
  <div class="sub" id="subtitle"></div>
</header>
<div id="app">
  <div id="left">
    <div id="controls">
      <fieldset><legend>modality score</legend>
        <input type="range" id="score-min" min="0" max="1" step="0.01" value="0" aria-label="modality score minimum">
        <span class="val" id="score-min-val"></span> to
        <input type="range" id="score-max" min="0" max="1" step="0.01" value="1" aria-label="modality score maximum">
        <span class="val" id="score-max-val"></span></fieldset>
      <fieldset><legend>energy</legend>
        <input type="range" id="energy-min" min="0" max="1" step="0.005" value="0" aria-label="energy minimum (log scale)">
        <span class="val" id="energy-min-val"></span> to
        <input type="range" id="energy-max" min="0" max="1" step="0.005" value="1" aria-label="energy maximum (log scale)">
        <span class="val" id="energy-max-val"></span></fieldset>
      <label><input type="checkbox" id="hide-dead" checked> hide dead</label>
      <fieldset><legend>bridges</legend>
        <label><input type="checkbox" id="show-bridges" checked> show</label>
        top <input type="range" id="bridge-n" min="0" max="0" step="1" value="0" aria-label="number of bridge pairs">
        <span class="val" id="bridge-n-val"></span> <span id="bridge-count" class="hint"></span></fieldset>
      <fieldset><legend>search</legend>
        <input type="search" id="search" placeholder="concept id or word" size="16"></fieldset>
      <span id="visible-count" class="hint"></span>
    </div>
    <div id="map"></div>
  </div>
  <aside id="panel">
    <div id="search-results"></div>
    <div id="details"><p class="hint">Click a concept on the map, or search for one.</p></div>
  </aside>
</div>
{{DATA}}
<script>{{PLOTLY_JS}}</script>
<script>{{APP_JS}}</script>
</body>
</html>
"""

APP_JS = r"""
(function () {
  "use strict";
  function readJSON(id) {
    var node = document.getElementById(id);
    return node ? JSON.parse(node.textContent) : null;
  }
  var META = readJSON("vlmsae-meta"), C = readJSON("vlmsae-concepts");
  var N = META.n_concepts, BLOCK = META.block_size, BRIDGES = META.bridges;
  var thumbs = null, blocks = {};
  var SAMPLE = META.classifier_sample, SAMPLE_NOTE = (SAMPLE[0] < META.n_image || SAMPLE[1] < META.n_text) ?
    " (on a sample of " + SAMPLE[0] + " images, " + SAMPLE[1] + " texts)" : "";
  function getThumbs() { if (thumbs === null) { thumbs = readJSON("vlmsae-thumbs") || {}; } return thumbs; }
  function detail(i) {
    var b = Math.floor(i / BLOCK);
    if (!(b in blocks)) { blocks[b] = readJSON("vlmsae-detail-" + b); }
    return blocks[b][i - b * BLOCK];
  }

  // ---------------------------------------------------------------- small DOM helpers (no innerHTML)
  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) { node.className = className; }
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }
  function fmt(x, digits) {
    if (x === null || x === undefined || !isFinite(x)) { return "n/a"; }
    if (x !== 0 && (Math.abs(x) < 1e-3 || Math.abs(x) >= 1e4)) { return x.toExponential(2); }
    return x.toFixed(digits === undefined ? 3 : digits);
  }
  function pct(x) { return (x === null || !isFinite(x)) ? "n/a" : (100 * x).toFixed(2) + "%"; }
  function escapeForPlotly(s) {  // plotly parses a small HTML subset in hover text: show it as text
    return String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  }
  function conceptLink(j, extra) {
    var button = el("button", "concept-link", "#" + j + (extra ? "  " + extra : "") + (C.label[j] ? "  " + C.label[j] : ""));
    button.type = "button";
    button.addEventListener("click", function () { select(j); });
    return button;
  }
  function missing(text) { return el("p", "missing", text); }

  // ---------------------------------------------------------------- header
  document.getElementById("subtitle").textContent = META.subtitle;

  // ---------------------------------------------------------------- filters
  var logE = C.energy.map(function (e) { return e > 0 ? Math.log10(e) : null; });
  var finiteLogE = logE.filter(function (v) { return v !== null; });
  var eLo = finiteLogE.length ? Math.min.apply(null, finiteLogE) : 0;
  var eHi = finiteLogE.length ? Math.max.apply(null, finiteLogE) : 1;
  if (eHi <= eLo) { eHi = eLo + 1; }
  var maxE = C.energy.reduce(function (a, b) { return Math.max(a, b || 0); }, 0) || 1;
  function input(id) { return document.getElementById(id); }
  function energyAt(t) { return Math.pow(10, eLo + t * (eHi - eLo)); }
  var bridgeN = input("bridge-n");
  bridgeN.max = String(BRIDGES.length);
  bridgeN.value = String(Math.min(META.default_bridges, BRIDGES.length));
  if (!BRIDGES.length) { bridgeN.disabled = true; input("show-bridges").disabled = true; }

  function visibleMask() {
    var sLo = +input("score-min").value, sHi = +input("score-max").value;
    var tLo = +input("energy-min").value, tHi = +input("energy-max").value;
    var lo = tLo <= 0 ? -Infinity : eLo + tLo * (eHi - eLo), hi = tHi >= 1 ? Infinity : eLo + tHi * (eHi - eLo);
    var hideDead = input("hide-dead").checked, mask = new Array(N);
    for (var i = 0; i < N; i++) {
      var s = C.score[i], le = logE[i], ok = true;
      if (hideDead && C.dead[i]) { ok = false; }
      if (ok && s !== null && (s < sLo || s > sHi)) { ok = false; }  // no score: cannot be judged, kept
      if (ok && le !== null && (le < lo || le > hi)) { ok = false; }
      if (ok && le === null && lo > -Infinity) { ok = false; }  // zero energy is below any positive bound
      mask[i] = ok;
    }
    return mask;
  }
  function updateLabels() {
    input("score-min-val").textContent = (+input("score-min").value).toFixed(2);
    input("score-max-val").textContent = (+input("score-max").value).toFixed(2);
    input("energy-min-val").textContent = +input("energy-min").value <= 0 ? "min" : fmt(energyAt(+input("energy-min").value));
    input("energy-max-val").textContent = +input("energy-max").value >= 1 ? "max" : fmt(energyAt(+input("energy-max").value));
    input("bridge-n-val").textContent = bridgeN.value;
  }

  // ---------------------------------------------------------------- the map
  function hasWebGL() {
    try { var c = document.createElement("canvas"); return !!(window.WebGLRenderingContext && (c.getContext("webgl") || c.getContext("experimental-webgl"))); }
    catch (e) { return false; }
  }
  // WebGL keeps thousands of points fluid; SVG is the fallback where WebGL is missing (and is crisper for small maps)
  var TYPE = (N > 1500 && hasWebGL()) ? "scattergl" : "scatter";
  var mapDiv = input("map");
  mapDiv.setAttribute("data-trace-type", TYPE);
  var hoverText = new Array(N);
  for (var h = 0; h < N; h++) {
    hoverText[h] = "concept " + h + (C.dead[h] ? " (dead)" : "") +
      "<br>energy " + fmt(C.energy[h]) + "<br>modality score " + fmt(C.score[h]) +
      "<br>firing frequency " + pct(C.freq[h]) + "<br>classifier accuracy " + fmt(C.acc[h]) +
      (C.label[h] ? "<br>" + escapeForPlotly(C.label[h]) : "");
  }
  function markerSize(i) { return C.dead[i] ? 4 : 5 + 17 * Math.sqrt(Math.max(C.energy[i], 0) / maxE); }
  var selected = null, searchHits = [];

  function draw() {
    updateLabels();
    var mask = visibleMask(), scored = {x: [], y: [], c: [], s: [], t: [], id: []}, plain = {x: [], y: [], s: [], t: [], id: []};
    var shown = 0;
    for (var i = 0; i < N; i++) {
      if (!mask[i]) { continue; }
      shown++;
      var group = C.score[i] === null ? plain : scored;
      group.x.push(C.x[i]); group.y.push(C.y[i]); group.s.push(markerSize(i)); group.t.push(hoverText[i]); group.id.push(i);
      if (group === scored) { scored.c.push(C.score[i]); }
    }
    var ex = [], ey = [], drawn = 0, want = input("show-bridges").checked ? +bridgeN.value : 0, hiddenByFilter = 0;
    for (var k = 0; k < Math.min(want, BRIDGES.length); k++) {
      var a = BRIDGES[k][0], b = BRIDGES[k][1];
      if (!mask[a] || !mask[b]) { hiddenByFilter++; continue; }
      ex.push(C.x[a], C.x[b], null); ey.push(C.y[a], C.y[b], null); drawn++;
    }
    mapDiv.setAttribute("data-edges", String(drawn));
    mapDiv.setAttribute("data-points", String(shown));
    input("bridge-count").textContent = BRIDGES.length ? (drawn + " drawn" + (hiddenByFilter ? ", " + hiddenByFilter + " hidden by filters" : "")) : "none (" + (META.missing.bridges || "no bridge pairs") + ")";
    input("visible-count").textContent = shown + " of " + N + " concepts shown";
    var hx = [], hy = [];
    searchHits.forEach(function (j) { if (mask[j]) { hx.push(C.x[j]); hy.push(C.y[j]); } });
    var traces = [
      {type: TYPE, mode: "lines", x: ex, y: ey, hoverinfo: "skip", name: "bridges", showlegend: false,
       line: {color: "rgba(40, 40, 40, 0.45)", width: 1.2}},
      {type: TYPE, mode: "markers", x: scored.x, y: scored.y, customdata: scored.id, text: scored.t, name: "concepts",
       hovertemplate: "%{text}<extra></extra>", showlegend: false,
       marker: {size: scored.s, color: scored.c, cmin: 0, cmax: 1, opacity: 0.85, line: {width: 0.4, color: "#555"},
                colorscale: META.colors.scale,
                colorbar: {title: {text: "modality score"}, tickvals: [0, 0.5, 1], ticktext: ["text-only", "mixed", "image-only"], len: 0.6, thickness: 12}}},
      {type: TYPE, mode: "markers", x: plain.x, y: plain.y, customdata: plain.id, text: plain.t, name: "no modality score",
       hovertemplate: "%{text}<extra></extra>", showlegend: false,
       marker: {size: plain.s, color: "#9a9a9a", opacity: 0.7, symbol: "circle-open"}},
      {type: TYPE, mode: "markers", x: hx, y: hy, hoverinfo: "skip", name: "search", showlegend: false,
       marker: {size: 16, color: "#2ca02c", line: {width: 2}, symbol: "circle-open"}},
      {type: TYPE, mode: "markers", x: selected === null ? [] : [C.x[selected]], y: selected === null ? [] : [C.y[selected]],
       hoverinfo: "skip", name: "selected", showlegend: false,
       marker: {size: 22, color: "#d00", line: {width: 3}, symbol: "circle-open"}}
    ];
    var layout = {margin: {l: 30, r: 10, t: 10, b: 30}, hovermode: "closest", dragmode: "pan", uirevision: "keep",
                  xaxis: {zeroline: false, showticklabels: false, title: {text: META.layout_name + " 1"}},
                  yaxis: {zeroline: false, showticklabels: false, title: {text: META.layout_name + " 2"}},
                  plot_bgcolor: "#fcfcfc"};
    Plotly.react(mapDiv, traces, layout, {responsive: true, displaylogo: false, scrollZoom: true});
  }

  // ---------------------------------------------------------------- the side panel
  function histogram(target, d) {
    var bins = META.hist_bins, centres = [];
    for (var b = 0; b < bins; b++) { centres.push((b + 0.5) * d.hist_max / bins); }
    var traces = [];
    if (META.n_image) { traces.push({type: "bar", x: centres, y: d.hist_image, name: "images", marker: {color: META.colors.image}, opacity: 0.75}); }
    if (META.n_text) { traces.push({type: "bar", x: centres, y: d.hist_text, name: "texts", marker: {color: META.colors.text}, opacity: 0.75}); }
    Plotly.react(target, traces, {barmode: "overlay", margin: {l: 40, r: 8, t: 4, b: 30}, bargap: 0.05,
      xaxis: {title: {text: "activation (non-zero)"}}, yaxis: {title: {text: "rows"}, type: "log"},
      legend: {orientation: "h", y: 1.15}}, {displayModeBar: false, responsive: true});
  }

  function select(i, fromHash) {
    i = Number(i);
    if (!(i >= 0 && i < N && Math.floor(i) === i)) { return; }
    selected = i;
    if (!fromHash) {
      try { history.replaceState(null, "", "#concept=" + i); } catch (e) { location.hash = "concept=" + i; }
    }
    var d = detail(i), box = input("details");
    box.textContent = "";
    box.appendChild(el("h2", null, "Concept " + i + (C.dead[i] ? " (dead)" : "")));
    if (C.label[i]) { box.appendChild(el("p", "label", C.label[i])); }
    if (C.dead[i]) { box.appendChild(missing("dead: this concept never fires on this data set")); }
    var stats = el("dl", "stats");
    [["energy", fmt(C.energy[i], 4)], ["modality score", fmt(C.score[i])], ["firing frequency", pct(C.freq[i])],
     ["fires on", d.fires[0] + " of " + META.n_image + " images, " + d.fires[1] + " of " + META.n_text + " texts"],
     ["classifier accuracy", fmt(C.acc[i]) + SAMPLE_NOTE]].forEach(function (row) {
      stats.appendChild(el("dt", null, row[0])); stats.appendChild(el("dd", null, row[1]));
    });
    box.appendChild(stats);
    if (META.missing.modality) { box.appendChild(missing(META.missing.modality)); }

    box.appendChild(el("h3", null, "Top images"));
    if (!META.images_available) {
      box.appendChild(missing("images unavailable: " + META.images_reason));
    } else if (!d.images.length) {
      box.appendChild(el("p", "hint", "fires on no image"));
    } else {
      var grid = el("div", "top-images"), pictures = getThumbs();
      d.images.forEach(function (entry) {
        var figure = el("figure"), uri = pictures[String(entry[0])];
        if (typeof uri === "string" && uri.indexOf("data:image/") === 0) {
          var img = el("img"); img.src = uri; img.alt = "image " + entry[0];
          if (entry[2] !== null) { img.title = entry[2]; }
          figure.appendChild(img);
        } else {
          figure.appendChild(missing("image unreadable"));
        }
        figure.appendChild(el("figcaption", null, fmt(entry[1])));
        grid.appendChild(figure);
      });
      box.appendChild(grid);
    }

    box.appendChild(el("h3", null, "Top captions"));
    if (!META.n_text) {
      box.appendChild(missing("no text side: this model or data set has no captions"));
    } else if (!d.texts.length) {
      box.appendChild(el("p", "hint", "fires on no caption"));
    } else {
      var list = el("ol", "top-texts");
      d.texts.forEach(function (entry) {
        var item = el("li");
        item.appendChild(el("span", "value", fmt(entry[1])));
        item.appendChild(el("span", "caption", entry[0]));
        list.appendChild(item);
      });
      box.appendChild(list);
    }

    box.appendChild(el("h3", null, "Activations per modality"));
    if (C.dead[i]) { box.appendChild(missing("no activations")); }
    else { var hist = el("div"); hist.id = "hist"; box.appendChild(hist); histogram(hist, d); }

    box.appendChild(el("h3", null, "Nearest concepts (decoder cosine)"));
    var near = el("div", "concept-list");
    d.neighbors.forEach(function (entry) { near.appendChild(conceptLink(entry[0], "cos " + fmt(entry[1]))); });
    box.appendChild(near);

    box.appendChild(el("h3", null, "Strongest bridge partners"));
    if (META.missing.bridges) {
      box.appendChild(missing(META.missing.bridges));
    } else {
      [["as image concept, with text concepts:", d.bridges_as_image], ["as text concept, with image concepts:", d.bridges_as_text]].forEach(function (part) {
        box.appendChild(el("p", "hint", part[0]));
        var group = el("div", "concept-list");
        if (!part[1].length) { group.appendChild(el("span", "hint", "none")); }
        part[1].forEach(function (entry) { group.appendChild(conceptLink(entry[0], "B " + fmt(entry[1], 4))); });
        box.appendChild(group);
      });
    }
    draw();
  }

  // ---------------------------------------------------------------- search
  function search(query) {
    var results = input("search-results");
    results.textContent = "";
    query = query.trim().toLowerCase();
    searchHits = [];
    if (!query) { draw(); return; }
    if (/^#?\d+$/.test(query)) {
      var id = parseInt(query.replace("#", ""), 10);
      if (id < N) { select(id); } else { results.appendChild(missing("no concept " + id + " (ids run from 0 to " + (N - 1) + ")")); }
      return;
    }
    for (var i = 0; i < N; i++) {
      var words = C.words[i];
      for (var w = 0; w < words.length; w++) { if (words[w].indexOf(query) === 0) { searchHits.push(i); break; } }
    }
    searchHits.sort(function (a, b) { return C.energy[b] - C.energy[a]; });
    results.appendChild(el("p", "hint", searchHits.length + " concept(s) with a caption word starting with \u201c" + query + "\u201d"));
    var list = el("div", "concept-list");
    searchHits.slice(0, 50).forEach(function (j) { list.appendChild(conceptLink(j, "energy " + fmt(C.energy[j]))); });
    results.appendChild(list);
    draw();
  }

  // ---------------------------------------------------------------- wiring
  ["score-min", "score-max", "energy-min", "energy-max", "hide-dead", "show-bridges", "bridge-n"].forEach(function (id) {
    input(id).addEventListener("input", draw);
    input(id).addEventListener("change", draw);
  });
  var searchBox = input("search"), searchTimer = null;
  searchBox.addEventListener("input", function () { clearTimeout(searchTimer); searchTimer = setTimeout(function () { search(searchBox.value); }, 200); });
  searchBox.addEventListener("keydown", function (e) { if (e.key === "Enter") { clearTimeout(searchTimer); search(searchBox.value); } });
  function fromHash() {
    var m = /concept=(\d+)/.exec(location.hash);
    if (m) { select(parseInt(m[1], 10), true); }
  }
  window.addEventListener("hashchange", fromHash);
  draw();
  mapDiv.on("plotly_click", function (event) {
    var point = event.points && event.points[0];
    if (point && point.customdata !== undefined) { select(point.customdata); }
  });
  fromHash();
  document.body.setAttribute("data-ready", "1");
})();
"""
