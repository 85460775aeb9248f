// Browser tests of the demo page, headless, in the browsers installed from apt (no browser
// download): Chromium with the SwiftShader WebGPU adapter and Firefox ESR with lavapipe.
// Run by web/test, which builds the page and the native reference first:
//   node web/test.mjs --native-selftest FILE --native-bench FILE [--native-distil FILE] [--browsers chromium,firefox]
//     [--steps N] [--chunk K] [--distil JSON (the Distil tab's form values)] [--dchunk K]
// Screenshots go to target/web-artifacts/. Ends with the line "N passed, N failed".

import puppeteer from 'puppeteer-core';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..');
const artifacts = path.join(root, 'target', 'web-artifacts');

const argv = process.argv.slice(2);
const arg = (name, dflt) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? argv[i + 1] : dflt;
};
const browsersWanted = arg('browsers', 'chromium,firefox').split(',');
const nativeSelftest = JSON.parse(fs.readFileSync(arg('native-selftest'), 'utf8'));
const nativeBench = JSON.parse(fs.readFileSync(arg('native-bench'), 'utf8'));
const nativeDistil = arg('native-distil') ? JSON.parse(fs.readFileSync(arg('native-distil'), 'utf8')) : null;
// The "Your data" test: the native binary (for `predict`), an image folder made by
// scripts/make_shapes_folder.py, a one-class folder, and a teacher trained on the first.
const nativeBin = arg('native-bin');
const yoursDir = arg('yours-dir');
const yoursOneClass = arg('yours-one-class');
const yoursTeacher = arg('yours-teacher');
const YOURS = { student: 'vit_micro_p4', method: 'ofa', batch: 2, lr: 0.005, steps: 3, size: 32 };

// The self-test runs on different adapters (SwiftShader or lavapipe behind the browser's
// WebGPU, lavapipe natively) with different kernels (browsers may pick the tiled matmul):
// results must agree to |a - b| <= ATOL + RTOL |b| elementwise.
const ATOL = 1e-5;
const RTOL = 1e-4;
// The tiny training run: the same as `webdistill selftest --bench --steps 40 --chunk 5`
// (one warm-up step, then 8 calls of step(5)), with the session's default settings.
const TIMED = parseInt(arg('steps', '40'), 10);
const STEPS = TIMED + 1;
const CHUNK = parseInt(arg('chunk', '5'), 10);

// The tiny distillation run through the Distil tab (software adapters are slow: a few steps,
// a tiny batch, small train/test sets). web/test times the same settings natively.
const DISTIL = JSON.parse(arg('distil', '{}'));
const DCHUNK = parseInt(arg('dchunk', '1'), 10);
const CKA_IMAGES = 8;
// The tiny OBoW run through the OBoW tab (form values), its linear probe's budget and the word grid.
const OBOW = { model: 'resnet8', batch: 4, lr: 0.05, words: 16, steps: 3, trainLimit: 16, testLimit: 8 };
const OBOW_PROBE = { train: 100, test: 50, epochs: 1 };

const CHROMIUM = process.env.CHROMIUM || '/usr/lib/chromium/chromium';
const FIREFOX = process.env.FIREFOX || '/usr/bin/firefox-esr';
const CHROMIUM_FLAGS = ['--no-sandbox', '--no-first-run', '--disable-background-networking', '--disable-component-update',
  '--disable-sync', '--disable-quic'];
const CHROMIUM_WEBGPU = ['--enable-unsafe-webgpu', '--use-webgpu-adapter=swiftshader'];
const FIREFOX_PREFS = { 'dom.webgpu.enabled': true, 'gfx.webgpu.ignore-blocklist': true };

// ------------------------------------------------------------------ static server

const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.mjs': 'text/javascript', '.css': 'text/css',
  '.wasm': 'application/wasm', '.json': 'application/json', '.png': 'image/png', '.svg': 'image/svg+xml' };

