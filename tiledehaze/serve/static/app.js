"use strict";
// The page: upload and compare, and a before/after tile viewer for large images.

const $ = (id) => document.getElementById(id);
const BROWSER_FORMATS = ["image/jpeg", "image/png", "image/webp", "image/bmp"];

async function failure(response) {
  const text = (await response.text()).trim();
  return `${response.status}: ${text || response.statusText}`;
}

// ---------- upload and compare ----------

const upload = { file: null, urls: [] };

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

function optionValues() {
  const form = new FormData();
  form.append("model", $("model").value);
  for (const input of $("options").querySelectorAll("input")) form.append(input.name, input.value);
  return form;
}

function renderOptions(models) {
  const model = models.find((m) => m.name === $("model").value);
  const box = $("options");
  box.replaceChildren();
  for (const spec of model ? model.options : []) {
    const label = document.createElement("label");
    const input = document.createElement("input");
    Object.assign(input, { type: "number", name: spec.name, min: spec.min, max: spec.max, step: spec.step,
                           value: spec.default });
    label.append(`${spec.label} `, input);
    box.append(label);
  }
}

async function setupModels() {
  const info = await (await fetch("/api/models")).json();
  for (const m of info.models) {
    const option = new Option(`${m.name}: ${m.description}`, m.name, false, m.name === info.default);
    $("model").append(option);
  }
  $("limits").textContent = `TIFF, JPEG, PNG, WebP or BMP, up to ${info.max_upload_mb} MB`;
  renderOptions(info.models);
  $("model").addEventListener("change", () => renderOptions(info.models));
}

function objectUrl(blob) {
  const url = URL.createObjectURL(blob);
  upload.urls.push(url);
  return url;
}

async function post(path, blob, name, extra) {
  const form = extra || new FormData();
  form.append("file", blob, name);
  const response = await fetch(path, { method: "POST", body: form });
  if (!response.ok) throw new Error(await failure(response));
  return response;
}

// TIFF and 16-bit images are shown through the server's 8-bit preview
async function displayable(blob, name) {
  if (BROWSER_FORMATS.includes(blob.type)) return blob;
  return (await post("/api/preview", blob, name)).blob();
}

function loaded(img, url) {
  return new Promise((resolve, reject) => {
    img.onload = resolve;
    img.onerror = () => reject(new Error("the browser could not show the image"));
    img.src = url;
  });
}

async function restore() {
  const file = upload.file;
  if (!file) return;
  upload.urls.splice(0).forEach((url) => URL.revokeObjectURL(url));
  $("rerun").disabled = true;
  $("compare").dataset.ready = "false";
  setStatus(`Restoring ${file.name} with ${$("model").value}…`);
  const started = performance.now();
  try {
    const response = await post("/api/restore", file, file.name, optionValues());
    const restored = await response.blob();
    const name = /filename="?([^";]+)"?/.exec(response.headers.get("content-disposition") || "");
    const [before, after] = await Promise.all([displayable(file, file.name), displayable(restored, file.name)]);
    await Promise.all([loaded($("before"), objectUrl(before)), loaded($("after"), objectUrl(after))]);
    $("download").href = objectUrl(restored);
    $("download").download = name ? name[1] : "restored";
    $("compare").hidden = false;
    $("result-row").hidden = false;
    $("compare").dataset.ready = "true";
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    setStatus(`${file.name}: ${$("before").naturalWidth}×${$("before").naturalHeight}, restored in ${seconds} s`);
  } catch (err) {
    setStatus(err.message, true);
  } finally {
    $("rerun").disabled = false;
  }
}

function setSplit(value) {
  $("after").style.clipPath = `inset(0 0 0 ${value}%)`;
  $("divider").style.left = `${value}%`;
}

function setupUpload() {
  const drop = $("drop");
  const choose = (file) => { if (file) { upload.file = file; restore(); } };
  $("file").addEventListener("change", () => choose($("file").files[0]));
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const type of ["dragleave", "drop"]) drop.addEventListener(type, () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); choose(e.dataTransfer.files[0]); });
  $("rerun").addEventListener("click", restore);
  $("slider").addEventListener("input", () => setSplit($("slider").value));
  // dragging across the picture moves the split too
  $("compare").addEventListener("pointermove", (e) => {
    if (!e.buttons) return;
    const box = $("compare").getBoundingClientRect();
    const value = Math.round(Math.min(100, Math.max(0, (100 * (e.clientX - box.left)) / box.width)));
    $("slider").value = value;
    setSplit(value);
  });
  setSplit($("slider").value);
}

