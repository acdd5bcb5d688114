// The detector web app: an exported detector (ONNX graph that ends with NMS) run by
// onnxruntime-web on the camera or on image/video files, entirely in the page.
//
// Everything the page knows about the model comes from two files written by
// `python export.py checkpoint=... format=web`: detector-web.json (file names, colours,
// runtime files) and the model's sidecar JSON (input size, classes, outputs).
//
// For tests and benchmarks the page reports its state on window.detectorWeb (see `state`)
// and on <body data-state="loading|ready|running|error">. URL parameters:
//   backend=auto|wasm|webgpu  threads=<n>  threshold=<0..1>  camera=user|environment

import { preprocess, valueMapping } from './preprocess.mjs';

const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);
const view = $('view');
const overlay = $('overlay');
const video = $('video');
const viewCtx = view.getContext('2d');
// Frames are drawn and read here first; the view shows a frame together with its boxes, so
// the picture on the page is always the one the reported detections belong to.
const work = document.createElement('canvas');
const workCtx = work.getContext('2d', { willReadFrequently: true });
const overlayCtx = overlay.getContext('2d');

const state = {
  state: 'loading',   // loading | ready | running | error
  error: null,        // the message shown on the page, if any
  model: null,        // name, input [H, W], classes
  backend: null,      // 'wasm' | 'webgpu'
  threads: 0,
  crossOriginIsolated: self.crossOriginIsolated === true,
  ortVersion: null,
  frames: 0,          // frames detected since the page loaded
  errors: 0,          // errors shown since the page loaded
  last: null,         // { source, width, height, detections: [{label, name, score, box}], timings }
};
window.detectorWeb = state;

let config = null;    // detector-web.json
let sidecar = null;
let ort = null;
let session = null;
let threshold = clampThreshold(parseFloat(params.get('threshold') ?? 'NaN'));
const enabled = new Map(); // label -> shown
let lastRaw = null;    // raw graph detections of the current still image (re-filtered on changes)
let runToken = 0;      // bumps when the source changes: stops the frame loop
let stream = null;
let inputTensorBuffer = null;
let inputMapping = null; // the sidecar's value range as (scale, offset)
let inputBGR = false;

// ---------------------------------------------------------------------------------- messages
function setState(s) {
  state.state = s;
  document.body.dataset.state = s;
}

function showMessage(text, kind = 'error') {
  const box = $('message');
  box.textContent = text;
  box.className = kind;
  box.hidden = false;
  if (kind === 'error') {
    state.error = text;
    state.errors += 1;
    setState('error');
    paintMessageOnCanvas(text);
  }
}

function clearMessage() {
  $('message').hidden = true;
  state.error = null;
  if (state.state === 'error' && session) setState('ready'); // a new source starts clean
}

// The canvas never stays blank: an error is written on it too.
function paintMessageOnCanvas(text) {
  overlay.width = view.width;
  overlay.height = view.height;
  overlayCtx.clearRect(0, 0, overlay.width, overlay.height);
  viewCtx.fillStyle = '#3a1c1c';
  viewCtx.fillRect(0, 0, view.width, view.height);
  viewCtx.fillStyle = '#ffd7d7';
  const size = Math.max(14, Math.round(view.width / 32));
  viewCtx.font = `600 ${size}px system-ui, sans-serif`;
  const words = text.split(/\s+/);
  let line = '';
  let y = size * 2;
  for (const word of words) {
    const next = line ? `${line} ${word}` : word;
    if (viewCtx.measureText(next).width > view.width - 2 * size && line) {
      viewCtx.fillText(line, size, y);
      y += size * 1.4;
      line = word;
    } else {
      line = next;
    }
  }
  if (line) viewCtx.fillText(line, size, y);
}

function clampThreshold(v) {
  return Number.isFinite(v) ? Math.min(0.99, Math.max(0.0, v)) : NaN;
}

// ---------------------------------------------------------------------------------- loading
const REEXPORT = 'Export the folder again with: python export.py checkpoint=<checkpoint> format=web';

