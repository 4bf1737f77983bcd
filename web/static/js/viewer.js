// The sky viewer: Aladin Lite 3.8.2 fully offline (no survey, no HiPS list, no usage logging), the image the server
// validated, and the job's components as FWHM ellipses. A click inside an ellipse selects it (Aladin itself only
// reacts on the outline). window.__viewer reports progress for tests and for the page.
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
  aladin.setOverlayImageLayer(A.image(el.dataset.image, {
    imgFormat: "fits", name: "image", colormap: "grayscale", stretch: "asinh",
    successCallback: () => { status.image = true; if (status.catalog && status.shownMs === null) status.shownMs = performance.now() - started; },
    errorCallback: (e) => { status.error = "image: " + e; },
  }));
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
    if (hit) { catalog.deselectAll && catalog.deselectAll(); hit.select(); window.caesarSelect(hit.data.component_id, true); }
  });
  window.caesarViewer = {
    aladin, catalog,
    select(id) {
      const s = byId(id);
      if (!s) return;
      catalog.deselectAll && catalog.deselectAll();
      s.select();
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

function mountAll() { document.querySelectorAll("[data-viewer]").forEach(mount); }
mountAll();
document.addEventListener("htmx:afterSettle", mountAll);