// ---------- large images: a tile viewer on a canvas ----------

const viewer = { images: [], image: null, scale: 1, cx: 0, cy: 0, tiles: new Map(), drawn: 0, level: 0, frame: 0 };
window.tiledehazeViewer = viewer; // for tests and the curious

function tileUrl(image, side, level, x, y) {
  return `/api/images/${image.id}/${side}/${level}/${x}/${y}.png`;
}

function tile(url) {
  let entry = viewer.tiles.get(url);
  if (!entry) {
    entry = { img: new Image(), ok: false };
    entry.img.onload = () => { entry.ok = true; redraw(); };
    entry.img.src = url;
    viewer.tiles.set(url, entry);
    if (viewer.tiles.size > 600) viewer.tiles.delete(viewer.tiles.keys().next().value);
  }
  return entry.ok ? entry.img : null;
}

function fit() {
  const image = viewer.image;
  const canvas = $("viewer");
  viewer.scale = Math.min(canvas.width / image.width, canvas.height / image.height);
  viewer.cx = image.width / 2;
  viewer.cy = image.height / 2;
}

function zoomAt(factor, px, py) {
  const canvas = $("viewer");
  const image = viewer.image;
  const minScale = Math.min(canvas.width / image.width, canvas.height / image.height) / 2;
  const scale = Math.min(8, Math.max(minScale, viewer.scale * factor));
  // keep the image point under (px, py) in place
  const ix = viewer.cx + (px - canvas.width / 2) / viewer.scale;
  const iy = viewer.cy + (py - canvas.height / 2) / viewer.scale;
  viewer.cx = ix - (px - canvas.width / 2) / scale;
  viewer.cy = iy - (py - canvas.height / 2) / scale;
  viewer.scale = scale;
  redraw();
}

function drawLevel(ctx, image, side, level) {
  const canvas = $("viewer");
  const f = 2 ** level;
  const span = image.tile * f; // image pixels per tile
  const x0 = viewer.cx - canvas.width / 2 / viewer.scale, y0 = viewer.cy - canvas.height / 2 / viewer.scale;
  const x1 = viewer.cx + canvas.width / 2 / viewer.scale, y1 = viewer.cy + canvas.height / 2 / viewer.scale;
  const cols = Math.ceil(image.width / span), rows = Math.ceil(image.height / span);
  let drawn = 0;
  for (let ty = Math.max(0, Math.floor(y0 / span)); ty <= Math.min(rows - 1, Math.floor(y1 / span)); ty++) {
    for (let tx = Math.max(0, Math.floor(x0 / span)); tx <= Math.min(cols - 1, Math.floor(x1 / span)); tx++) {
      const img = tile(tileUrl(image, side, level, tx, ty));
      if (!img) continue;
      const sx = (tx * span - x0) * viewer.scale, sy = (ty * span - y0) * viewer.scale;
      ctx.drawImage(img, sx, sy, img.naturalWidth * f * viewer.scale, img.naturalHeight * f * viewer.scale);
      drawn++;
    }
  }
  return drawn;
}

function draw() {
  viewer.frame = 0;
  const image = viewer.image;
  const canvas = $("viewer");
  if (!image) return;
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingQuality = "high";
  ctx.fillStyle = "#22272e";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  // the finest level whose pixels are still no smaller than the screen's
  viewer.level = Math.max(0, Math.min(image.levels - 1, Math.floor(Math.log2(1 / viewer.scale))));
  const split = Math.round((canvas.width * $("split").value) / 100);
  viewer.drawn = 0;
  for (const [side, left, right] of [["input", 0, split], ["output", split, canvas.width]]) {
    if (right <= left) continue;
    ctx.save();
    ctx.beginPath();
    ctx.rect(left, 0, right - left, canvas.height);
    ctx.clip();
    if (side === "output" && image.status !== "ready") {
      ctx.fillStyle = "#fff8";
      ctx.font = `${Math.round(16 * devicePixelRatio)}px system-ui, sans-serif`;
      const text = image.status === "failed" ? "restoration failed" : "restoring…";
      ctx.fillText(text, split + 20, canvas.height / 2);
    } else {
      drawLevel(ctx, image, side, image.levels - 1); // whole image, shown while finer tiles load
      viewer.drawn += drawLevel(ctx, image, side, viewer.level);
    }
    ctx.restore();
  }
  ctx.fillStyle = "#fff";
  ctx.fillRect(split - 1, 0, 2, canvas.height);
  canvas.dataset.level = viewer.level;
  $("zoom").textContent = `zoom ${(viewer.scale * 100).toPrecision(3)} %  ·  level ${viewer.level}`;
}