async function fetchOk(url, what) {
  let response;
  try {
    response = await fetch(url, { cache: 'no-cache' });
  } catch (err) {
    throw new Error(`Cannot load ${what} (${url}): ${err.message}. ` +
      'Open the page through `python -m detector.web serve <folder>`, not as a file.');
  }
  if (!response.ok) {
    throw new Error(`The model folder is incomplete: ${what} "${url}" is missing ` +
      `(HTTP ${response.status}). ${REEXPORT}`);
  }
  return response;
}

async function fetchJson(url, what) {
  const response = await fetchOk(url, what);
  try {
    return await response.json();
  } catch (err) {
    throw new Error(`${what} "${url}" is not valid JSON (${err.message}). ${REEXPORT}`);
  }
}

async function checkRuntimeFiles(files) {
  const missing = [];
  await Promise.all(files.map(async (name) => {
    try {
      const r = await fetch(`ort/${name}`, { method: 'HEAD', cache: 'no-cache' });
      if (!r.ok) missing.push(name);
    } catch {
      missing.push(name);
    }
  }));
  if (missing.length) {
    throw new Error(`The model folder is incomplete: onnxruntime-web file(s) missing in ort/: ` +
      `${missing.sort().join(', ')}. ${REEXPORT}`);
  }
}

async function pickBackend() {
  const wanted = params.get('backend') || 'auto';
  if (!['auto', 'wasm', 'webgpu'].includes(wanted)) {
    throw new Error(`Unknown backend "${wanted}" in the URL (use auto, wasm or webgpu).`);
  }
  if (wanted !== 'wasm' && config.ort.webgpu && navigator.gpu) {
    try {
      const adapter = await navigator.gpu.requestAdapter();
      if (adapter) return 'webgpu';
    } catch { /* no adapter: WASM below */ }
  }
  if (wanted === 'webgpu') {
    showMessage('WebGPU is not available in this browser: using WASM instead.', 'info');
  }
  return 'wasm';
}

async function createSession(backend, modelBytes) {
  const bundle = backend === 'webgpu' ? config.ort.webgpu.bundle : config.ort.wasm.bundle;
  ort = await import(`./ort/${bundle}`);
  const wanted = parseInt(params.get('threads') ?? '', 10);
  const isolated = self.crossOriginIsolated === true;
  // threads need SharedArrayBuffer, which only a cross-origin isolated page gets
  const threads = isolated
    ? (Number.isFinite(wanted) && wanted > 0 ? wanted : Math.min(4, navigator.hardwareConcurrency || 1))
    : 1;
  ort.env.wasm.numThreads = threads;
  ort.env.wasm.simd = true;
  ort.env.wasm.wasmPaths = new URL('./ort/', location.href).href;
  ort.env.logLevel = 'error';
  const s = await ort.InferenceSession.create(modelBytes, {
    executionProviders: backend === 'webgpu' ? ['webgpu', 'wasm'] : ['wasm'],
    graphOptimizationLevel: 'all',
  });
  state.threads = threads;
  return s;
}

