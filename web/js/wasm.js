// The wasm build of the library (web/pkg, made by web/build), the queue that keeps GPU calls
// one at a time, and the assets the distillation and OBoW sessions need.

import initWasm, * as wd from '../pkg/webdistill.js';

export { initWasm, wd };

/** Run GPU calls one at a time: a session answers one call at a time (a second one while the
 * first is in flight is rejected), and the Distil and "Try it" tabs share sessions. */
export function makeGpuQueue() {
  let tail = Promise.resolve();
  return (f) => {
    const r = tail.then(f);
    tail = r.catch(() => {});
    return r;
  };
}

const TEACHER_URL = 'assets/resnet20_fmnist.safetensors';
const DATA_DIR = 'data/'; // the bundled Fashion-MNIST subset's files (wd.bundledFiles())

async function fetchBytes(url, what) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${what} (${url}) could not be loaded: HTTP ${r.status} (was web/build run?)`);
  return new Uint8Array(await r.arrayBuffer());
}

/** The assets of a distillation or OBoW session, fetched once: the shipped teacher's
 * safetensors (`teacher`) and the bundled data set's files (named as wd.bundledFiles()), all
 * copied next to the page by web/build. */
export function loadAssets(app) {
  if (!app.assets) {
    const files = wd.bundledFiles();
    app.assets = Promise.all([
      fetchBytes(TEACHER_URL, "the teacher's weights"),
      ...files.map((f) => fetchBytes(DATA_DIR + f, 'the bundled Fashion-MNIST subset')),
    ]).then(([teacher, ...data]) => ({ teacher, ...Object.fromEntries(files.map((f, i) => [f, data[i]])) }));
    app.assets.catch(() => { app.assets = null; }); // try again next time
  }
  return app.assets;
}
