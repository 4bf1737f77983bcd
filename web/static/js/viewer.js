// The sky viewer: Aladin Lite 3.8.2 fully offline (no survey, no HiPS list, no usage logging), the image the server
// validated, and the job's components as FWHM ellipses, or a comparison's rows as one coloured marker per class (a
// marker and its table row select each other). A click inside an ellipse selects it (Aladin itself only reacts on
// the outline), and the selected one is ringed. The controls above it set the cuts, stretch and colour map, with a
// colour bar in the image's unit. window.__viewer reports progress for tests and for the page.
//
// Aladin draws an image as two triangles between its corners, its pixels interpolated linearly between them: exact
// only in a view centred on the image's tangent point, off by d·w²/8 elsewhere (d the view's offset, w the image's
// side, in radians; 2.9" on a 3.4° image). A wide image is given as tiles (as many a side as its statistics say),
// each drawn as two triangles of its own, and shown, cut and coloured as one.
import A from "/static/vendor/aladin-lite/aladin.js";

const status = (window.__viewer = {image: false, catalog: false, sources: 0, error: null, shownMs: null});
const started = performance.now();

function hitTest(sources, ra, dec) {
  const d = Math.PI / 180;
  let best = null;
  for (const s of sources) {
    const dx = (ra - s.ra) * Math.cos(s.dec * d), dy = dec - s.dec, t = (+s.data.pa || 0) * d;
    const u = dx * Math.sin(t) + dy * Math.cos(t), v = dx * Math.cos(t) - dy * Math.sin(t);
    const major = Math.max(+s.data.major, 1) / 7200, minor = Math.max(+s.data.minor || +s.data.major, 1) / 7200;
    const r = (u / major) ** 2 + (v / minor) ** 2;
    if (r <= 1 && (!best || r < best.r)) best = {s, r};
  }
  return best && best.s;
}

const IMAGE_OPTIONS = {imgFormat: "fits", colormap: "grayscale", stretch: "asinh"};

function tiledImage(aladin, url, tiles, name) {
  const parts = [], loaded = [];
  for (let k = 0; k < tiles * tiles; k++) {
    loaded.push(new Promise((resolve, reject) => {
      parts.push(A.image(tiles > 1 ? `${url}?tile=${k}` : url, {
        ...IMAGE_OPTIONS, name: tiles > 1 ? `${name} ${k + 1}/${tiles * tiles}` : name,
        successCallback: () => resolve(), errorCallback: reject,
      }));
    }));
  }
  return {
    parts, loaded: Promise.all(loaded),
    setColormap: (colormap, options) => parts.forEach((p) => p.setColormap(colormap, options)),
    setCuts: (low, high) => parts.forEach((p) => p.setCuts(low, high)),
    getCuts: () => parts[0].getCuts(),
    show() {  // in the viewer's overlay layers, in place of the tiles shown before
      parts.forEach((p, k) => aladin.setOverlayImageLayer(p, k ? `overlay-${k}` : "overlay"));
      for (let k = parts.length; k < (aladin.caesarTiles || 0); k++) aladin.removeImageLayer(`overlay-${k}`);
      aladin.caesarTiles = parts.length;
    },
  };
}

async function tilesOf(statisticsUrl) {
  try {
    return (await (await fetch(statisticsUrl)).json()).tiles || 1;
  } catch (e) {
    return 1;
  }
}

// Aladin's transfer functions (al-core's GLSL): the colour at fraction c of the bar shows the value at fraction
// VALUE_AT[stretch](c) of the cut range.
const VALUE_AT = {
  linear: (c) => c, sqrt: (c) => c * c, log: (c) => (Math.pow(1000, c) - 1) / 1000, asinh: (c) => Math.sinh(3 * c) / 10,
};

const PER_BEAM = /^jy\s*\/\s*beam$/i;

function label(value, unit) {
  const perBeam = PER_BEAM.test(unit.trim());
  const v = perBeam ? value * 1e3 : value;
  return (Math.abs(v) >= 1000 || (Math.abs(v) < 0.01 && v !== 0) ? v.toExponential(2) : +v.toPrecision(3)) + "";
}

