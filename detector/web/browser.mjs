// Drives headless Chromium through a served detector web app (used by tests/test_web.py and
// bench/web.py through detector/web/browser.py). Reads a JSON job on stdin, prints one JSON
// result per step on stdout:
//   { "url", "executable", "fakeVideo": <y4m|mjpeg path or null>, "grantCamera": bool, "viewport",
//     "steps": [ {"do": "ready"} | {"do": "file", "path"} | {"do": "camera", "frames", "snapshot"}
//                | {"do": "view", "path"} (the view canvas as PNG) | {"do": "screenshot", "path"}
//                | {"do": "benchmark", "n"} ] }
import { chromium } from 'playwright-core';
import { readFileSync, writeFileSync } from 'node:fs';
import { basename } from 'node:path';

const job = JSON.parse(readFileSync(0, 'utf8'));
const timeout = job.timeoutMs ?? 120000;
const args = ['--no-sandbox', '--enable-unsafe-swiftshader'];
if (job.fakeVideo !== undefined && job.fakeVideo !== null) {
  args.push('--use-fake-device-for-media-stream');
  if (job.fakeVideo) args.push(`--use-file-for-fake-video-capture=${job.fakeVideo}`);
}
const browser = await chromium.launch({ executablePath: job.executable, headless: true, args });
const results = [];
try {
  const context = await browser.newContext({ viewport: job.viewport ?? { width: 1100, height: 760 } });
  if (job.grantCamera) await context.grantPermissions(['camera'], { origin: new URL(job.url).origin });
  const page = await context.newPage();
  const logs = [];
  page.on('console', (m) => logs.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => logs.push(`pageerror: ${e.message}`));
  await page.goto(job.url);
  const settled = async (predicate, arg) => {
    await page.waitForFunction(predicate, arg, { timeout, polling: 50 });
  };
  const snapshot = () => page.evaluate(() => {
    const s = window.detectorWeb;
    return { state: s.state, error: s.error, backend: s.backend, threads: s.threads,
      crossOriginIsolated: s.crossOriginIsolated, ortVersion: s.ortVersion, model: s.model,
      last: s.last, frames: s.frames,
      canvasBlank: (() => { // every pixel of the view the same colour: nothing was drawn
        const v = document.getElementById('view');
        const d = v.getContext('2d').getImageData(0, 0, v.width, v.height).data;
        for (let i = 4; i < d.length; i += 4) {
          if (d[i] !== d[0] || d[i + 1] !== d[1] || d[i + 2] !== d[2]) return false;
        }
        return true;
      })(),
      message: document.getElementById('message').hidden ? null
        : document.getElementById('message').textContent };
  });
  for (const step of job.steps) {
    if (step.do === 'ready') {
      await settled(() => ['ready', 'error'].includes(document.body.dataset.state));
      results.push(await snapshot());
    } else if (step.do === 'file') {
      // settle on this step's own outcome: an error raised after it started, or its frame
      const [before, errors] = await page.evaluate(() => [window.detectorWeb.frames, window.detectorWeb.errors]);
      await page.setInputFiles('#file', step.path);
      await settled(([n, e, name]) => {
        const s = window.detectorWeb;
        return s.errors > e || (s.frames > n && s.last?.source === name);
      }, [before, errors, basename(step.path)]);
      results.push(await snapshot());
    } else if (step.do === 'camera' || step.do === 'video') {
      const [before, errors] = await page.evaluate(() => [window.detectorWeb.frames, window.detectorWeb.errors]);
      let source = 'camera';
      if (step.do === 'camera') {
        await page.evaluate(() => window.detectorWeb.startCamera('user'));
      } else {
        await page.setInputFiles('#file', step.path);
        source = basename(step.path);
      }
      await settled(([n, e, k, src]) => {
        const s = window.detectorWeb;
        return s.errors > e || (s.frames >= n + k && s.last?.source?.startsWith(src));
      }, [before, errors, step.frames ?? 3, source]);
      // stop, so that the frame on the canvas is the one whose detections are reported
      const out = await page.evaluate(() => {
        const s = window.detectorWeb;
        if (s.state === 'error') return null;
        s.stop();
        return document.getElementById('view').toDataURL('image/png');
      });
      const snap = await snapshot();
      if (out && step.snapshot) writeFileSync(step.snapshot, Buffer.from(out.split(',')[1], 'base64'));
      results.push(snap);
    } else if (step.do === 'view') {
      const png = await page.evaluate(() => document.getElementById('view').toDataURL('image/png'));
      writeFileSync(step.path, Buffer.from(png.split(',')[1], 'base64'));
      results.push({ path: step.path });
    } else if (step.do === 'screenshot') {
      await page.screenshot({ path: step.path, fullPage: true });
      results.push({ path: step.path });
    } else if (step.do === 'benchmark') {
      const frames = await page.evaluate((n) => window.detectorWeb.benchmark(n), step.n ?? 50);
      results.push({ ...(await snapshot()), perFrame: frames });
    } else {
      throw new Error(`unknown step ${JSON.stringify(step)}`);
    }
  }
  process.stdout.write(JSON.stringify({ results, logs }) + '\n');
} finally {
  await browser.close();
}