async function load() {
  config = await fetchJson('detector-web.json', 'the app configuration');
  sidecar = await fetchJson(config.sidecar, 'the model sidecar');
  if (sidecar.stage !== 'nms') {
    throw new Error(`The model "${config.model}" ends at stage "${sidecar.stage}"; ` +
      `the page needs a graph that ends with NMS. ${REEXPORT}`);
  }
  const files = [config.ort.wasm.bundle, ...config.ort.wasm.files];
  if (config.ort.webgpu) files.push(config.ort.webgpu.bundle, ...config.ort.webgpu.files);
  await checkRuntimeFiles(files);
  const modelBytes = new Uint8Array(await (await fetchOk(config.model, 'the ONNX model')).arrayBuffer());

  const [h, w] = sidecar.input.height_width;
  const color = sidecar.input.color ?? 'RGB';
  if (color !== 'RGB' && color !== 'BGR') {
    throw new Error(`The model wants ${color} input; the page feeds RGB or BGR. ${REEXPORT}`);
  }
  inputBGR = color === 'BGR';
  inputMapping = valueMapping(sidecar.input.value_range);
  const classes = sidecar.classes?.length ? sidecar.classes
    : Array.from({ length: sidecar.num_classes }, (_, i) => `class${i + 1}`);
  state.model = { name: config.name, file: config.model, input: [h, w], classes };
  $('model-name').textContent = config.name;
  document.title = `${config.name}: on-device detection`;
  const listed = classes.length > 12
    ? `${classes.slice(0, 12).join(', ')} … (+${classes.length - 12} more)` : classes.join(', ');
  $('model-info').textContent =
    `input ${w}×${h} · ${classes.length} class${classes.length === 1 ? '' : 'es'}: ${listed}`;
  $('model-info').title = classes.join(', ');
  buildClassFilter(classes);
  if (!Number.isFinite(threshold)) threshold = config.threshold ?? 0.5;
  $('threshold').value = threshold;
  $('threshold-value').textContent = threshold.toFixed(2);

  let backend = await pickBackend();
  try {
    session = await createSession(backend, modelBytes);
  } catch (err) {
    if (backend !== 'webgpu') throw err;
    backend = 'wasm';
    showMessage(`WebGPU failed (${err.message}): using WASM instead.`, 'info');
    session = await createSession(backend, modelBytes);
  }
  // one warm-up run, so that the first frame shows the steady-state latency
  const warm = await session.run({
    [sidecar.input.name]: new ort.Tensor('float32', new Float32Array(3 * h * w), [1, 3, h, w]),
  });
  for (const name of Object.keys(warm)) warm[name].dispose?.();
  state.backend = backend;
  state.ortVersion = ort.env.versions?.web ?? config.ort.version;
  $('backend').textContent = backend === 'webgpu' ? 'WebGPU'
    : `WASM SIMD, ${state.threads} thread${state.threads === 1 ? '' : 's'}` +
      (state.crossOriginIsolated ? '' : ' (page not cross-origin isolated)');
  setState('ready');
  paintIdle();
}

function paintIdle() {
  view.width = 640;
  view.height = 480;
  overlay.width = 640;
  overlay.height = 480;
  viewCtx.fillStyle = '#222';
  viewCtx.fillRect(0, 0, view.width, view.height);
  viewCtx.fillStyle = '#ddd';
  viewCtx.font = '600 22px system-ui, sans-serif';
  viewCtx.fillText('Start a camera or choose an image or video file.', 40, 240);
}

function colorOf(label) {
  const c = config.colors?.[String(label)] ?? [255, 64, 64];
  return `rgb(${c[0]}, ${c[1]}, ${c[2]})`;
}

function buildClassFilter(classes) {
  const box = $('classes');
  const buttons = document.createElement('div');
  buttons.className = 'row';
  for (const [text, on] of [['All', true], ['None', false]]) {
    const b = document.createElement('button');
    b.type = 'button';
    b.textContent = text;
    b.addEventListener('click', () => {
      for (const input of box.querySelectorAll('input[type=checkbox]')) {
        input.checked = on;
        enabled.set(Number(input.dataset.label), on);
      }
      refilter();
    });
    buttons.append(b);
  }
  box.append(buttons);
  classes.forEach((name, i) => {
    const label = i + 1;
    enabled.set(label, true);
    const row = document.createElement('label');
    const input = document.createElement('input');
    input.type = 'checkbox';
    input.checked = true;
    input.dataset.label = String(label);
    input.addEventListener('change', () => {
      enabled.set(label, input.checked);
      refilter();
    });
    const swatch = document.createElement('span');
    swatch.className = 'swatch';
    swatch.style.background = colorOf(label);
    row.append(input, swatch, document.createTextNode(name));
    box.append(row);
  });
}

// ---------------------------------------------------------------------------------- detection
async function detect(width, height) {
  const [h, w] = state.model.input;
  const t0 = performance.now();
  const pixels = workCtx.getImageData(0, 0, width, height).data;
  inputTensorBuffer = preprocess(
    pixels, width, height, w, h, inputTensorBuffer, inputMapping, inputBGR);
  const t1 = performance.now();
  const input = new ort.Tensor('float32', inputTensorBuffer, [1, 3, h, w]);
  const out = await session.run({ [sidecar.input.name]: input });
  const t2 = performance.now();
  const count = Number(out.count.data[0]);
  const boxes = out.boxes.data;
  const scores = out.scores.data;
  const labels = out.labels.data;
  const raw = [];
  for (let i = 0; i < count; i++) {
    const label = Number(labels[i]);
    raw.push({
      label,
      name: state.model.classes[label - 1] ?? `class${label}`,
      score: scores[i],
      box: [boxes[4 * i] * width, boxes[4 * i + 1] * height,
        boxes[4 * i + 2] * width, boxes[4 * i + 3] * height],
    });
  }
  for (const name of Object.keys(out)) out[name].dispose?.();
  return { raw, timings: { preprocess: t1 - t0, inference: t2 - t1 } };
}