function serve(dir) {
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://localhost');
    let file = path.normalize(path.join(dir, decodeURIComponent(url.pathname)));
    if (!file.startsWith(dir)) { res.writeHead(403).end(); return; }
    if (fs.existsSync(file) && fs.statSync(file).isDirectory()) file = path.join(file, 'index.html');
    fs.readFile(file, (err, body) => {
      if (err) { res.writeHead(404).end('not found'); return; }
      res.writeHead(200, { 'content-type': TYPES[path.extname(file)] || 'application/octet-stream', 'cache-control': 'no-store' });
      res.end(body);
    });
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

// ------------------------------------------------------------------ harness

const results = [];
const measured = {};

// WEB_TEST_ONLY=REGEX runs only the tests whose names match (those that need an earlier test's
// page still run it first, so pick them together).
const ONLY = process.env.WEB_TEST_ONLY ? new RegExp(process.env.WEB_TEST_ONLY) : null;

async function test(name, fn) {
  if (ONLY && !ONLY.test(name)) return;
  const t0 = Date.now();
  try {
    await fn();
    results.push([name, true]);
    console.log(`ok   ${name} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
  } catch (e) {
    results.push([name, false]);
    console.log(`FAIL ${name}: ${e && e.stack ? e.stack : e}`);
  }
}

async function launch(kind, { webgpu = true } = {}) {
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), `webdistill-${kind}-`));
  if (kind === 'chromium') {
    return puppeteer.launch({
      executablePath: CHROMIUM, headless: true, userDataDir,
      args: [...CHROMIUM_FLAGS, ...(webgpu ? CHROMIUM_WEBGPU : [])],
      protocolTimeout: 600_000,
    });
  }
  return puppeteer.launch({
    browser: 'firefox', executablePath: FIREFOX, headless: true, userDataDir,
    extraPrefsFirefox: FIREFOX_PREFS, protocolTimeout: 600_000,
  });
}

async function open(browser, url, logs) {
  const page = await browser.newPage();
  await page.setViewport({ width: 1100, height: 1000 });
  page.on('console', (m) => logs.push(`[console.${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => logs.push(`[pageerror] ${e.message}`));
  await page.goto(url);
  return page;
}

const waitFor = (page, expr, timeout, ...args) => page.waitForFunction(expr, { timeout, polling: 100 }, ...args);

function compare(browserReport, nativeReport) {
  let worst = { ratio: -1, where: 'nothing compared' };
  for (const o of nativeReport.outputs) {
    const b = browserReport.outputs.find((x) => x.name === o.name);
    assert.ok(b, `browser report lacks '${o.name}'`);
    assert.deepEqual(b.shape, o.shape, `shape of '${o.name}'`);
    o.values.forEach((want, i) => {
      const got = b.values[i];
      const ratio = Math.abs(got - want) / (ATOL + RTOL * Math.abs(want));
      if (!(ratio <= worst.ratio)) worst = { ratio: Number.isNaN(ratio) ? Infinity : ratio, where: `${o.name}[${i}]: ${got} vs native ${want}` };
    });
  }
  return worst;
}

const number = (s) => parseFloat(String(s).replace(/[,%]/g, ''));

// ------------------------------------------------------------------ the tests

async function browserTests(kind, base) {
  let browser;
  const logs = [];
  fs.rmSync(path.join(artifacts, `${kind}-console.log`), { force: true });
  try {
    browser = await launch(kind);
    const page = await open(browser, `${base}/?steps=${STEPS}&chunk=${CHUNK}`, logs);

    await test(`${kind}: the page loads and opens a WebGPU adapter`, async () => {
      await waitFor(page, () => window.__status && window.__status !== 'loading', 120_000);
      const status = await page.evaluate(() => window.__status);
      assert.equal(status, 'ready', `status ${status}; errors: ${await page.evaluate(() => window.__errors.join(' | '))}`);
      const adapter = await page.$eval('#adapter', (e) => e.textContent);
      const info = await page.evaluate(() => window.__info);
      console.log(`     ${kind} ${adapter}; fallback adapter: ${info.fallback}; matmul kernel: ${info.matmul}`);
      assert.ok(await page.$('#tab-overview') && await page.$('#tab-train'), 'tabs are missing');
    });

    await test(`${kind}: the self-test equals the native results (atol ${ATOL}, rtol ${RTOL})`, async () => {
      await waitFor(page, () => window.__selftest !== undefined, 180_000);
      const report = await page.evaluate(() => window.__selftest);
      assert.ok(!report.error, `self-test failed in the page: ${report.error}`);
      const worst = compare(report, nativeSelftest);
      const n = nativeSelftest.outputs.reduce((a, o) => a + o.values.length, 0);
      const exact = nativeSelftest.outputs.every((o) => o.values.every((v, i) => v === report.outputs.find((x) => x.name === o.name).values[i]));
      console.log(`     ${n} values compared${exact ? ' (all bit-identical)' : ''}; worst |a-b|/(atol+rtol|b|) = ` +
        `${worst.ratio.toFixed(4)} at ${worst.where}`);
      fs.mkdirSync(artifacts, { recursive: true });
      await page.screenshot({ path: path.join(artifacts, `${kind}-overview.png`), fullPage: true });
      measured[`${kind}_selftest_worst_ratio`] = worst.ratio;
      assert.ok(worst.ratio <= 1, `outside the tolerance at ${worst.where}`);
    });

    await test(`${kind}: a tiny training run through the UI lowers the loss and shows its numbers`, async () => {
      await page.click('#tab-train');
      // Responsiveness: the longest gap between 10 ms timer ticks while training runs.
      await page.evaluate(() => {
        window.__maxGap = 0;
        let last = performance.now();
        window.__gapTimer = setInterval(() => {
          const t = performance.now();
          window.__maxGap = Math.max(window.__maxGap, t - last);
          last = t;
        }, 10);
      });
      await page.click('#btn-start');
      await waitFor(page, () => window.__result !== undefined, 420_000);
      const maxGap = await page.evaluate(() => { clearInterval(window.__gapTimer); return window.__maxGap; });
      const r = await page.evaluate(() => window.__result);
      assert.ok(r.ok, `training failed: ${r.error}`);
      assert.equal(r.steps, STEPS);
      assert.ok(r.last_loss < 0.9 * r.first_loss, `training loss ${r.first_loss} -> ${r.last_loss}`);
      assert.ok(r.eval_loss < 0.9 * r.first_loss, `held-out loss ${r.eval_loss} vs first training loss ${r.first_loss}`);
      // The run is deterministic (data, initial weights, batch order): the browser's losses
      // follow the native run's (float rounding differs between adapters, so not bit for bit).
      for (const k of ['first_loss', 'last_loss', 'eval_loss', 'accuracy']) {
        assert.ok(Math.abs(r[k] - nativeBench[k]) <= 1e-3 * Math.max(1, Math.abs(nativeBench[k])), `${k}: ${r[k]} here, ${nativeBench[k]} natively`);
      }
      const shown = await page.evaluate(() => Object.fromEntries(['m-step', 'm-loss', 'm-eval-loss', 'm-acc', 'm-ips', 'm-sps']
        .map((id) => [id, document.getElementById(id).textContent])));
      assert.equal(number(shown['m-step']), STEPS, `step shown: ${shown['m-step']}`);
      for (const id of ['m-loss', 'm-eval-loss', 'm-acc', 'm-ips', 'm-sps']) {
        assert.ok(Number.isFinite(number(shown[id])) && number(shown[id]) > 0, `${id} shows '${shown[id]}'`);
      }
      assert.ok(Math.abs(number(shown['m-loss']) - r.last_loss) < 1e-3 * Math.max(1, r.last_loss), 'shown loss');
      assert.ok(await page.$('#chart canvas'), 'no loss chart');
      assert.equal(await page.$eval('#train-state', (e) => e.textContent), `Finished ${STEPS} steps.`);
      const errors = await page.evaluate(() => window.__errors);
      assert.deepEqual(errors, [], 'errors shown on the page');
      measured[kind] = { ...r, max_main_thread_gap_ms: maxGap };
      console.log(`     the page's main thread was never blocked for more than ${maxGap.toFixed(0)} ms during the run`);
      assert.ok(maxGap < 500, `the main thread was blocked for ${maxGap} ms`);
      console.log(`     loss ${r.first_loss.toFixed(4)} -> ${r.last_loss.toFixed(4)}, held-out ${r.eval_loss.toFixed(4)} ` +
        `(accuracy ${(r.accuracy * 100).toFixed(1)}%); ${r.steps_per_sec.toFixed(2)} steps/s, ` +
        `${Math.round(r.images_per_sec)} images/s in step(); ${r.wall_steps_per_sec.toFixed(2)} steps/s wall-clock through the UI`);
      fs.mkdirSync(artifacts, { recursive: true });
      await page.screenshot({ path: path.join(artifacts, `${kind}.png`), fullPage: true });
    });

    await test(`${kind}: a longer run with adaptive step() calls keeps the page responsive`, async () => {
      const p2 = await open(browser, `${base}/?steps=301#train`, logs);
      try {
        await waitFor(p2, () => window.__status === 'ready', 120_000);
        await p2.evaluate(() => {
          window.__maxGap = 0;
          let last = performance.now();
          setInterval(() => {
            const t = performance.now();
            window.__maxGap = Math.max(window.__maxGap, t - last);
            last = t;
          }, 10);
        });
        await p2.click('#btn-start');
        await waitFor(p2, () => window.__result !== undefined, 420_000);
        const r = await p2.evaluate(() => window.__result);
        const loop = await p2.evaluate(() => window.__loop);
        const maxGap = await p2.evaluate(() => window.__maxGap);
        const ms = (x) => Math.round(x);
        console.log(`     ${r.steps} steps: ${r.steps_per_sec.toFixed(1)} steps/s in step(), ${r.wall_steps_per_sec.toFixed(1)} wall-clock; ` +
          `${loop.calls} calls ending at step(${loop.chunk}); ms in step ${ms(loop.step)}, evaluate ${ms(loop.evaluate)}, ` +
          `draw ${ms(loop.draw)}, yield ${ms(loop.yield)}; longest main-thread gap ${ms(maxGap)} ms`);
        measured[`${kind}_adaptive`] = { ...r, loop, max_main_thread_gap_ms: maxGap };
        await p2.screenshot({ path: path.join(artifacts, `${kind}-301-steps.png`), fullPage: true });
        assert.ok(r.ok && r.steps === 301, JSON.stringify(r));
        assert.ok(r.accuracy > 0.9, `held-out accuracy ${r.accuracy} after 301 steps`);
        assert.ok(maxGap < 500, `the main thread was blocked for ${maxGap} ms`);
        assert.ok(loop.draw < 1000, `drawing the chart took ${loop.draw} ms in all`);
        assert.ok(r.wall_steps_per_sec > 0.5 * r.steps_per_sec, 'the UI loop spends most of its time outside step()');
      } finally {
        await p2.close();
      }
    });

    await test(`${kind}: Reset, Start, Stop, Resume and Reset again`, async () => {
      const state = () => page.$eval('#train-state', (e) => e.textContent);
      const step = async () => number(await page.$eval('#m-step', (e) => e.textContent));
      const enabled = () => page.evaluate(() => Object.fromEntries(['start', 'stop', 'resume', 'reset']
        .map((b) => [b, !document.getElementById(`btn-${b}`).disabled])));
      await page.click('#btn-reset');
      await waitFor(page, () => document.getElementById('train-state').textContent === 'Ready.', 60_000);
      assert.deepEqual(await enabled(), { start: true, stop: false, resume: false, reset: false });
      assert.equal(await page.$('#chart canvas'), null, 'the chart survived Reset');
      assert.equal(await page.evaluate(() => window.__result), undefined);
      // No step limit this time: it runs until stopped.
      await page.$eval('input[name=maxSteps]', (e) => { e.value = '0'; });
      await page.click('#btn-start');
      await waitFor(page, () => parseInt(document.getElementById('m-step').textContent, 10) >= 10, 120_000);
      await page.click('#btn-stop');
      await waitFor(page, () => /^Stopped at step \d+\.$/.test(document.getElementById('train-state').textContent), 60_000);
      const stopped = await step();
      assert.match(await state(), new RegExp(`^Stopped at step ${stopped}\\.$`));
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(await step(), stopped, 'training went on after Stop');
      assert.deepEqual(await enabled(), { start: false, stop: false, resume: true, reset: true });
      await page.click('#btn-resume');
      await waitFor(page, (s) => parseInt(document.getElementById('m-step').textContent, 10) >= s + 10, 120_000, stopped);
      await page.click('#btn-stop');
      await waitFor(page, () => /^Stopped/.test(document.getElementById('train-state').textContent), 60_000);
      assert.ok((await step()) >= stopped + 10);
      await page.click('#btn-reset');
      await waitFor(page, () => document.getElementById('train-state').textContent === 'Ready.', 60_000);
      assert.equal(await page.$eval('#m-step', (e) => e.textContent), '–');
      assert.deepEqual(await page.evaluate(() => window.__errors), []);
    });

    await test(`${kind}: a tiny distillation through the Distil tab lowers the loss and shows its results and the CKA heatmap`, async () => {
      const p3 = await open(browser, `${base}/?dchunk=${DCHUNK}&eval_ms=1e9&cka_images=${CKA_IMAGES}#distil`, logs);
      try {
        await waitFor(p3, () => window.__status === 'ready', 120_000);
        await waitFor(p3, () => document.getElementById('distil-state').textContent === 'Ready.', 60_000);
        await p3.evaluate((cfg) => {
          const f = document.getElementById('distil-settings').elements;
          for (const [k, v] of Object.entries(cfg)) f[k].value = String(v);
          window.__maxGap = 0;
          let last = performance.now();
          setInterval(() => {
            const t = performance.now();
            window.__maxGap = Math.max(window.__maxGap, t - last);
            last = t;
          }, 10);
        }, DISTIL);
        await p3.click('#distil-start');
        await waitFor(p3, () => window.__distil !== undefined, 300_000);
        const r = await p3.evaluate(() => window.__distil);
        const maxGap = await p3.evaluate(() => window.__maxGap);
        assert.ok(r.ok, `distillation failed: ${r.error}`);
        assert.equal(r.steps, DISTIL.steps);
        assert.ok(r.last_loss < r.first_loss, `distilled loss ${r.first_loss} -> ${r.last_loss}`);
        assert.ok(r.last_loss_baseline < r.first_loss_baseline, `labels-only loss ${r.first_loss_baseline} -> ${r.last_loss_baseline}`);
        for (const k of ['accuracy', 'accuracy_baseline']) assert.ok(r[k] >= 0 && r[k] <= 1, `${k} ${r[k]}`);
        const shown = await p3.evaluate(() => Object.fromEntries(['d-step', 'd-loss', 'd-loss-base', 'd-acc', 'd-acc-base', 'd-ips']
          .map((id) => [id, document.getElementById(id).textContent])));
        assert.equal(number(shown['d-step']), DISTIL.steps, `step shown: ${shown['d-step']}`);
        for (const id of ['d-loss', 'd-loss-base', 'd-acc', 'd-acc-base', 'd-ips']) {
          assert.ok(Number.isFinite(number(shown[id])) && number(shown[id]) >= 0, `${id} shows '${shown[id]}'`);
        }
        assert.equal(await p3.$eval('#distil-state', (e) => e.textContent), `Finished ${DISTIL.steps} steps.`);
        assert.ok(await p3.$('#distil-loss-chart canvas') && await p3.$('#distil-acc-chart canvas'), 'no charts');
        // The CKA heatmaps (distilled and labels-only): one canvas each, every value in [0, 1].
        assert.equal(await p3.$eval('#distil-cka', (e) => e.hidden), false, 'no CKA heatmap');
        const maps = await p3.$$eval('#distil-cka canvas', (cs) => cs.map((c) => ({ run: c.dataset.run, w: c.width, h: c.height })));
        assert.deepEqual(maps.map((m) => m.run), ['distilled', 'baseline']);
        for (const m of maps) assert.ok(m.w > 50 && m.h > 50, `heatmap canvas ${m.w}x${m.h}`);
        for (const c of Object.values(r.cka)) {
          assert.equal(c.values.length, c.rows.length * c.cols.length);
          assert.ok(c.rows.length >= 2 && c.cols.length >= 2, `CKA ${c.rows.length}x${c.cols.length}`);
          for (const v of c.values) assert.ok(v >= -1e-3 && v <= 1 + 1e-3, `CKA value ${v}`);
        }
        const errors = await p3.evaluate(() => window.__errors);
        assert.deepEqual(errors, [], 'errors shown on the page');
        measured[`${kind}_distil`] = { ...r, max_main_thread_gap_ms: maxGap };
        const f = (x) => x.toFixed(4);
        console.log(`     ${r.settings.student} <- resnet20 (${r.settings.method}), batch ${r.settings.batch}, ${r.steps} steps: loss ` +
          `${f(r.first_loss)} -> ${f(r.last_loss)} (labels only ${f(r.first_loss_baseline)} -> ${f(r.last_loss_baseline)}), accuracy ` +
          `${(r.accuracy * 100).toFixed(1)}% vs ${(r.accuracy_baseline * 100).toFixed(1)}%; ${r.steps_per_sec.toFixed(2)} steps/s ` +
          `(${Math.round(r.images_per_sec)} images/s) in the distilled run's step(${DCHUNK}) calls; CKA ` +
          `${r.cka.distilled.rows.length}x${r.cka.distilled.cols.length}; longest main-thread gap ${Math.round(maxGap)} ms`);
        await p3.screenshot({ path: path.join(artifacts, `${kind}-distil.png`), fullPage: true });

        // Try it: a test image, then a drawing, through the trained student and the teacher.
        await p3.click('#tab-try');
        const checkTry = async (what) => {
          await waitFor(p3, () => window.__try !== undefined, 120_000);
          const t = await p3.evaluate(() => window.__try);
          for (const who of ['teacher', 'student']) {
            assert.equal(t[who].length, 10, `${what}: ${who} probabilities`);
            const sum = t[who].reduce((a, b) => a + b, 0);
            assert.ok(Math.abs(sum - 1) < 1e-3, `${what}: ${who} probabilities sum to ${sum}`);
            assert.ok(t.classes.includes(t[`${who}_class`]), `${what}: ${who} class ${t[`${who}_class`]}`);
          }
          const bars = await p3.$$eval('#try-teacher .bar, #try-student .bar', (bs) => bs.map((b) => b.dataset.class));
          assert.equal(bars.length, 20, `${what}: bars shown`);
          assert.ok(bars.includes('Ankle boot') && bars.includes('T-shirt/top'), `${what}: class names shown: ${bars.join(', ')}`);
          return t;
        };
        await p3.$eval('#try-index', (e) => { e.value = '0'; });
        await p3.click('#try-pick');
        const t0 = await checkTry('test image 0');
        console.log(`     Try it, test image 0 (label ${t0.classes[t0.label]}): teacher says ${t0.teacher_class}, student ${t0.student_class}`);
        await p3.evaluate(() => { window.__try = undefined; });
        await p3.click('#try-clear');
        const box = await (await p3.$('#try-canvas')).boundingBox();
        const at = (fx, fy) => [box.x + fx * box.width, box.y + fy * box.height];
        await p3.mouse.move(...at(0.3, 0.2));
        await p3.mouse.down();
        for (const [fx, fy] of [[0.7, 0.2], [0.7, 0.8], [0.3, 0.8], [0.3, 0.2]]) await p3.mouse.move(...at(fx, fy), { steps: 5 });
        await p3.mouse.up();
        const t1 = await checkTry('a drawing');
        console.log(`     Try it, a drawn square: teacher says ${t1.teacher_class}, student ${t1.student_class}`);
        assert.notDeepEqual(t1.teacher, t0.teacher, 'the drawing got the same prediction as the test image');
        assert.deepEqual(await p3.evaluate(() => window.__errors), [], 'errors shown on the page');
        await p3.screenshot({ path: path.join(artifacts, `${kind}-try.png`), fullPage: true });
      } finally {
        await p3.close();
      }
    });

    await test(`${kind}: a tiny OBoW pre-training through the OBoW tab shows a finite BoW loss, the probe accuracies and the word grid`, async () => {
      const url = `${base}/?ochunk=1&probe_train=${OBOW_PROBE.train}&probe_test=${OBOW_PROBE.test}&probe_epochs=${OBOW_PROBE.epochs}` +
        `&words_shown=3&word_images=20#obow`;
      const p4 = await open(browser, url, logs);
      try {
        await waitFor(p4, () => window.__status === 'ready', 120_000);
        await waitFor(p4, () => document.getElementById('obow-state').textContent === 'Ready.', 60_000);
        await p4.evaluate((cfg) => {
          const f = document.getElementById('obow-settings').elements;
          for (const [k, v] of Object.entries(cfg)) f[k].value = String(v);
        }, OBOW);
        await p4.click('#obow-start');
        await waitFor(p4, () => window.__obow !== undefined, 120_000);
        const r = await p4.evaluate(() => window.__obow);
        assert.ok(r.ok, `OBoW failed: ${r.error}`);
        assert.equal(r.steps, OBOW.steps);
        assert.equal(r.losses.length, OBOW.steps);
        for (const l of r.losses) assert.ok(Number.isFinite(l) && l > 0, `BoW loss ${l}`);
        for (const k of ['obow', 'random']) assert.ok(r.probe[k] >= 0 && r.probe[k] <= 1, `probe ${k} ${r.probe[k]}`);
        const shown = await p4.evaluate(() => Object.fromEntries(['o-step', 'o-loss', 'o-probe', 'o-probe-random']
          .map((id) => [id, document.getElementById(id).textContent])));
        assert.equal(number(shown['o-step']), OBOW.steps, `step shown: ${shown['o-step']}`);
        assert.ok(Number.isFinite(number(shown['o-loss'])), `loss shows '${shown['o-loss']}'`);
        for (const id of ['o-probe', 'o-probe-random']) assert.match(shown[id], /^\d+(\.\d)?%$/, `${id} shows '${shown[id]}'`);
        assert.equal(await p4.$eval('#obow-state', (e) => e.textContent), `Finished ${OBOW.steps} steps.`);
        assert.ok(await p4.$('#obow-loss-chart canvas'), 'no BoW loss chart');
        // The word grid: a visible canvas of the answer's size with more than one colour in it.
        const grid = await p4.evaluate(() => {
          const c = document.getElementById('obow-words-canvas');
          const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
          const colours = new Set();
          for (let i = 0; i < px.length; i += 4) colours.add((px[i] << 16) | (px[i + 1] << 8) | px[i + 2]);
          return { hidden: document.getElementById('obow-words').hidden, w: c.width, h: c.height, colours: colours.size };
        });
        assert.equal(grid.hidden, false, 'word grid hidden');
        assert.deepEqual([grid.w, grid.h], [r.words.width, r.words.height]);
        assert.ok(grid.w > 8 && grid.h > 8 && grid.colours > 2, `word grid ${JSON.stringify(grid)}`);
        assert.deepEqual(await p4.evaluate(() => window.__errors), [], 'errors shown on the page');
        measured[`${kind}_obow`] = r;
        console.log(`     ${r.settings.model}, batch ${r.settings.batch}, ${r.settings.words} words, ${r.steps} steps: BoW loss ` +
          `${r.losses.map((l) => l.toFixed(4)).join(', ')}; linear probe ${(r.probe.obow * 100).toFixed(1)}% vs random init ` +
          `${(r.probe.random * 100).toFixed(1)}% (${r.probe.seconds.toFixed(1)} s); word grid ${grid.w}x${grid.h}`);
        await p4.screenshot({ path: path.join(artifacts, `${kind}-obow.png`), fullPage: true });
        await p4.click('#obow-reset');
        await waitFor(p4, () => document.getElementById('obow-state').textContent === 'Ready.', 60_000);
        assert.equal(await p4.$eval('#o-step', (e) => e.textContent), '–');
      } finally {
        await p4.close();
      }
    });

    await test(`${kind}: library errors reach the page as readable messages`, async () => {
      const e = await page.evaluate(async () => {
        const wd = await import('./pkg/webdistill.js');
        try {
          await wd.Session.create('mlp', { hiden: 3 });
          return null;
        } catch (err) {
          return { name: err.name, message: err.message, isError: err instanceof Error };
        }
      });
      assert.ok(e && e.isError, 'expected a rejection with an Error');
      assert.equal(e.name, 'UsageError');
      assert.match(e.message, /settings of the 'mlp' session: unknown field `hiden`/);
      const q = await page.evaluate(async () => {
        const wd = await import('./pkg/webdistill.js');
        const s = await wd.Session.create('mlp', {});
        try {
          await s.query('cka', {});
          return null;
        } catch (err) {
          return `${err.name}: ${err.message}`;
        } finally {
          s.free();
        }
      });
      assert.equal(q, "UsageError: the 'mlp' session has no query named 'cka'");
    });
  } catch (e) {
    results.push([`${kind}: browser session`, false]);
    console.log(`FAIL ${kind}: ${e && e.stack ? e.stack : e}`);
  } finally {
    if (logs.length) fs.writeFileSync(path.join(artifacts, `${kind}-console.log`), logs.join('\n') + '\n');
    if (browser) await browser.close().catch(() => {});
  }
}

// The kernels real GPUs get: `?matmul=tiled` (the 64x64 tiles of matmul_wide.wgsl and the
// linear backward's one-dispatch pair) and `?matmul=tiled-wide` (the 128x128 tiles, the
// backward as two matmuls), compiled by this browser's own WGSL compiler (Tint in Chromium,
// naga in Firefox) and run on its adapter: the self-test must still equal the native results.
async function realGpuKernelTests(kind, base) {
  let browser;
  try {
    browser = await launch(kind);
    for (const matmul of ['tiled', 'tiled-wide']) {
      await test(`${kind}: with ?matmul=${matmul} (real GPUs' matmuls) the self-test equals the native results`, async () => {
        const logs = [];
        const page = await open(browser, `${base}/?matmul=${matmul}`, logs);
        try {
          await waitFor(page, () => window.__selftest !== undefined, 180_000);
          assert.equal(await page.evaluate(() => window.__info.matmul), matmul);
          const report = await page.evaluate(() => window.__selftest);
          assert.ok(!report.error, `self-test failed in the page: ${report.error}; console: ${logs.join(' | ').slice(0, 2000)}`);
          const worst = compare(report, nativeSelftest);
          console.log(`     worst |a-b|/(atol+rtol|b|) = ${worst.ratio.toFixed(4)} at ${worst.where}`);
          assert.ok(worst.ratio <= 1, `outside the tolerance at ${worst.where}`);
        } finally {
          await page.close().catch(() => {});
        }
      });
    }
  } finally {
    if (browser) await browser.close().catch(() => {});
  }
}

async function gpuTroubleTests(base) {
  await test('chromium: a GPU whose limits are too small for the student gets a message that says so and what to do', async () => {
    const browser = await launch('chromium');
    try {
      const page = await open(browser, `${base}/?max_binding_mib=2&dchunk=1#distil`, []);
      await waitFor(page, () => window.__status && window.__status !== 'loading', 120_000);
      assert.equal(await page.evaluate(() => window.__status), 'ready');
      assert.ok((await page.evaluate(() => window.__info.maxStorageBindingMiB)) <= 2);
      await waitFor(page, () => document.getElementById('distil-state').textContent === 'Ready.', 60_000);
      await page.evaluate(() => {
        const f = document.getElementById('distil-settings').elements;
        Object.assign(f.student, { value: 'vit_micro_p4' });
        f.batch.value = '256';
        f.steps.value = '2';
      });
      await page.click('#distil-start');
      await waitFor(page, () => document.getElementById('distil-state').textContent === 'Could not build the sessions.', 120_000);
      const box = await page.$eval('#error', (e) => ({ hidden: e.hidden, text: e.innerText }));
      console.log(`     ${box.text.replace(/\n+/g, ' | ').slice(0, 300)}`);
      assert.equal(box.hidden, false);
      assert.match(box.text, /TooLargeError: .*more than this adapter's/);
      assert.match(box.text, /limits are too small .* smaller batch/);
      await page.screenshot({ path: path.join(artifacts, 'chromium-small-limits.png'), fullPage: true });
    } finally {
      await browser.close().catch(() => {});
    }
  });

  await test('chromium: after a device loss the page says what happened and to reload', async () => {
    const browser = await launch('chromium');
    try {
      const page = await open(browser, `${base}/?chunk=5#train`, []);
      await waitFor(page, () => window.__status === 'ready', 120_000);
      await page.click('#btn-start');
      await waitFor(page, () => parseInt(document.getElementById('m-step').textContent, 10) > 5, 120_000);
      await page.evaluate(async () => (await import('./pkg/webdistill.js')).destroyDevice());
      await waitFor(page, () => window.__status === 'devicelost', 60_000).catch(async (e) => {
        throw new Error(`${e.message}; errors: ${await page.evaluate(() => window.__errors.join(' | '))}; state: ` +
          `${await page.$eval('#train-state', (x) => x.textContent)}`);
      });
      const notice = await page.$eval('#devicelost', (e) => ({ hidden: e.hidden, text: e.innerText }));
      assert.equal(notice.hidden, false);
      assert.match(notice.text, /The GPU device was lost/);
      assert.match(notice.text, /Reload the page/);
      assert.match(notice.text, /device was lost \(/);
      console.log(`     ${(await page.$eval('#devicelost-detail', (e) => e.textContent)).slice(0, 200)}`);
      assert.ok(await page.$('#devicelost button'), 'no Reload button');
      await page.screenshot({ path: path.join(artifacts, 'chromium-device-lost.png'), fullPage: true });
    } finally {
      await browser.close().catch(() => {});
    }
  });
}

async function noWebGpuTests(base) {
  await test('chromium without --enable-unsafe-webgpu: a friendly message instead of a blank page', async () => {
    const browser = await launch('chromium', { webgpu: false });
    try {
      const page = await open(browser, base, []);
      await waitFor(page, () => window.__status && window.__status !== 'loading', 60_000);
      assert.equal(await page.evaluate(() => window.__status), 'nowebgpu');
      const notice = await page.$eval('#nowebgpu', (e) => ({ hidden: e.hidden, text: e.innerText }));
      assert.equal(notice.hidden, false);
      assert.match(notice.text, /WebGPU is not available/);
      assert.match(notice.text, /no GPU adapter/);
      assert.match(notice.text, /chrome:\/\/flags\/#enable-unsafe-webgpu/);
      assert.match(notice.text, /dom\.webgpu\.enabled/);
      assert.equal(await page.$eval('#tabs', (e) => e.hidden), true);
      fs.mkdirSync(artifacts, { recursive: true });
      await page.screenshot({ path: path.join(artifacts, 'chromium-nowebgpu.png'), fullPage: true });

      // A browser without navigator.gpu at all (old browsers, Firefox without the pref).
      const old = await browser.newPage();
      await old.evaluateOnNewDocument(() => { delete Navigator.prototype.gpu; });
      await old.goto(base);
      await waitFor(old, () => window.__status && window.__status !== 'loading', 60_000);
      assert.equal(await old.evaluate(() => window.__status), 'nowebgpu');
      assert.match(await old.$eval('#nowebgpu', (e) => e.innerText), /navigator\.gpu is missing/);
    } finally {
      await browser.close().catch(() => {});
    }
  });
}

/** The float32 values of a little-endian .npy file. */
function readNpy(file) {
  const b = fs.readFileSync(file);
  const headerLen = b.readUInt16LE(8);
  const header = b.subarray(10, 10 + headerLen).toString('latin1');
  assert.match(header, /'descr': '<f4'/);
  const data = b.subarray(10 + headerLen);
  return Array.from(new Float32Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength)));
}

async function yoursTests(base) {
  if (!yoursDir) return;
  await test('chromium: "Your data": a teacher file and an image folder -> refusals, teacher accuracy, distillation, download; the student loads in `webdistill predict` with the page\'s logits (1e-4)', async () => {
    const browser = await launch('chromium');
    const logs = [];
    const downloads = fs.mkdtempSync(path.join(os.tmpdir(), 'webdistill-downloads-'));
    try {
      const page = await open(browser, `${base}/?dchunk=1&eval_ms=1e9&cka_images=4#yours`, logs);
      const cdp = await page.createCDPSession();
      await cdp.send('Browser.setDownloadBehavior', { behavior: 'allow', downloadPath: downloads });
      await waitFor(page, () => window.__status === 'ready', 120_000);
      const problem = () => page.$eval('#y-problem', (e) => (e.hidden ? '' : e.textContent));
      const decoded = () => waitFor(page, () => /^[^:]+: \d+ images/.test(document.getElementById('y-images-state').textContent), 60_000);
      const pick = async (dir) => {
        await page.$eval('#y-images-state', (e) => { e.textContent = ''; });
        await (await page.$('#y-folder')).uploadFile(dir);
        await decoded();
      };
      // A folder with one class is refused before anything is built.
      await pick(yoursOneClass);
      assert.match(await problem(), /only one class/);
      // The real folder: its unreadable file is listed, and refused until the box is ticked.
      await pick(yoursDir);
      const state = await page.$eval('#y-images-state', (e) => e.textContent);
      assert.match(state, /1 unreadable/, state);
      assert.match(await problem(), /broken\.png/);
      const rows = await page.$$eval('#y-classes tbody tr', (trs) => trs.map((tr) => [...tr.children].slice(0, 3).map((td) => td.textContent)));
      assert.equal(rows.length, 3, `class rows: ${JSON.stringify(rows)}`);
      assert.ok(await page.$$eval('#y-classes img', (i) => i.length) >= 3, 'no thumbnails');
      await page.click('#y-skip-bad');
      assert.equal(await problem(), '');
      await (await page.$('#y-teacher-file')).uploadFile(yoursTeacher);
      await page.evaluate((cfg) => {
        const f = document.getElementById('yours-settings').elements;
        for (const k of ['student', 'method', 'batch', 'lr', 'steps']) f[k].value = String(cfg[k]);
      }, YOURS);
      // The wrong architecture for the teacher file: the mismatch report, and nothing trains.
      await page.$eval('#yours-settings', (form) => { form.elements.teacher.value = 'resnet20'; });
      await page.click('#yours-start');
      await waitFor(page, () => document.getElementById('yours-state').textContent === 'Could not build the sessions.', 120_000);
      const refused = await page.evaluate(() => window.__errors.splice(0).join(' | '));
      assert.match(refused, /teacher/i, refused);
      assert.match(refused, /layer2|missing|shape/, refused);
      console.log(`     wrong architecture: ${refused.slice(0, 240)}`);
      await page.$eval('#error', (e) => { e.hidden = true; e.textContent = ''; });
      await page.$eval('#yours-settings', (form) => { form.elements.teacher.value = 'resnet8'; });
      await page.click('#yours-start');
      await waitFor(page, () => window.__yours !== undefined, 300_000);
      const r = await page.evaluate(() => window.__yours);
      assert.ok(r.ok, `failed: ${r.error}`);
      assert.equal(r.steps, YOURS.steps);
      assert.ok(r.teacher && r.teacher.examples > 0 && r.teacher.accuracy >= 0 && r.teacher.accuracy <= 1, JSON.stringify(r.teacher));
      assert.match(await page.$eval('#y-teacher-acc', (e) => e.textContent), /Teacher resnet8 .* held-out images: \d/);
      assert.ok(r.predictions.length > 0);
      await page.click('#y-download');
      const want = [`${YOURS.student}_${YOURS.method}.safetensors`, `${YOURS.student}_${YOURS.method}.json`];
      const t0 = Date.now();
      while (!want.every((f) => fs.existsSync(path.join(downloads, f))) && Date.now() - t0 < 60_000) await new Promise((ok) => setTimeout(ok, 200));
      for (const f of want) assert.ok(fs.existsSync(path.join(downloads, f)), `${f} was not downloaded (got ${fs.readdirSync(downloads)})`);
      const card = JSON.parse(fs.readFileSync(path.join(downloads, want[1]), 'utf8'));
      assert.deepEqual(card.classes, ['circle', 'cross', 'square']);
      assert.equal(card.model, YOURS.student);
      assert.equal(card.training.steps, YOURS.steps);
      // The downloaded student in the CLI, on the same held-out files: the same logits.
      const npy = path.join(downloads, 'logits.npy');
      const files = r.predictions.map((p) => path.join(yoursDir, p.file));
      const printed = execFileSync(nativeBin, ['predict', '--weights', path.join(downloads, want[0]), '--input', ...files, '--out', npy], { encoding: 'utf8' });
      const native = readNpy(npy);
      const page1 = r.predictions.flatMap((p) => p.logits);
      assert.equal(native.length, page1.length);
      let worst = 0;
      page1.forEach((v, i) => { worst = Math.max(worst, Math.abs(v - native[i]) / Math.max(1, Math.abs(native[i]))); });
      console.log(`     teacher ${(r.teacher.accuracy * 100).toFixed(1)}% on ${r.teacher.examples} held-out images; student ${(r.accuracy * 100).toFixed(1)}% ` +
        `after ${r.steps} steps; ${files.length} held-out images through \`webdistill predict\`: worst |page - cli| / max(1, |cli|) = ${worst.toExponential(2)}`);
      console.log(`     ${printed.trim().split('\n')[0]}`);
      assert.ok(worst <= 1e-4, `logits differ by ${worst}`);
      assert.deepEqual(await page.evaluate(() => window.__errors), []);
      await page.screenshot({ path: path.join(artifacts, 'chromium-yours.png'), fullPage: true });
    } finally {
      if (logs.length) fs.writeFileSync(path.join(artifacts, 'chromium-yours-console.log'), logs.join('\n') + '\n');
      await browser.close().catch(() => {});
    }
  });
}

// ------------------------------------------------------------------ main

const server = await serve(here);
const base = `http://127.0.0.1:${server.address().port}`;
console.log(`serving ${here} at ${base}`);
fs.mkdirSync(artifacts, { recursive: true });
for (const kind of browsersWanted) {
  if (kind !== 'chromium' && kind !== 'firefox') throw new Error(`unknown browser ${kind}`);
  await browserTests(kind, base);
  await realGpuKernelTests(kind, base);
}
if (browsersWanted.includes('chromium')) {
  await yoursTests(base);
  await gpuTroubleTests(base);
  await noWebGpuTests(base);
}
server.close();

// Throughput of the same tiny run: natively (lavapipe) and in each browser.
console.log(`\nsteps/s of the tiny MLP run (${STEPS - 1} timed steps in step(${CHUNK}) calls after 1 warm-up step, batch 128):`);
const nat = nativeBench.steps_per_sec;
console.log(`  native      ${nat.toFixed(2).padStart(9)} steps/s  ${Math.round(nativeBench.images_per_sec).toString().padStart(8)} images/s  (${nativeBench.adapter})`);
for (const kind of browsersWanted) {
  const r = measured[kind];
  if (!r) continue;
  console.log(`  ${kind.padEnd(10)}  ${r.steps_per_sec.toFixed(2).padStart(9)} steps/s  ${Math.round(r.images_per_sec).toString().padStart(8)} images/s  ` +
    `(native / ${kind} = ${(nat / r.steps_per_sec).toFixed(1)}x; wall-clock through the UI ${r.wall_steps_per_sec.toFixed(2)} steps/s)`);
}
for (const kind of browsersWanted) {
  const r = measured[`${kind}_adaptive`];
  if (!r) continue;
  console.log(`  ${kind.padEnd(10)}  ${r.steps_per_sec.toFixed(2).padStart(9)} steps/s  ${Math.round(r.images_per_sec).toString().padStart(8)} images/s  ` +
    `(the page's own adaptive step() calls, ${r.steps - 1} steps, up to step(${r.loop.chunk}); wall-clock ${r.wall_steps_per_sec.toFixed(2)} steps/s)`);
}
if (nativeDistil) {
  const d = DISTIL;
  console.log(`\nsteps/s of the tiny distillation (${d.student} <- resnet20, ${d.method}, batch ${d.batch}, ${d.trainLimit} training images; ` +
    `the distilled session's step(${DCHUNK}) calls after the first):`);
  const nd = nativeDistil.steps_per_sec;
  console.log(`  native      ${nd.toFixed(2).padStart(9)} steps/s  ${Math.round(nativeDistil.images_per_sec).toString().padStart(8)} images/s  (${nativeDistil.adapter})`);
  for (const kind of browsersWanted) {
    const r = measured[`${kind}_distil`];
    if (!r) continue;
    console.log(`  ${kind.padEnd(10)}  ${r.steps_per_sec.toFixed(2).padStart(9)} steps/s  ${Math.round(r.images_per_sec).toString().padStart(8)} images/s  ` +
      `(native / ${kind} = ${(nd / r.steps_per_sec).toFixed(1)}x)`);
  }
}
fs.writeFileSync(path.join(artifacts, 'measurements.json'),
  JSON.stringify({ native: nativeBench, native_distil: nativeDistil, ...measured }, null, 2) + '\n');
console.log(`screenshots and logs: ${path.relative(process.cwd(), artifacts) || artifacts}/`);

const passed = results.filter((r) => r[1]).length;
const failed = results.length - passed;
console.log(`\n${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
