// The asuka serve page: load an image, paint the hole on a canvas over it, send both to
// POST /api/inpaint, show the PNG that comes back. No libraries, no external requests.
//
// The mask canvas has the image's own pixel size (the page only scales it for display), so
// the mask sent is exactly the image's size. Painted pixels are opaque on that canvas; on
// export, alpha >= 50% becomes white (hole) and the rest black -- the same 50% rule the
// server applies to mask files.
"use strict";

const $ = (id) => document.getElementById(id);
const UNDO_LIMIT = 30;
const PAINT = [255, 45, 85]; // the hole colour on the mask canvas (shown at reduced opacity)

const state = {
  info: null,
  imageBlob: null,     // the original file (sent as is, so the server decodes it, EXIF included)
  imageName: "image",
  width: 0,
  height: 0,
  tool: "brush",
  drawing: false,
  last: null,
  undo: [],
  resultBlob: null,
  resultUrl: null,
  busy: false,
};

const imageCanvas = $("image-canvas");
const maskCanvas = $("mask-canvas");
const maskCtx = maskCanvas.getContext("2d", { willReadFrequently: true });

// ------------------------------------------------------------------ status line
function setStatus(text, isError = false) {
  const el = $("status");
  el.textContent = text;
  el.classList.toggle("error", isError);
}

async function errorMessage(response) {
  try {
    const data = await response.json();
    if (data && data.error) return data.error;
  } catch (_) { /* not JSON */ }
  return `${response.status} ${response.statusText}`;
}

function formatBytes(n) {
  return n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(1)} MiB` : `${Math.ceil(n / 1024)} KiB`;
}

// ------------------------------------------------------------------ server info
async function loadInfo() {
  try {
    const response = await fetch("/api/info");
    if (!response.ok) throw new Error(await errorMessage(response));
    const info = await response.json();
    state.info = info;
    $("model-info").textContent = `model ${info.model} · ${info.device} · ${info.dtype}`;
    const steps = $("steps");
    steps.value = info.default_steps;
    steps.max = info.max_steps;
  } catch (err) {
    $("model-info").textContent = "server not reachable";
    setStatus(`Cannot get the server's info: ${err.message}`, true);
  }
}

// ------------------------------------------------------------------ image
function loadImage(blob, name) {
  if (state.info && blob.size > state.info.max_upload_bytes) {
    setStatus(`${name} is ${formatBytes(blob.size)}; the server accepts at most ` +
              `${formatBytes(state.info.max_upload_bytes)}.`, true);
    return;
  }
  const url = URL.createObjectURL(blob);
  const img = new Image();
  img.onload = () => {
    URL.revokeObjectURL(url);
    state.imageBlob = blob;
    state.imageName = name || "image";
    state.width = img.naturalWidth;
    state.height = img.naturalHeight;
    for (const canvas of [imageCanvas, maskCanvas]) {
      canvas.width = state.width;
      canvas.height = state.height;
    }
    imageCanvas.getContext("2d").drawImage(img, 0, 0);
    maskCtx.clearRect(0, 0, state.width, state.height);
    state.undo = [];
    $("stage").hidden = false;
    $("placeholder").hidden = true;
    setStatus(`${state.imageName}: ${state.width}×${state.height}. Paint the region to fill.`);
  };
  img.onerror = () => {
    URL.revokeObjectURL(url);
    setStatus(`This browser cannot display ${name}; convert it to PNG or JPEG first.`, true);
  };
  img.src = url;
}

function stem(name) {
  const dot = name.lastIndexOf(".");
  return dot > 0 ? name.slice(0, dot) : name;
}

// ------------------------------------------------------------------ painting
function brushScreenSize() {
  return Number($("brush-size").value);
}

function toCanvas(event) {
  const r = maskCanvas.getBoundingClientRect();
  return {
    x: (event.clientX - r.left) * maskCanvas.width / r.width,
    y: (event.clientY - r.top) * maskCanvas.height / r.height,
    scale: maskCanvas.width / r.width,  // image pixels per screen pixel
  };
}