function shown(raw) {
  return raw.filter((d) => d.score > threshold && enabled.get(d.label));
}

function drawBoxes(dets, width, height) {
  overlay.width = width;
  overlay.height = height;
  overlayCtx.clearRect(0, 0, width, height);
  const lw = Math.max(2, Math.round((width + height) / 500));
  const font = Math.max(12, Math.round((width + height) / 70));
  overlayCtx.font = `600 ${font}px system-ui, sans-serif`;
  overlayCtx.textBaseline = 'top';
  for (const d of dets) {
    const [x1, y1, x2, y2] = d.box;
    const color = colorOf(d.label);
    overlayCtx.strokeStyle = color;
    overlayCtx.lineWidth = lw;
    overlayCtx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    const text = `${d.name} ${d.score.toFixed(2)}`;
    const tw = overlayCtx.measureText(text).width + 6;
    const ty = y1 - font - 4 >= 0 ? y1 - font - 4 : y1;
    overlayCtx.fillStyle = color;
    overlayCtx.fillRect(x1, ty, tw, font + 4);
    overlayCtx.fillStyle = '#000';
    overlayCtx.fillText(text, x1 + 3, ty + 2);
  }
}

function report(source, width, height, raw, timings) {
  const dets = shown(raw);
  const t = performance.now();
  if (view.width !== width || view.height !== height) sizeCanvases(width, height);
  viewCtx.drawImage(work, 0, 0);
  drawBoxes(dets, width, height);
  timings.draw = performance.now() - t;
  timings.total = timings.preprocess + timings.inference + timings.draw;
  state.frames += 1;
  state.last = {
    source, width, height, threshold, frame: state.frames,
    detections: dets.map((d) => ({ label: d.label, name: d.name, score: d.score, box: d.box })),
    timings,
  };
  view.dataset.detections = JSON.stringify(state.last.detections);
  $('count').textContent = String(dets.length);
  $('latency').textContent = `${timings.total.toFixed(1)} ms (model ${timings.inference.toFixed(1)} ms)`;
}

function refilter() {
  if (lastRaw) report(lastRaw.source, lastRaw.width, lastRaw.height, lastRaw.raw, { ...lastRaw.timings });
}

// ---------------------------------------------------------------------------------- sources
function stopSources() {
  runToken += 1;
  if (stream) {
    for (const track of stream.getTracks()) track.stop();
    stream = null;
  }
  video.pause();
  if (video.src) URL.revokeObjectURL(video.src);
  video.removeAttribute('src');
  video.srcObject = null;
  lastRaw = null;
}

function sizeCanvases(width, height) {
  view.width = width;
  view.height = height;
  overlay.width = width;
  overlay.height = height;
}

async function runImage(file) {
  let bitmap;
  try {
    // the file's own pixels: no colour management, EXIF orientation applied (as cv2.imread)
    bitmap = await createImageBitmap(file, { colorSpaceConversion: 'none', imageOrientation: 'from-image' });
  } catch {
    throw new Error(`"${file.name}" is not an image or video this browser can decode ` +
      `(type ${file.type || 'unknown'}). Choose a JPEG, PNG, WebP, GIF or a video file.`);
  }
  const { width, height } = bitmap;
  work.width = width;
  work.height = height;
  workCtx.drawImage(bitmap, 0, 0);
  bitmap.close();
  const { raw, timings } = await detect(width, height);
  lastRaw = { source: file.name, width, height, raw, timings };
  report(file.name, width, height, raw, { ...timings });
  $('fps').textContent = '–';
  setState('ready');
}

