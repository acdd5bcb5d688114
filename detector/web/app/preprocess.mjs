// Image -> model input, the same numbers as detector.runtime.preprocess_image (Python):
// the whole RGB image stretched to (W, H) the way OpenCV's cv2.resize(INTER_LINEAR) does it
// on uint8 images (11-bit fixed-point weights, and the 2x2 average for an exact halving),
// then x / 255 as float32, planar [1, 3, H, W].
//
// The arithmetic follows OpenCV's published algorithm step by step (coordinate mapping,
// border clamping, rounding of the weights and of the vertical pass), so that the page and
// the Python runtime feed the model the same tensor; tests/test_web.py checks this against
// cv2 itself.

const COEF_BITS = 11;
const COEF_SCALE = 1 << COEF_BITS; // 2048

function clamp255(v) {
  return v < 0 ? 0 : (v > 255 ? 255 : v);
}

// round half to even, like cvRound / lrint
function roundEven(v) {
  const r = Math.round(v);
  return (Math.abs(v % 1) === 0.5 && r % 2 !== 0) ? r - 1 : r;
}

function toShort(v) {
  const r = roundEven(v);
  return r > 32767 ? 32767 : (r < -32768 ? -32768 : r);
}

// Source index and fixed-point weights for each destination index along one axis. Along x
// OpenCV clamps index and weights at the borders; along y it clamps only the source rows.
function axisTable(srcLen, dstLen, clampWeights) {
  const scale = 1 / (dstLen / srcLen);
  const index = new Int32Array(dstLen);
  const w0 = new Int32Array(dstLen);
  const w1 = new Int32Array(dstLen);
  for (let d = 0; d < dstLen; d++) {
    let f = Math.fround((d + 0.5) * scale - 0.5);
    let s = Math.floor(f);
    f = Math.fround(f - s);
    if (clampWeights) {
      if (s < 0) { f = 0; s = 0; }
      if (s >= srcLen - 1) { f = 0; s = srcLen - 1; }
    }
    index[d] = s;
    w0[d] = toShort(Math.fround(1 - f) * COEF_SCALE);
    w1[d] = toShort(f * COEF_SCALE);
  }
  return { index, w0, w1 };
}


/**
 * The sidecar's input value range as (scale, offset): value = uint8 * scale + offset, in float32.
 * [0, 1] (the exporter's) gives x * float32(1/255), exactly numpy's float32 product.
 */
export function valueMapping(range) {
  const [lo, hi] = range ?? [0, 1];
  if (!Number.isFinite(lo) || !Number.isFinite(hi) || hi <= lo) {
    throw new Error(`unsupported input value_range ${JSON.stringify(range)} in the sidecar`);
  }
  return { scale: Math.fround((hi - lo) / 255), offset: lo };
}

/**
 * @param {Uint8ClampedArray|Uint8Array} rgba source pixels, 4 bytes per pixel (canvas ImageData)
 * @param {number} sw source width  @param {number} sh source height
 * @param {number} dw model width   @param {number} dh model height
 * @param {Float32Array} [out] reused output buffer of 3*dh*dw floats
 * @param {{scale: number, offset: number}} [mapping] from valueMapping (default: [0, 1])
 * @param {boolean} [bgr] channel order BGR instead of RGB
 * @returns {Float32Array} planar channels, value = uint8 * scale + offset
 */
export function preprocess(rgba, sw, sh, dw, dh, out, mapping, bgr = false) {
  const plane = dw * dh;
  if (!out || out.length !== 3 * plane) out = new Float32Array(3 * plane);
  const { scale, offset } = mapping ?? valueMapping([0, 1]);
  // output plane of source channel k (R, G, B): k, or 2 - k for BGR models
  const p0 = bgr ? 2 * plane : 0, p1 = plane, p2 = bgr ? 0 : 2 * plane;
  if (sw === 2 * dw && sh === 2 * dh) { // OpenCV switches to the 2x2 area average here
    for (let y = 0; y < dh; y++) {
      const r0 = (2 * y) * sw * 4, r1 = (2 * y + 1) * sw * 4;
      for (let x = 0; x < dw; x++) {
        const a = r0 + 8 * x, b = r1 + 8 * x, o = y * dw + x;
        const r = (rgba[a] + rgba[a + 4] + rgba[b] + rgba[b + 4] + 2) >> 2;
        const g = (rgba[a + 1] + rgba[a + 5] + rgba[b + 1] + rgba[b + 5] + 2) >> 2;
        const bl = (rgba[a + 2] + rgba[a + 6] + rgba[b + 2] + rgba[b + 6] + 2) >> 2;
        out[p0 + o] = Math.fround(r * scale) + offset;
        out[p1 + o] = Math.fround(g * scale) + offset;
        out[p2 + o] = Math.fround(bl * scale) + offset;
      }
    }
    return out;
  }
  const xt = axisTable(sw, dw, true);
  const yt = axisTable(sh, dh, false);
  const rowLen = dw * 3;
  // horizontally resized rows (int, scaled by 2048), cached by source row
  let rowA = new Int32Array(rowLen), rowB = new Int32Array(rowLen);
  let rowAIndex = -1, rowBIndex = -1;
  const hrow = (sy, dst) => {
    const base = sy * sw * 4;
    for (let x = 0; x < dw; x++) {
      const s = base + 4 * xt.index[x], a0 = xt.w0[x], a1 = xt.w1[x];
      const s1 = xt.index[x] + 1 < sw ? s + 4 : s; // a1 is 0 at the right border
      dst[3 * x] = rgba[s] * a0 + rgba[s1] * a1;
      dst[3 * x + 1] = rgba[s + 1] * a0 + rgba[s1 + 1] * a1;
      dst[3 * x + 2] = rgba[s + 2] * a0 + rgba[s1 + 2] * a1;
    }
  };
  for (let y = 0; y < dh; y++) {
    const sy0 = Math.min(Math.max(yt.index[y], 0), sh - 1);
    const sy1 = Math.min(Math.max(yt.index[y] + 1, 0), sh - 1);
    if (rowAIndex !== sy0) {
      if (rowBIndex === sy0) { const t = rowA; rowA = rowB; rowB = t; rowAIndex = sy0; rowBIndex = -1; }
      else { hrow(sy0, rowA); rowAIndex = sy0; }
    }
    if (rowBIndex !== sy1) { hrow(sy1, rowB); rowBIndex = sy1; }
    const b0 = yt.w0[y], b1 = yt.w1[y];
    const o = y * dw;
    for (let x = 0; x < dw; x++) {
      // OpenCV's vectorised vertical pass (used for whole rows, its tail included):
      // ((S0 >> 4) * b0 >> 16) + ((S1 >> 4) * b1 >> 16), then a rounding shift by 2
      const i = 3 * x;
      const r = clamp255(((((rowA[i] >> 4) * b0) >> 16) + (((rowB[i] >> 4) * b1) >> 16) + 2) >> 2);
      const g = clamp255(((((rowA[i + 1] >> 4) * b0) >> 16) + (((rowB[i + 1] >> 4) * b1) >> 16) + 2) >> 2);
      const bl = clamp255(((((rowA[i + 2] >> 4) * b0) >> 16) + (((rowB[i + 2] >> 4) * b1) >> 16) + 2) >> 2);
      out[p0 + o + x] = Math.fround(r * scale) + offset;
      out[p1 + o + x] = Math.fround(g * scale) + offset;
      out[p2 + o + x] = Math.fround(bl * scale) + offset;
    }
  }
  return out;
}