// One layer at a time over the sky: the image, or a map of the job on its grid, each with its own cuts and colours.
async function setUpControls(form, aladin, image) {
  const field = (name) => form.elements[name];
  const layers = {};
  let current = "image";
  const load = async (name) => {
    if (layers[name]) return layers[name];
    const option = field("layer").querySelector(`option[value="${name}"]`);
    const statistics = await (await fetch(option.dataset.statistics)).json();
    let shown = image;
    if (name !== "image") {
      shown = tiledImage(aladin, option.dataset.url, statistics.tiles || 1, name);
      shown.show();
      await shown.loaded;
    }
    return (layers[name] = {image: shown, statistics, settings: {cuts: "99.5%", stretch: "asinh", colormap: "grayscale"}});
  };
  const apply = () => {
    const {image: shown, statistics} = layers[current];
    const unit = statistics.unit || "";
    form.querySelector("[data-unit]").textContent = PER_BEAM.test(unit.trim()) ? "mJy/beam" : unit;
    const preset = statistics.cuts[field("cuts").value];
    if (preset) [field("low").value, field("high").value] = preset.map((v) => +v.toPrecision(6));
    const low = +field("low").value, high = +field("high").value;
    const stretch = field("stretch").value, colormap = field("colormap").value;
    shown.setColormap(colormap, {stretch});
    shown.setCuts(low, high);
    form.querySelector(".colorbar img").src = "/colorbar.png?colormap=" + colormap;
    form.querySelectorAll("[data-tick]").forEach((tick) => {
      tick.textContent = label(low + (high - low) * VALUE_AT[stretch](+tick.dataset.tick / 4), unit);
    });
    layers[current].settings = {cuts: field("cuts").value, low, high, stretch, colormap};
    status.display = {layer: current, low, high, stretch, colormap};
  };
  form.addEventListener("change", async (e) => {
    if (e.target.name === "layer") {
      const entry = await load(e.target.value);
      current = e.target.value;
      entry.image.show();
      const {cuts, low, high, stretch, colormap} = entry.settings;
      Object.assign(field("cuts"), {value: cuts});
      if (cuts === "custom") [field("low").value, field("high").value] = [low, high];
      field("stretch").value = stretch;
      field("colormap").value = colormap;
    } else if (e.target.name === "low" || e.target.name === "high") {
      field("cuts").value = "custom";
    }
    apply();
  });
  form.addEventListener("submit", (e) => e.preventDefault());
  await load("image");
  form.hidden = false;
  apply();
}

async function mount(el) {
  if (el.dataset.mounted) return;
  el.dataset.mounted = "1";
  try {
    await A.init;
  } catch (e) {
    status.error = String(e);
    el.textContent = "The sky viewer needs WebGL2, which this browser does not offer: " + e;
    return;
  }
  const aladin = A.aladin(el, {
    survey: [], hipsList: [], log: false, showLayersControl: false, showGotoControl: false,
    showSimbadPointerControl: false, showShareControl: false, showProjectionControl: false,
    showCooGridControl: true, showReticle: false, showFrame: true,
    // the field of view spans the width: widen it so that the whole image fits the height too
    target: el.dataset.ra + " " + el.dataset.dec, projection: "SIN",
    fov: (+el.dataset.size || 0.5) * Math.max(1, el.clientWidth / Math.max(el.clientHeight, 1)) * 1.15,
  });
  const controls = document.querySelector(`[data-viewer-controls="${el.id}"]`);
  const image = tiledImage(aladin, el.dataset.image, await tilesOf(el.dataset.statistics), "image");
  image.show();
  image.loaded.then(() => {
    status.image = true;
    status.tiles = image.parts.length;
    if (status.catalog && status.shownMs === null) status.shownMs = performance.now() - started;
    if (controls) setUpControls(controls, aladin, image).catch((e) => { status.error = "controls: " + e; });
  }, (e) => { status.error = "image: " + e; });
  if (el.dataset.comparison) {
    await showComparison(el, aladin, image);
    return;
  }
  const ring = A.graphicOverlay({color: "#00ff66", lineWidth: 4, name: "selected"});
  aladin.addOverlay(ring);
  const highlight = (s) => {  // a thick ring half again as large: the selection is seen at any zoom and stretch
    ring.removeAll();
    const major = Math.max(+s.data.major, 1) / 7200, minor = Math.max(+s.data.minor || +s.data.major, 1) / 7200;
    ring.add(A.ellipse(s.ra, s.dec, major * 1.5, minor * 1.5, +s.data.pa || 0, {color: "#00ff66", lineWidth: 4}));
    status.selected = String(s.data.component_id);
  };
  const catalog = A.catalogFromURL(el.dataset.catalog, {
    name: "components", color: "#ff5050", hoverColor: "#ffe066", selectionColor: "#00ff66",
    shape: (s) => A.ellipse(s.ra, s.dec, Math.max(+s.data.major, 0.1) / 7200, Math.max(+s.data.minor || +s.data.major, 0.1) / 7200, +s.data.pa || 0, {lineWidth: 2}),
  }, () => {
    status.catalog = true;
    status.sources = catalog.getSources().length;
    if (status.image && status.shownMs === null) status.shownMs = performance.now() - started;
  }, (e) => { status.error = "catalog: " + e; }, false);
  aladin.addCatalog(catalog);

  const byId = (id) => catalog.getSources().find((s) => String(s.data.component_id) === String(id));
  aladin.on("click", (e) => {
    if (!e || e.isDragging) return;
    const hit = hitTest(catalog.getSources(), e.ra, e.dec);
    if (hit) { catalog.deselectAll && catalog.deselectAll(); hit.select(); highlight(hit); window.caesarSelect(hit.data.component_id, true); }
  });
  window.caesarViewer = {
    aladin, catalog, image, ring,
    select(id) {
      const s = byId(id);
      if (!s) return;
      catalog.deselectAll && catalog.deselectAll();
      s.select();
      highlight(s);
      aladin.gotoRaDec(s.ra, s.dec);
    },
    screenPosition(id) {
      const s = byId(id);
      if (!s) return null;
      const [x, y] = aladin.world2pix(s.ra, s.dec);
      const rect = el.getBoundingClientRect();
      return {x: rect.left + x, y: rect.top + y};
    },
  };
}