async function runVideoLoop(source) {
  const token = runToken;
  setState('running');
  let lastTime = 0;
  let fps = 0;
  const nextFrame = () => new Promise((resolve) => {
    if (video.requestVideoFrameCallback) video.requestVideoFrameCallback(() => resolve());
    else requestAnimationFrame(() => resolve());
  });
  while (token === runToken) {
    if (video.readyState >= 2 && video.videoWidth > 0) {
      const width = video.videoWidth;
      const height = video.videoHeight;
      if (work.width !== width || work.height !== height) {
        work.width = width;
        work.height = height;
      }
      const t0 = performance.now();
      workCtx.drawImage(video, 0, 0, width, height);
      const capture = performance.now() - t0;
      const { raw, timings } = await detect(width, height);
      timings.preprocess += capture; // grabbing the frame counts as preprocessing
      if (token !== runToken) break;
      report(source, width, height, raw, timings);
      const now = performance.now();
      if (lastTime) fps = fps ? 0.9 * fps + 0.1 * (1000 / (now - lastTime)) : 1000 / (now - lastTime);
      lastTime = now;
      $('fps').textContent = fps.toFixed(1);
      state.fps = fps;
    }
    if (video.ended) break;
    await nextFrame();
  }
  if (token === runToken) setState('ready');
}

async function runVideoFile(file) {
  video.srcObject = null;
  video.src = URL.createObjectURL(file);
  video.loop = true;
  try {
    await video.play();
  } catch (err) {
    throw new Error(`"${file.name}" is not an image or video this browser can decode ` +
      `(${err.message}). Choose a JPEG, PNG, WebP, GIF or a video file.`);
  }
  runVideoLoop(file.name).catch(fail);
}

async function runCamera(facingMode) {
  if (!navigator.mediaDevices?.getUserMedia) {
    throw new Error('This page cannot use a camera here: browsers allow cameras only on ' +
      'https:// or http://localhost pages. Open it through `python -m detector.web serve`.');
  }
  try {
    stream = await navigator.mediaDevices.getUserMedia({
      video: { facingMode: { ideal: facingMode }, width: { ideal: 640 }, height: { ideal: 480 } },
      audio: false,
    });
  } catch (err) {
    if (err.name === 'NotAllowedError' || err.name === 'SecurityError') {
      throw new Error('Camera access was denied. Allow the camera for this page in the ' +
        'browser settings, or choose an image or video file instead.');
    }
    if (err.name === 'NotFoundError' || err.name === 'OverconstrainedError') {
      throw new Error('No camera was found on this device. Choose an image or video file instead.');
    }
    if (err.name === 'NotReadableError') {
      throw new Error('The camera is in use by another application or could not be started.');
    }
    throw new Error(`The camera could not be started (${err.name}: ${err.message}).`);
  }
  video.srcObject = stream;
  await video.play();
  runVideoLoop(`camera:${facingMode}`).catch(fail);
}

function fail(err) {
  console.error(err);
  showMessage(err?.message ?? String(err));
}

async function guarded(fn) {
  if (!session) return;
  clearMessage();
  stopSources();
  try {
    await fn();
  } catch (err) {
    fail(err);
  }
}

// ---------------------------------------------------------------------------------- UI
$('file').addEventListener('change', (event) => {
  const file = event.target.files?.[0];
  if (!file) return;
  guarded(() => (file.type.startsWith('video/') ? runVideoFile(file) : runImage(file)));
});
$('camera-front').addEventListener('click', () => guarded(() => runCamera('user')));
$('camera-back').addEventListener('click', () => guarded(() => runCamera('environment')));
$('stop').addEventListener('click', () => { stopSources(); if (session) setState('ready'); });
$('threshold').addEventListener('input', (event) => {
  threshold = parseFloat(event.target.value);
  $('threshold-value').textContent = threshold.toFixed(2);
  refilter();
});

// Benchmark hook: detect the current view `n` times, return per-frame timings (ms).
state.benchmark = async (n = 50) => {
  const width = work.width;
  const height = work.height;
  const frames = [];
  for (let i = 0; i < n; i++) {
    const { raw, timings } = await detect(width, height);
    report('benchmark', width, height, raw, timings);
    frames.push(state.last.timings);
  }
  return frames;
};
state.startCamera = (facing = params.get('camera') || 'user') => guarded(() => runCamera(facing));
state.stop = () => { stopSources(); setState('ready'); };

load().catch(fail);