function paint(from, to) {
  const radius = brushScreenSize() / 2 * to.scale;
  maskCtx.globalCompositeOperation = state.tool === "eraser" ? "destination-out" : "source-over";
  const colour = `rgb(${PAINT.join(",")})`;
  maskCtx.strokeStyle = colour;
  maskCtx.fillStyle = colour;
  maskCtx.lineCap = "round";
  maskCtx.lineJoin = "round";
  maskCtx.lineWidth = 2 * radius;
  if (from.x === to.x && from.y === to.y) {  // a click: a dot (a zero-length line draws nothing)
    maskCtx.beginPath();
    maskCtx.arc(to.x, to.y, radius, 0, 2 * Math.PI);
    maskCtx.fill();
  } else {
    maskCtx.beginPath();
    maskCtx.moveTo(from.x, from.y);
    maskCtx.lineTo(to.x, to.y);
    maskCtx.stroke();
  }
  maskCtx.globalCompositeOperation = "source-over";
}

function pushUndo() {
  if (!state.width) return;
  state.undo.push(maskCtx.getImageData(0, 0, state.width, state.height));
  if (state.undo.length > UNDO_LIMIT) state.undo.shift();
}

function undo() {
  const previous = state.undo.pop();
  if (previous) maskCtx.putImageData(previous, 0, 0);
}

function clearMask() {
  if (!state.width) return;
  pushUndo();
  maskCtx.clearRect(0, 0, state.width, state.height);
}

function moveCursor(event) {
  const cursor = $("cursor");
  const size = brushScreenSize();
  cursor.style.width = `${size}px`;
  cursor.style.height = `${size}px`;
  cursor.style.left = `${event.clientX - size / 2}px`;
  cursor.style.top = `${event.clientY - size / 2}px`;
  cursor.hidden = false;
}

maskCanvas.addEventListener("pointerdown", (event) => {
  if (!state.width || state.busy || event.button !== 0) return;
  event.preventDefault();
  maskCanvas.setPointerCapture(event.pointerId);
  pushUndo();
  state.drawing = true;
  state.last = toCanvas(event);
  paint(state.last, state.last);
});
maskCanvas.addEventListener("pointermove", (event) => {
  moveCursor(event);
  if (!state.drawing) return;
  const point = toCanvas(event);
  paint(state.last, point);
  state.last = point;
});
for (const type of ["pointerup", "pointercancel"]) {
  maskCanvas.addEventListener(type, () => { state.drawing = false; });
}
maskCanvas.addEventListener("pointerleave", () => { $("cursor").hidden = true; });