// A comparison's rows (matched, only A, only B), each class a catalog of its own colour and marker, as the legend
// above the viewer shows them.
async function showComparison(el, aladin, image) {
  const classes = JSON.parse(el.dataset.classes);
  let rows;
  try {
    rows = (await (await fetch(el.dataset.comparison)).json()).sources;
  } catch (e) {
    status.error = "comparison: " + e;
    return;
  }
  const catalogs = {};
  for (const c of classes) {
    const catalog = A.catalog({name: c.label, color: c.color, shape: c.shape, sourceSize: 16});
    aladin.addCatalog(catalog);
    catalog.addSources(rows.filter((r) => r.class === c.name).map((r) => A.source(r.ra, r.dec, r)));
    catalogs[c.name] = catalog;
  }
  status.catalog = true;
  status.sources = rows.length;
  if (status.image && status.shownMs === null) status.shownMs = performance.now() - started;
  const ring = A.graphicOverlay({color: "#ffe066", lineWidth: 3, name: "selected"});
  aladin.addOverlay(ring);
  const goTo = (ra, dec) => {  // a row of the table: centred and ringed
    ring.removeAll();
    ring.add(A.circle(ra, dec, 12 / 3600, {color: "#ffe066", lineWidth: 3}));
    aladin.gotoRaDec(ra, dec);
    status.selected = [ra, dec];
  };
  const onRow = (e) => {
    const row = e.target.closest("table.comparison tr[data-ra]");
    if (!row || (e.type === "keydown" && e.key !== "Enter" && e.key !== " ")) return;
    if (e.type === "keydown") e.preventDefault();
    document.querySelectorAll("table.comparison tr.selected").forEach((r) => r.classList.remove("selected"));
    row.classList.add("selected");
    goTo(+row.dataset.ra, +row.dataset.dec);
  };
  document.addEventListener("click", onRow);
  document.addEventListener("keydown", onRow);
  aladin.on("click", (e) => {  // a marker (within 10 screen pixels): its row, when the table shows it
    if (!e || e.isDragging) return;
    const [cx, cy] = aladin.world2pix(e.ra, e.dec);
    let best = null;
    for (const catalog of Object.values(catalogs)) {
      for (const s of catalog.getSources()) {
        const [x, y] = aladin.world2pix(s.ra, s.dec) || [NaN, NaN];
        const d = Math.hypot(x - cx, y - cy);
        if (d <= 10 && (!best || d < best.d)) best = {s, d};
      }
    }
    if (!best) return;
    const {data} = best.s;
    const key = [data.class, data.component_a, data.component_b].join("/");
    document.querySelectorAll("table.comparison tr.selected").forEach((r) => r.classList.remove("selected"));
    const row = document.querySelector(`table.comparison tr[data-key="${key}"]`);
    if (row) { row.classList.add("selected"); row.scrollIntoView({block: "nearest"}); }
    status.clicked = key;
  });
  window.caesarViewer = {
    aladin, image, catalogs, goTo,
    screenPosition(ra, dec) {
      const [x, y] = aladin.world2pix(ra, dec);
      const rect = el.getBoundingClientRect();
      return {x: rect.left + x, y: rect.top + y};
    },
  };
}

function mountAll() { document.querySelectorAll("[data-viewer]").forEach(mount); }
mountAll();
document.addEventListener("htmx:afterSettle", mountAll);