function redraw() {
  if (!viewer.frame) viewer.frame = requestAnimationFrame(draw);
}

function resize() {
  const canvas = $("viewer");
  const width = Math.round(canvas.clientWidth * devicePixelRatio);
  const height = Math.round(canvas.clientHeight * devicePixelRatio);
  if (canvas.width !== width || canvas.height !== height) {
    canvas.width = width;
    canvas.height = height;
    if (viewer.image) redraw();
  }
}

function showJob(image) {
  const job = $("job");
  job.dataset.status = image.status;
  $("progress").max = Math.max(1, image.total);
  $("progress").value = image.status === "ready" ? $("progress").max : image.done;
  const texts = {
    queued: "waiting to restore",
    preparing: "reading an overview of the input",
    restoring: `restoring: ${image.done} of ${image.total || "?"} tiles`,
    ready: `restored (${image.width}×${image.height})`,
    failed: `restoration failed: ${image.error}`,
    stopped: "restoration stopped",
  };
  $("job-text").textContent = texts[image.status];
}

async function poll() {
  const images = await (await fetch("/api/images")).json();
  viewer.images = images;
  const current = images.find((i) => viewer.image && i.id === viewer.image.id);
  if (current) {
    const changed = current.status !== viewer.image.status;
    Object.assign(viewer.image, current);
    showJob(viewer.image);
    if (changed) {
      for (const [url, t] of viewer.tiles) if (!t.ok) viewer.tiles.delete(url); // refused before: ask again
      redraw();
    }
  }
  if (images.some((i) => ["queued", "preparing", "restoring"].includes(i.status))) setTimeout(poll, 500);
}

function choose(id) {
  viewer.image = { ...viewer.images.find((i) => i.id === id) };
  resize();
  fit();
  showJob(viewer.image);
  redraw();
}

async function setupLarge() {
  const images = await (await fetch("/api/images")).json();
  if (!images.length) return;
  viewer.images = images;
  $("large-section").hidden = false;
  for (const image of images) $("image").append(new Option(image.name, image.id));
  $("image").addEventListener("change", () => choose(Number($("image").value)));
  const canvas = $("viewer");
  new ResizeObserver(resize).observe(canvas);
  choose(images[0].id);
  let drag = null;
  canvas.addEventListener("pointerdown", (e) => {
    drag = { x: e.clientX, y: e.clientY };
    canvas.setPointerCapture(e.pointerId);
    canvas.classList.add("dragging");
  });
  canvas.addEventListener("pointermove", (e) => {
    if (!drag) return;
    viewer.cx -= ((e.clientX - drag.x) * devicePixelRatio) / viewer.scale;
    viewer.cy -= ((e.clientY - drag.y) * devicePixelRatio) / viewer.scale;
    drag = { x: e.clientX, y: e.clientY };
    redraw();
  });
  const stop = () => { drag = null; canvas.classList.remove("dragging"); };
  canvas.addEventListener("pointerup", stop);
  canvas.addEventListener("pointercancel", stop);
  canvas.addEventListener("wheel", (e) => {
    e.preventDefault();
    const box = canvas.getBoundingClientRect();
    zoomAt(Math.exp(-e.deltaY / 300), (e.clientX - box.left) * devicePixelRatio, (e.clientY - box.top) * devicePixelRatio);
  }, { passive: false });
  $("zoom-in").addEventListener("click", () => zoomAt(2, canvas.width / 2, canvas.height / 2));
  $("zoom-out").addEventListener("click", () => zoomAt(0.5, canvas.width / 2, canvas.height / 2));
  $("zoom-fit").addEventListener("click", () => { fit(); redraw(); });
  $("split").addEventListener("input", redraw);
  poll();
}

setupModels().catch((err) => setStatus(`cannot reach the server: ${err.message}`, true));
setupUpload();
setupLarge().catch((err) => { $("job-text").textContent = `cannot list images: ${err.message}`; });
