// specc graph viewer: pan/zoom, fold/unfold blocks, node details. No network, no libraries.
//
// Folding works on graphviz's layout in place: a folded block keeps its width but shrinks to its title bar, and
// everything below it moves up (node groups are translated; edge paths, arrowheads, labels and enclosing
// clusters have their y coordinates remapped), so no second layout is needed.
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("specc-data").textContent);
  const view = document.getElementById("view");
  const canvas = document.getElementById("canvas");
  const svg = canvas.querySelector("svg");
  const panel = document.getElementById("details");
  let scale = 1, tx = 0, ty = 0;

  // ---- pan and zoom ---------------------------------------------------------------------------------------
  function apply() { canvas.style.transform = "translate(" + tx + "px," + ty + "px) scale(" + scale + ")"; }
  function size() { return [svg.width.baseVal.value, svg.height.baseVal.value]; }
  function fit(widthOnly) {
    const [w, h] = size(), vw = view.clientWidth, vh = view.clientHeight;
    scale = Math.min(2, widthOnly ? (vw - 20) / w : Math.min((vw - 20) / w, (vh - 20) / h));
    tx = (vw - w * scale) / 2; ty = widthOnly ? 10 : Math.max(10, (vh - h * scale) / 2); apply();
  }
  function zoomAt(cx, cy, f) {
    const r = view.getBoundingClientRect(), x = cx - r.left, y = cy - r.top;
    const s = Math.max(0.02, Math.min(20, scale * f));
    tx = x - (x - tx) * (s / scale); ty = y - (y - ty) * (s / scale); scale = s; apply();
  }
  view.addEventListener("wheel", function (e) { e.preventDefault(); zoomAt(e.clientX, e.clientY, Math.exp(-e.deltaY * 0.0015)); },
                        { passive: false });
  let drag = null, dragged = false;
  view.addEventListener("pointerdown", function (e) {
    if (e.button !== 0) return;
    drag = { x: e.clientX, y: e.clientY, tx: tx, ty: ty }; dragged = false;
  });
  window.addEventListener("pointermove", function (e) {
    if (!drag) return;
    const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
    if (!dragged && Math.abs(dx) + Math.abs(dy) < 4) return;
    dragged = true; view.classList.add("dragging");
    tx = drag.tx + dx; ty = drag.ty + dy; apply();
  });
  window.addEventListener("pointerup", function () { drag = null; view.classList.remove("dragging"); });

  // ---- fold / unfold --------------------------------------------------------------------------------------
  const folded = new Set();
  const clusterIds = Object.keys(data.clusters);
  const outer = clusterIds.filter(function (c) { return !data.clusters[c].parent; });
  function ancestors(c) { const out = []; for (let p = data.clusters[c].parent; p; p = data.clusters[p].parent) out.push(p); return out; }
  const TITLE = 24;  // height of a folded block (its title bar), in SVG units
  const orig = new Map();  // element -> its original geometry attributes
  const geomAttrs = ["d", "points", "y", "cy", "transform"];
  svg.querySelectorAll("g.node, g.edge, g.cluster").forEach(function (g) {
    g.querySelectorAll("*").forEach(function (e) {
      const o = {}; geomAttrs.forEach(function (a) { if (e.hasAttribute(a)) o[a] = e.getAttribute(a); }); orig.set(e, o);
    });
    orig.set(g, { transform: g.getAttribute("transform") });
  });
  const bands = {};  // cluster -> [top, bottom] in SVG coordinates
  clusterIds.forEach(function (c) {
    const g = document.getElementById(c);
    const shape = g && g.querySelector("path, polygon");
    if (!shape) return;
    const b = shape.getBBox(); bands[c] = [b.y, b.y + b.height];
  });
  const svgSize = { h: svg.height.baseVal.value, vb: svg.getAttribute("viewBox") };
  function mapper() {
    const folds = [...folded].filter(function (c) { return bands[c] && !ancestors(c).some(function (a) { return folded.has(a); }); })
      .map(function (c) { return { top: bands[c][0], bottom: bands[c][1], cut: Math.max(0, bands[c][1] - bands[c][0] - TITLE) }; });
    return function (y) {
      let out = y;
      folds.forEach(function (f) {
        if (y >= f.bottom) out -= f.cut;
        else if (y > f.top + TITLE) out -= (y - f.top - TITLE);
      });
      return out;
    };
  }
  function remap(str, mapY) {
    return str.replace(/(-?[\d.]+),(-?[\d.]+)/g, function (_, x, y) { return x + "," + mapY(parseFloat(y)).toFixed(2); });
  }
  function relayout() {
    const mapY = mapper();
    orig.forEach(function (o, e) {
      if (e.matches("g.node")) {  // move the whole node by where its middle goes
        const b = e.getBBox(), cy = b.y + b.height / 2, dy = mapY(cy) - cy;
        if (dy) e.setAttribute("transform", "translate(0," + dy.toFixed(2) + ")"); else e.removeAttribute("transform");
        return;
      }
      if (e.closest("g.node")) return;
      if (o.d !== undefined) e.setAttribute("d", remap(o.d, mapY));
      if (o.points !== undefined) e.setAttribute("points", remap(o.points, mapY));
      if (o.y !== undefined) e.setAttribute("y", mapY(parseFloat(o.y)).toFixed(2));
    });
    const [x0, y0, w, h] = svgSize.vb.split(/\s+/).map(parseFloat);
    const cut = h - (mapY(0) - mapY(-h)) ;
    svg.setAttribute("viewBox", [x0, y0, w, h - cut].join(" "));
    svg.setAttribute("height", ((h - cut) * svgSize.h / h).toFixed(2) + "px");  // baseVal is in px
  }
  function refresh() {
    const hidden = new Set();
    folded.forEach(function (c) {
      data.clusters[c].nodes.forEach(function (n) { hidden.add(n); });
      data.clusters[c].edges.forEach(function (e) { hidden.add(e); });
      clusterIds.forEach(function (o) { if (ancestors(o).indexOf(c) >= 0) hidden.add(o); });
    });
    svg.querySelectorAll("g.node, g.edge, g.cluster").forEach(function (g) { g.classList.toggle("hidden", hidden.has(g.id)); });
    clusterIds.forEach(function (c) {
      const g = document.getElementById(c);
      if (!g) return;
      const isFolded = folded.has(c);
      g.classList.toggle("folded", isFolded);
      const t = g.querySelector("text");
      if (t) t.textContent = (isFolded ? "\u25b8 " : "") + data.clusters[c].title +
        (isFolded ? "  (" + data.clusters[c].nodes.length + " nodes)" : "");
    });
    relayout();
  }
  function toggle(c) { if (folded.has(c)) folded.delete(c); else folded.add(c); refresh(); }

  // ---- details --------------------------------------------------------------------------------------------
  function el(tag, text, cls) { const e = document.createElement(tag); if (text !== undefined) e.textContent = text; if (cls) e.className = cls; return e; }
  function fmt(v) { return typeof v === "string" ? v : JSON.stringify(v); }
  function table(title, obj, fmtv) {
    const keys = Object.keys(obj || {});
    if (!keys.length) return;
    panel.appendChild(el("h3", title));
    const t = el("table");
    keys.forEach(function (k) {
      const tr = el("tr"); tr.appendChild(el("td", k)); tr.appendChild(el("td", (fmtv || fmt)(obj[k]))); t.appendChild(tr);
    });
    panel.appendChild(t);
  }
  function source(where, code) {
    panel.appendChild(el("div")).appendChild(el("code", where));
    if (code) panel.appendChild(el("pre", code));
  }
  function show(id) {
    const d = data.nodes[id];
    if (!d) return;
    svg.querySelectorAll("g.selected").forEach(function (g) { g.classList.remove("selected"); });
    const g = document.getElementById(id);
    if (g) g.classList.add("selected");
    panel.textContent = "";
    panel.appendChild(el("h2", d.name));
    const what = d.kind === "op" ? "op " + d.op : d.kind === "call" ? "block " + d.callee :
      d.kind === "repeat" ? "repeat of " + d.callee : d.kind;
    panel.appendChild(el("div", what + " \u00b7 in " + d.block + (d.count ? " \u00b7 \u00d7" + d.count : ""), "op"));
    if (d.doc) panel.appendChild(el("div", d.doc, "op"));
    table("output", { type: d.type });
    if (d.inputs && d.inputs.length) {
      const ins = {};
      d.inputs.forEach(function (v, i) { ins[i + ": " + v.from] = v.type; });
      table("inputs", ins);
    }
    table("attributes", d.attrs);
    table("hyper-parameters", d.hparams);
    table("parameters", d.params, function (s) { return "[" + s.join(", ") + "]"; });
    table("buffers", d.buffers, function (s) { return "[" + s.join(", ") + "]"; });
    if (d.layer) table("layer", { shared: d.layer });
    if (d.source) { panel.appendChild(el("h3", "source")); source(d.source, d.code); }
    if (d.fused_from && d.fused_from.length) {
      panel.appendChild(el("h3", "fused from"));
      d.fused_from.forEach(function (s) { source(s.source, s.code); });
    }
  }

  // ---- clicks ---------------------------------------------------------------------------------------------
  svg.addEventListener("click", function (e) {
    if (dragged) return;
    const node = e.target.closest("g.node");
    if (node) { show(node.id); return; }
    const cluster = e.target.closest("g.cluster");
    if (cluster) {
      if (e.target.tagName === "text" || folded.has(cluster.id)) toggle(cluster.id);
      show(cluster.id);
    }
  });
  document.getElementById("fold-all").addEventListener("click", function () { outer.forEach(function (c) { folded.add(c); }); refresh(); });
  document.getElementById("unfold-all").addEventListener("click", function () { folded.clear(); refresh(); });
  document.getElementById("fit").addEventListener("click", function () { fit(false); });
  document.getElementById("fit-width").addEventListener("click", function () { fit(true); });
  function reveal(id) {  // pan so that node or block `id` is in the middle of the view
    const g = document.getElementById(id);
    if (!g) return false;
    const r = g.getBoundingClientRect(), v = view.getBoundingClientRect();
    tx += v.left + v.width / 2 - (r.left + r.width / 2); ty += v.top + v.height / 2 - (r.top + r.height / 2); apply();
    return true;
  }
  window.specc = { show: show, toggle: toggle, folded: folded, fit: fit, refresh: refresh, reveal: reveal };
  const [w0, h0] = size();
  fit(h0 * ((view.clientWidth - 20) / w0) > view.clientHeight * 3);
  const wanted = decodeURIComponent(location.hash.slice(1));  // page.html#layers.0.attn: open at that node
  if (wanted && reveal(wanted)) show(wanted);
})();
