// The asuka serve page: load an image, paint the hole, queue a job (POST /api/jobs), follow
// its progress (GET /api/jobs/ID), show the PNG it made. No libraries, no external requests.
//
// Painting happens on a view of at most MAX_VIEW_PIXELS (a 50 MP photo is shown downscaled);
// the mask sent has the view's size and the server scales it up (resize_mask, nearest).
// Undo/redo keep the list of strokes (points), not pixel snapshots: the mask is redrawn from
// them. Every result remembers the image it was made from.
"use strict";

const $ = (id) => document.getElementById(id);
const MAX_VIEW_PIXELS = 4_000_000;
const HISTORY_LIMIT = 12;
const PAINT = [255, 45, 85]; // the hole colour on the mask canvas (shown at reduced opacity)
const PAINT_CSS = `rgb(${PAINT.join(",")})`;
const POLL_MS = 250;

// The access token (asuka serve beyond loopback): given once as #token=... in the URL, kept
// for this tab only, sent as a bearer token, never put in a URL the server sees.
const TOKEN = (() => {
  const match = location.hash.match(/token=([^&]+)/);
  if (match) {
    sessionStorage.setItem("asuka-token", decodeURIComponent(match[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem("asuka-token");
})();

function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  if (TOKEN) headers.set("Authorization", `Bearer ${TOKEN}`);
  return fetch(path, { ...options, headers });
}

let nextSourceId = 1;
const state = {
  info: null,
  source: null,      // {id, blob, name, width, height, url}: the image being edited
  viewWidth: 0,      // the canvases' size (the image, downscaled to MAX_VIEW_PIXELS)
  viewHeight: 0,
  tool: "brush",
  strokes: [],       // {tool, width, points: [x, y, ...]} or {tool: "mask", bitmap} (view pixels)
  redo: [],
  current: null,     // the stroke being drawn
  busy: false,
  job: null,         // {id, source}
  history: [],       // {source, blob, url, seed, steps, seconds, thumb}
  shown: null,       // the history entry on display
  zoom: 1,
  panX: 0,
  panY: 0,
  fitWidth: 0,
  fitHeight: 0,
  pointers: new Map(),
  pinch: null,
  panning: null,
  spaceDown: false,
};

const imageCanvas = $("image-canvas");
const maskCanvas = $("mask-canvas");
const maskCtx = maskCanvas.getContext("2d");
const viewport = $("viewport");
const stage = $("stage");

// ------------------------------------------------------------------ messages where the user looks
function setStatus(text, isError = false) {
  const el = $("status");
  el.textContent = text;
  el.classList.toggle("error", isError);
}

// Problems with the picture or the mask are shown over the picture; the rest by the button.
function inputMessage(text) {
  const el = $("input-status");
  el.textContent = text || "";
  el.hidden = !text;
}

function showError(message, field) {
  if (field === "image" || field === "mask") inputMessage(message);
  setStatus(message, true);
}

async function apiError(response) {
  let message = `${response.status} ${response.statusText}`;
  let field = null;
  try {
    const data = await response.json();
    if (data && data.error) ({ error: message, field } = data);
  } catch (_) { /* not JSON */ }
  if (response.status === 401) {
    message = "This server needs its access token: open the URL that asuka serve printed (with #token=…).";
  }
  const error = new Error(message);
  error.field = field;
  return error;
}

function formatBytes(n) {
  return n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(1)} MiB` : `${Math.ceil(n / 1024)} KiB`;
}

function stem(name) {
  const dot = name.lastIndexOf(".");
  return dot > 0 ? name.slice(0, dot) : name;
}

// ------------------------------------------------------------------ server info
async function loadInfo() {
  try {
    const response = await api("/api/info");
    if (!response.ok) throw await apiError(response);
    const info = await response.json();
    state.info = info;
    $("model-info").textContent = `model ${info.model} · ${info.device} · ${info.dtype}`;
    $("steps").value = info.default_steps;
    $("steps").max = info.max_steps;
    $("poisson-blend").checked = info.poisson_blend !== null && info.poisson_blend !== undefined;
  } catch (err) {
    $("model-info").textContent = "server not reachable";
    setStatus(`Cannot get the server's info: ${err.message}`, true);
  }
}

// ------------------------------------------------------------------ image
function loadImage(blob, name) {
  const info = state.info;
  if (info && blob.size > info.max_upload_bytes) {
    inputMessage(`${name} is ${formatBytes(blob.size)}; the server accepts at most ${formatBytes(info.max_upload_bytes)}.`);
    return;
  }
  const url = URL.createObjectURL(blob);
  const img = new Image();
  img.onload = () => {
    const width = img.naturalWidth;
    const height = img.naturalHeight;
    if (info && width * height > info.max_pixels) {
      URL.revokeObjectURL(url);
      inputMessage(`${name} is ${width}×${height} = ${(width * height / 1e6).toFixed(1)} MP; the server accepts ` +
                   `at most ${(info.max_pixels / 1e6).toFixed(1)} MP.`);
      return;
    }
    const scale = Math.min(1, Math.sqrt(MAX_VIEW_PIXELS / (width * height)));
    state.viewWidth = Math.max(1, Math.round(width * scale));
    state.viewHeight = Math.max(1, Math.round(height * scale));
    for (const canvas of [imageCanvas, maskCanvas]) {
      canvas.width = state.viewWidth;
      canvas.height = state.viewHeight;
    }
    const ctx = imageCanvas.getContext("2d");
    ctx.imageSmoothingQuality = "high";
    ctx.drawImage(img, 0, 0, state.viewWidth, state.viewHeight);
    img.src = "";  // the full-size decode is not kept
    releaseSource(state.source);
    state.source = { id: nextSourceId++, blob, name: name || "image", width, height, url };
    state.strokes = [];
    state.redo = [];
    redraw();
    stage.hidden = false;
    $("placeholder").hidden = true;
    fitView();
    showEntry(null);
    inputMessage("");
    const shrunk = scale < 1 ? ` (painting on a ${state.viewWidth}×${state.viewHeight} view)` : "";
    $("input-caption").textContent = `— ${state.source.name}, ${width}×${height}${shrunk}`;
    setStatus("Paint the region to fill, then Inpaint.");
  };
  img.onerror = () => {
    URL.revokeObjectURL(url);
    inputMessage(`This browser cannot display ${name}; convert it to PNG or JPEG first.`);
  };
  img.src = url;
}

// A source's object URL lives while the editor or a history entry uses it.
function releaseSource(source) {
  if (!source || source === state.source) return;
  if (state.history.some((entry) => entry.source === source)) return;
  URL.revokeObjectURL(source.url);
}

// ------------------------------------------------------------------ strokes
function toView(event) {
  const r = maskCanvas.getBoundingClientRect();
  return {
    x: (event.clientX - r.left) * maskCanvas.width / r.width,
    y: (event.clientY - r.top) * maskCanvas.height / r.height,
  };
}

function viewPixelsPerScreenPixel() {
  const r = maskCanvas.getBoundingClientRect();
  return r.width ? maskCanvas.width / r.width : 1;
}

function drawSegment(stroke, from, to) {
  maskCtx.globalCompositeOperation = stroke.tool === "eraser" ? "destination-out" : "source-over";
  maskCtx.strokeStyle = PAINT_CSS;
  maskCtx.fillStyle = PAINT_CSS;
  maskCtx.lineCap = "round";
  maskCtx.lineJoin = "round";
  maskCtx.lineWidth = stroke.width;
  maskCtx.beginPath();
  if (from.x === to.x && from.y === to.y) {  // a click: a dot
    maskCtx.arc(to.x, to.y, stroke.width / 2, 0, 2 * Math.PI);
    maskCtx.fill();
  } else {
    maskCtx.moveTo(from.x, from.y);
    maskCtx.lineTo(to.x, to.y);
    maskCtx.stroke();
  }
  maskCtx.globalCompositeOperation = "source-over";
}

function drawStroke(stroke) {
  if (stroke.tool === "mask") {
    maskCtx.drawImage(stroke.bitmap, 0, 0);
    return;
  }
  const p = stroke.points;
  drawSegment(stroke, { x: p[0], y: p[1] }, { x: p[0], y: p[1] });
  for (let i = 2; i < p.length; i += 2) {
    drawSegment(stroke, { x: p[i - 2], y: p[i - 1] }, { x: p[i], y: p[i + 1] });
  }
}

function redraw() {
  maskCtx.clearRect(0, 0, maskCanvas.width, maskCanvas.height);
  for (const stroke of state.strokes) drawStroke(stroke);
  updateEditButtons();
}

function updateEditButtons() {
  $("undo").disabled = !state.strokes.length;
  $("redo").disabled = !state.redo.length;
  $("clear").disabled = !state.strokes.length;
  maskCanvas.dataset.strokes = String(state.strokes.length);
}

function commitStroke(stroke) {
  state.strokes.push(stroke);
  state.redo = [];
  updateEditButtons();
}

function undo() {
  if (!state.strokes.length) return;
  state.redo.push(state.strokes.pop());
  redraw();
}

function redo() {
  if (!state.redo.length) return;
  state.strokes.push(state.redo.pop());
  redraw();
}

function clearMask() {
  if (!state.strokes.length) return;
  // Clearing is a stroke too (an eraser over everything), so it can be undone.
  const w = maskCanvas.width;
  const h = maskCanvas.height;
  commitStroke({ tool: "eraser", width: 2 * (w + h), points: [w / 2, h / 2] });
  redraw();
}

// ------------------------------------------------------------------ zoom and pan
function fitView() {
  const box = viewport.getBoundingClientRect();
  const scale = Math.min(box.width / state.viewWidth, box.height / state.viewHeight, 1);
  state.fitWidth = Math.max(1, Math.floor(state.viewWidth * scale));
  state.fitHeight = Math.max(1, Math.floor(state.viewHeight * scale));
  stage.style.width = `${state.fitWidth}px`;
  stage.style.height = `${state.fitHeight}px`;
  state.zoom = 1;
  state.panX = (box.width - state.fitWidth) / 2;
  state.panY = (box.height - state.fitHeight) / 2;
  applyTransform();
}

function applyTransform() {
  stage.style.transform = `translate(${state.panX}px, ${state.panY}px) scale(${state.zoom})`;
  $("zoom-value").textContent = `${Math.round(state.zoom * 100)}%`;
}

function zoomAt(factor, cx, cy) {  // cx, cy: viewport coordinates that stay put
  const zoom = Math.min(32, Math.max(0.25, state.zoom * factor));
  const k = zoom / state.zoom;
  state.panX = cx - (cx - state.panX) * k;
  state.panY = cy - (cy - state.panY) * k;
  state.zoom = zoom;
  applyTransform();
}

function zoomCentre(factor) {
  const box = viewport.getBoundingClientRect();
  zoomAt(factor, box.width / 2, box.height / 2);
}

function viewportPoint(event) {
  const box = viewport.getBoundingClientRect();
  return { x: event.clientX - box.left, y: event.clientY - box.top };
}

viewport.addEventListener("wheel", (event) => {
  if (!state.source) return;
  event.preventDefault();
  const p = viewportPoint(event);
  zoomAt(Math.exp(-event.deltaY * (event.deltaMode === 1 ? 0.05 : 0.0015)), p.x, p.y);
}, { passive: false });

// ------------------------------------------------------------------ pointers: paint, pan, pinch
function cursorSize() {
  return Number($("brush-size").value);
}

function moveCursor(event) {
  const cursor = $("cursor");
  const size = cursorSize();
  cursor.style.width = `${size}px`;
  cursor.style.height = `${size}px`;
  cursor.style.left = `${event.clientX - size / 2}px`;
  cursor.style.top = `${event.clientY - size / 2}px`;
  cursor.hidden = state.panning !== null || state.pinch !== null;
}

function startPinch() {
  const [a, b] = [...state.pointers.values()];
  if (state.current) {  // the first finger's stroke was the start of a pinch: drop it
    state.current = null;
    redraw();
  }
  state.pinch = { distance: Math.hypot(a.x - b.x, a.y - b.y), x: (a.x + b.x) / 2, y: (a.y + b.y) / 2 };
}

maskCanvas.addEventListener("pointerdown", (event) => {
  if (!state.source) return;
  event.preventDefault();
  maskCanvas.setPointerCapture(event.pointerId);
  state.pointers.set(event.pointerId, viewportPoint(event));
  if (state.pointers.size === 2) {
    startPinch();
    return;
  }
  if (event.button === 1 || state.spaceDown) {
    state.panning = { ...viewportPoint(event), panX: state.panX, panY: state.panY };
    return;
  }
  if (event.button !== 0 || state.pointers.size > 1) return;
  const p = toView(event);
  state.current = { tool: state.tool, width: cursorSize() * viewPixelsPerScreenPixel(), points: [p.x, p.y] };
  drawSegment(state.current, p, p);
});

maskCanvas.addEventListener("pointermove", (event) => {
  moveCursor(event);
  if (state.pointers.has(event.pointerId)) state.pointers.set(event.pointerId, viewportPoint(event));
  if (state.pinch && state.pointers.size === 2) {
    const [a, b] = [...state.pointers.values()];
    const distance = Math.hypot(a.x - b.x, a.y - b.y);
    const x = (a.x + b.x) / 2;
    const y = (a.y + b.y) / 2;
    state.panX += x - state.pinch.x;
    state.panY += y - state.pinch.y;
    zoomAt(distance / Math.max(1, state.pinch.distance), x, y);
    state.pinch = { distance, x, y };
    return;
  }
  if (state.panning) {
    const p = viewportPoint(event);
    state.panX = state.panning.panX + p.x - state.panning.x;
    state.panY = state.panning.panY + p.y - state.panning.y;
    applyTransform();
    return;
  }
  if (!state.current) return;
  const points = state.current.points;
  const from = { x: points[points.length - 2], y: points[points.length - 1] };
  const to = toView(event);
  points.push(to.x, to.y);
  drawSegment(state.current, from, to);
});

function endPointer(event) {
  state.pointers.delete(event.pointerId);
  if (state.pointers.size < 2) state.pinch = null;
  if (state.pointers.size === 0) state.panning = null;
  if (state.current) {
    commitStroke(state.current);
    state.current = null;
  }
}
maskCanvas.addEventListener("pointerup", endPointer);
maskCanvas.addEventListener("pointercancel", endPointer);
maskCanvas.addEventListener("pointerleave", () => { $("cursor").hidden = true; });
maskCanvas.addEventListener("contextmenu", (event) => event.preventDefault());

// ------------------------------------------------------------------ the mask sent
// The hole as the server reads masks: white (>= 50% painted) = hole, black = keep; at the
// view's size (the server resizes it to the image's).
function exportMask() {
  const width = maskCanvas.width;
  const height = maskCanvas.height;
  const painted = maskCtx.getImageData(0, 0, width, height).data;
  const out = new ImageData(width, height);
  let holes = 0;
  for (let i = 0; i < width * height; i++) {
    const v = painted[4 * i + 3] >= 128 ? 255 : 0;
    holes += v ? 1 : 0;
    out.data[4 * i] = out.data[4 * i + 1] = out.data[4 * i + 2] = v;
    out.data[4 * i + 3] = 255;
  }
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  canvas.getContext("2d").putImageData(out, 0, 0);
  return new Promise((resolve) => canvas.toBlob((blob) => resolve({ blob, holes }), "image/png"));
}

// A mask file: the server reads it with the package's rule and resizes it to the view.
async function loadMaskFile(file) {
  if (!state.source) {
    inputMessage("Load an image first, then its mask.");
    return;
  }
  const form = new FormData();
  form.append("mask", file, file.name);
  form.append("width", String(maskCanvas.width));
  form.append("height", String(maskCanvas.height));
  try {
    const response = await api("/api/mask", { method: "POST", body: form });
    if (!response.ok) throw await apiError(response);
    const binary = await createImageBitmap(await response.blob());
    const scratch = document.createElement("canvas");
    scratch.width = maskCanvas.width;
    scratch.height = maskCanvas.height;
    const ctx = scratch.getContext("2d");
    ctx.drawImage(binary, 0, 0);
    const pixels = ctx.getImageData(0, 0, scratch.width, scratch.height);
    for (let i = 0; i < pixels.data.length; i += 4) {
      const hole = pixels.data[i] >= 128;
      pixels.data.set(hole ? [...PAINT, 255] : [0, 0, 0, 0], i);
    }
    ctx.putImageData(pixels, 0, 0);
    commitStroke({ tool: "mask", bitmap: await createImageBitmap(scratch) });
    redraw();
    inputMessage("");
    const note = response.headers.get("X-Asuka-Note");
    setStatus(`Mask ${file.name} loaded${note ? ` (${note})` : ""}.`);
  } catch (err) {
    inputMessage(`Cannot use ${file.name} as a mask: ${err.message}`);
  }
}

// ------------------------------------------------------------------ jobs
function setBusy(busy) {
  state.busy = busy;
  $("run").disabled = busy;
  $("run").textContent = busy ? "Inpainting…" : "Inpaint";
  $("cancel").hidden = !busy;
  $("progress").hidden = !busy;
}

async function inpaint() {
  if (state.busy) return;  // one job at a time from this page (set before any await)
  const source = state.source;
  if (!source) {
    inputMessage("Load an image first.");
    return;
  }
  setBusy(true);
  try {
    const { blob: mask, holes } = await exportMask();
    if (!holes) {
      inputMessage("Paint the region to fill first (or load a mask file).");
      setStatus("Nothing to fill.", true);
      return;
    }
    const randomSeed = $("random-seed").checked;
    const form = new FormData();
    form.append("image", source.blob, source.name);
    form.append("mask", mask, "mask.png");
    form.append("steps", $("steps").value);
    if (!randomSeed) form.append("seed", $("seed").value);
    form.append("composite", $("composite").checked ? "true" : "false");
    form.append("feather", $("feather").value || "0");
    form.append("poisson_blend", $("poisson-blend").checked ? "true" : "false");
    form.append("full_image", $("full-image").checked ? "true" : "false");
    if (maskCanvas.width !== source.width || maskCanvas.height !== source.height) {
      form.append("resize_mask", "true");
    }
    inputMessage("");
    setStatus("Sending…");
    $("progress").removeAttribute("value");  // indeterminate until the first step
    const response = await api("/api/jobs", { method: "POST", body: form });
    if (!response.ok) throw await apiError(response);
    const job = await response.json();
    state.job = { id: job.id, source };
    const final = await follow(job.id);
    if (final.state === "cancelled") {
      setStatus(`Cancelled${final.error && !final.error.includes("client") ? ` (${final.error})` : ""}.`);
      return;
    }
    if (final.state === "failed") {
      const error = new Error(final.error || "the job failed");
      throw error;
    }
    const result = await api(`/api/jobs/${job.id}/result`);
    if (!result.ok) throw await apiError(result);
    const entry = await addHistory(source, await result.blob(), final);
    if (randomSeed) $("seed").value = final.seed;
    const note = final.warning ? ` · ${final.warning}` : "";
    if (state.source === source) {
      showEntry(entry);
      setStatus(`Done in ${final.seconds.toFixed(1)} s · seed ${final.seed} · ${final.steps} steps${note}`);
    } else {  // the user moved on to another image: keep the result with the image it belongs to
      setStatus(`The result for ${source.name} is in the history (a new image was loaded meanwhile).`);
    }
  } catch (err) {
    const reason = err instanceof TypeError ? `cannot reach the server (${err.message})` : err.message;
    showError(reason, err.field);
  } finally {
    state.job = null;
    setBusy(false);
  }
}

// Poll this job (and only this job) until it ends; the polling also tells the server that
// somebody still waits for it.
async function follow(id) {
  for (;;) {
    const response = await api(`/api/jobs/${id}`);
    if (!response.ok) throw await apiError(response);
    const status = await response.json();
    if (["done", "failed", "cancelled"].includes(status.state)) return status;
    if (status.state === "queued") {
      setStatus(status.position ? `Waiting: ${status.position} job(s) ahead` : "Starting…");
    } else {
      $("progress").max = status.steps;
      $("progress").value = status.step;
      setStatus(`Step ${status.step} of ${status.steps}`);
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

async function cancelJob() {
  if (!state.job) return;
  setStatus("Cancelling…");
  try {
    const response = await api(`/api/jobs/${state.job.id}`, { method: "DELETE" });
    if (!response.ok) throw await apiError(response);
  } catch (err) {
    setStatus(`Cannot cancel: ${err.message}`, true);
  }
}

// ------------------------------------------------------------------ results and history
async function thumbnail(blob) {
  const bitmap = await createImageBitmap(blob, { resizeHeight: 64, resizeQuality: "medium" });
  const canvas = document.createElement("canvas");
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  canvas.getContext("2d").drawImage(bitmap, 0, 0);
  bitmap.close();
  return canvas;
}

async function addHistory(source, blob, status) {
  const entry = { source, blob, url: URL.createObjectURL(blob), seed: status.seed, steps: status.steps,
                  seconds: status.seconds };
  try {
    entry.thumb = await thumbnail(blob);
  } catch (_) {
    entry.thumb = document.createElement("canvas");
  }
  state.history.push(entry);
  while (state.history.length > HISTORY_LIMIT) {
    const old = state.history.shift();
    URL.revokeObjectURL(old.url);
    if (state.shown === old) showEntry(null);
    releaseSource(old.source);
  }
  renderHistory();
  return entry;
}

function renderHistory() {
  const box = $("history");
  box.replaceChildren();
  for (const entry of state.history) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "thumb" + (entry === state.shown ? " selected" : "");
    button.title = `${entry.source.name} · seed ${entry.seed} · ${entry.steps} steps`;
    button.append(entry.thumb);
    button.addEventListener("click", () => showEntry(entry));
    box.append(button);
  }
}

function showEntry(entry) {
  state.shown = entry;
  const img = $("result");
  const link = $("download");
  for (const id of ["download", "compare", "use-result"]) $(id).hidden = !entry;
  img.hidden = !entry;
  $("result-placeholder").hidden = !!entry;
  if (entry) {
    img.src = entry.url;
    link.href = entry.url;
    link.download = `${stem(entry.source.name)}_inpainted_seed${entry.seed}.png`;
    const other = entry.source !== state.source ? " (an earlier image)" : "";
    $("result-caption").textContent = `— ${entry.source.name}${other}, seed ${entry.seed}, ${entry.steps} steps`;
  } else {
    img.removeAttribute("src");
    link.removeAttribute("href");
    $("result-caption").textContent = "";
    $("result-placeholder").textContent = state.history.length
      ? "No result for this image yet (earlier results below)" : "The result appears here";
  }
  renderHistory();
}

function compare(on) {
  const entry = state.shown;
  if (!entry) return;
  $("result").src = on ? entry.source.url : entry.url;
  $("compare").classList.toggle("active", on);
}

// ------------------------------------------------------------------ wiring
function firstImageFile(files) {
  for (const file of files || []) {
    if (file.type.startsWith("image/")) return file;
  }
  return null;
}

$("image-file").addEventListener("change", (event) => {
  const file = event.target.files[0];
  if (file) loadImage(file, file.name);
  event.target.value = "";  // choosing the same file again still fires "change"
});
$("mask-file").addEventListener("change", (event) => {
  const file = event.target.files[0];
  if (file) loadMaskFile(file);
  event.target.value = "";
});
for (const radio of document.querySelectorAll("input[name=tool]")) {
  radio.addEventListener("change", () => { state.tool = radio.value; });
}
function setTool(tool) {
  state.tool = tool;
  document.querySelector(`input[name=tool][value=${tool}]`).checked = true;
}
$("brush-size").addEventListener("input", () => { $("brush-size-value").textContent = $("brush-size").value; });
$("undo").addEventListener("click", undo);
$("redo").addEventListener("click", redo);
$("clear").addEventListener("click", clearMask);
$("zoom-in").addEventListener("click", () => zoomCentre(1.25));
$("zoom-out").addEventListener("click", () => zoomCentre(0.8));
$("zoom-fit").addEventListener("click", () => { if (state.source) fitView(); });
$("run").addEventListener("click", inpaint);
$("cancel").addEventListener("click", cancelJob);
$("random-seed").addEventListener("change", () => { $("seed").disabled = $("random-seed").checked; });
$("use-result").addEventListener("click", () => {
  const entry = state.shown;
  if (entry) loadImage(entry.blob, `${stem(entry.source.name)}_inpainted.png`);
});
const compareButton = $("compare");
compareButton.addEventListener("pointerdown", () => compare(true));
for (const type of ["pointerup", "pointerleave", "pointercancel"]) {
  compareButton.addEventListener(type, () => compare(false));
}

document.addEventListener("dragover", (event) => {
  event.preventDefault();
  document.body.classList.add("dragging");
});
document.addEventListener("dragleave", (event) => {
  if (!event.relatedTarget) document.body.classList.remove("dragging");
});
document.addEventListener("drop", (event) => {
  event.preventDefault();
  document.body.classList.remove("dragging");
  const file = firstImageFile(event.dataTransfer.files);
  if (file) loadImage(file, file.name);
  else inputMessage("Drop an image file (PNG, JPEG, WebP…).");
});
document.addEventListener("paste", (event) => {
  const file = firstImageFile(event.clipboardData && event.clipboardData.files);
  if (file) loadImage(file, file.name || "pasted.png");
});

document.addEventListener("keydown", (event) => {
  const target = event.target;
  if ((target instanceof HTMLInputElement && target.type !== "range" && target.type !== "radio" &&
       target.type !== "checkbox") || target instanceof HTMLTextAreaElement) return;
  const key = event.key;
  const size = $("brush-size");
  const mod = event.ctrlKey || event.metaKey;
  if (mod && key.toLowerCase() === "z") {
    event.preventDefault();
    if (event.shiftKey) redo(); else undo();
  } else if (mod && key.toLowerCase() === "y") {
    event.preventDefault();
    redo();
  } else if (mod) {
    return;
  } else if (key === "[" || key === "]") {
    size.value = Number(size.value) + (key === "]" ? 5 : -5);
    size.dispatchEvent(new Event("input"));
  } else if (key === "+" || key === "=") {
    zoomCentre(1.25);
  } else if (key === "-") {
    zoomCentre(0.8);
  } else if (key === "0") {
    if (state.source) fitView();
  } else if (key.startsWith("Arrow") && state.source) {
    event.preventDefault();
    const step = 60;
    state.panX += key === "ArrowLeft" ? step : key === "ArrowRight" ? -step : 0;
    state.panY += key === "ArrowUp" ? step : key === "ArrowDown" ? -step : 0;
    applyTransform();
  } else if (key === "b" || key === "e") {
    setTool(key === "b" ? "brush" : "eraser");
  } else if (key === "c" && !event.repeat) {
    compare(true);
  } else if (key === " ") {
    state.spaceDown = true;
    if (target === document.body) event.preventDefault();
  } else if (key === "Escape") {
    cancelJob();
  }
});
document.addEventListener("keyup", (event) => {
  if (event.key === "c") compare(false);
  if (event.key === " ") state.spaceDown = false;
});
window.addEventListener("resize", () => { if (state.source) fitView(); });
// A closed or reloaded page cancels its job (the server also drops jobs nobody polls).
window.addEventListener("pagehide", () => {
  if (state.job) {
    const headers = TOKEN ? { Authorization: `Bearer ${TOKEN}` } : {};
    fetch(`/api/jobs/${state.job.id}`, { method: "DELETE", keepalive: true, headers });
  }
});

loadInfo();