// The hole as the server reads masks: white (>= 50% painted) = hole, black = keep.
function exportMask() {
  const { width, height } = state;
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

// A mask file: the server reads it with the package's rule and resizes it to the image.
async function loadMaskFile(file) {
  if (!state.width) {
    setStatus("Load an image first, then its mask.", true);
    return;
  }
  const form = new FormData();
  form.append("mask", file, file.name);
  form.append("width", String(state.width));
  form.append("height", String(state.height));
  try {
    const response = await fetch("/api/mask", { method: "POST", body: form });
    if (!response.ok) throw new Error(await errorMessage(response));
    const bitmap = await createImageBitmap(await response.blob());
    const scratch = document.createElement("canvas");
    scratch.width = state.width;
    scratch.height = state.height;
    const ctx = scratch.getContext("2d");
    ctx.drawImage(bitmap, 0, 0);
    const binary = ctx.getImageData(0, 0, state.width, state.height).data;
    const layer = new ImageData(state.width, state.height);
    for (let i = 0; i < binary.length; i += 4) {
      if (binary[i] >= 128) {
        layer.data.set([...PAINT, 255], i);
      }
    }
    pushUndo();
    maskCtx.putImageData(layer, 0, 0);
    const note = response.headers.get("X-Asuka-Note");
    setStatus(`Mask ${file.name} loaded${note ? ` (${note})` : ""}.`);
  } catch (err) {
    setStatus(`Cannot use ${file.name} as a mask: ${err.message}`, true);
  }
}

// ------------------------------------------------------------------ inpainting
function setBusy(busy) {
  state.busy = busy;
  $("run").disabled = busy;
  $("run").textContent = busy ? "Inpainting…" : "Inpaint";
  $("progress").hidden = !busy;
}

async function pollProgress() {
  while (state.busy) {
    try {
      const response = await fetch("/api/progress");
      if (response.ok) {
        const p = await response.json();
        if (state.busy && p.busy && p.steps) {
          $("progress").max = p.steps;
          $("progress").value = p.step;
          setStatus(`Step ${p.step} of ${p.steps}${p.waiting ? ` · ${p.waiting} waiting` : ""}`);
        }
      }
    } catch (_) { /* the main request reports connection problems */ }
    await new Promise((resolve) => setTimeout(resolve, 400));
  }
}

async function inpaint() {
  if (state.busy) return;
  if (!state.imageBlob) {
    setStatus("Load an image first.", true);
    return;
  }
  const { blob: mask, holes } = await exportMask();
  if (!holes) {
    setStatus("Paint the region to fill first (or load a mask file).", true);
    return;
  }
  const randomSeed = $("random-seed").checked;
  const form = new FormData();
  form.append("image", state.imageBlob, state.imageName);
  form.append("mask", mask, "mask.png");
  form.append("steps", $("steps").value);
  if (!randomSeed) form.append("seed", $("seed").value);
  form.append("composite", $("composite").checked ? "true" : "false");
  form.append("feather", $("feather").value || "0");
  form.append("full_image", $("full-image").checked ? "true" : "false");

  setBusy(true);
  setStatus("Sending…");
  $("progress").removeAttribute("value");  // indeterminate until the first step
  pollProgress();
  try {
    const response = await fetch("/api/inpaint", { method: "POST", body: form });
    if (!response.ok) throw new Error(await errorMessage(response));
    const blob = await response.blob();
    showResult(blob);
    const seed = response.headers.get("X-Asuka-Seed");
    const seconds = Number(response.headers.get("X-Asuka-Seconds") || 0).toFixed(1);
    if (randomSeed) $("seed").value = seed;
    const warning = response.headers.get("X-Asuka-Warning");
    setStatus(`Done in ${seconds} s · seed ${seed} · ${response.headers.get("X-Asuka-Steps")} steps` +
              (warning ? ` · ${warning}` : ""));
  } catch (err) {
    const reason = err instanceof TypeError ? `cannot reach the server (${err.message})` : err.message;
    setStatus(reason, true);
  } finally {
    setBusy(false);
  }
}

function showResult(blob) {
  if (state.resultUrl) URL.revokeObjectURL(state.resultUrl);
  state.resultBlob = blob;
  state.resultUrl = URL.createObjectURL(blob);
  const img = $("result");
  img.src = state.resultUrl;
  img.hidden = false;
  $("result-placeholder").hidden = true;
  const link = $("download");
  link.href = state.resultUrl;
  link.download = `${stem(state.imageName)}_inpainted.png`;
  link.hidden = false;
  $("use-result").hidden = false;
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
$("brush-size").addEventListener("input", () => { $("brush-size-value").textContent = $("brush-size").value; });
$("undo").addEventListener("click", undo);
$("clear").addEventListener("click", clearMask);
$("run").addEventListener("click", inpaint);
$("random-seed").addEventListener("change", () => { $("seed").disabled = $("random-seed").checked; });
$("use-result").addEventListener("click", () => {
  if (state.resultBlob) loadImage(state.resultBlob, `${stem(state.imageName)}_inpainted.png`);
});

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
  else setStatus("Drop an image file (PNG, JPEG, WebP…).", true);
});
document.addEventListener("paste", (event) => {
  const file = firstImageFile(event.clipboardData && event.clipboardData.files);
  if (file) loadImage(file, file.name || "pasted.png");
});
document.addEventListener("keydown", (event) => {
  if (event.target instanceof HTMLInputElement && event.target.type !== "range") return;
  const size = $("brush-size");
  if ((event.ctrlKey || event.metaKey) && event.key === "z") {
    event.preventDefault();
    undo();
  } else if (event.key === "[" || event.key === "]") {
    size.value = Number(size.value) + (event.key === "]" ? 5 : -5);
    size.dispatchEvent(new Event("input"));
  }
});

loadInfo();
