// The "Your data" tab: the user's teacher (a .safetensors file and its architecture) and image
// folder (one subfolder per class), decoded file by file into a wd.ImageSet at the models'
// input size (the same decoder and split as the CLI's --data folder:DIR); then the Distil
// tab's run (a distilled and a labels-only student, live curves, CKA) on those images, after
// the teacher's own held-out accuracy; and a Download of the student (.safetensors, card in
// its metadata) and its card (.json).
//
// Test hook: window.__yours (set when a run reaches its step count: the Distil result plus
// teacher, summary, predictions [{ file, logits }] for the first held-out images, files).

import { $, el, percent } from './dom.js';
import { showError } from './errors.js';
import { DistilTab } from './distil.js';
import { wd } from './wasm.js';

// Students offered (small, any input size); the teacher may be any registry model.
const STUDENTS = ['vit_micro_p4', 'vit_nano_p4', 'mixer_micro_p4', 'mixer_nano_p4', 'resnet8', 'mobilenetv2_cifar'];
const THUMBS = 4; // thumbnails per class
const PREDICTIONS = 8; // held-out images the test hook gets logits for

const mib = (b) => `${(b / 1048576).toFixed(1)} MiB`;

/** The path of a picked file inside the folder picked (its first component dropped). */
const inside = (f) => (f.webkitRelativePath || f.name).split('/').slice(1).join('/');

function download(bytes, name, type) {
  const url = URL.createObjectURL(new Blob([bytes], { type }));
  const a = el('a', { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

class YoursTab extends DistilTab {
  constructor(panel, app) {
    super(panel, app, { prefix: 'yours', short: 'y', hook: '__yours' });
    this.panel = panel;
    this.set = null; // the wd.ImageSet of the files picked
    this.summary = null;
    this.teacherBytes = null;
    this.decoding = null;
    const f = this.form.elements;
    const models = wd.models();
    for (const m of models) f.teacher.append(el('option', { value: m.name }, `${m.name} (${m.in_chans}x${m.img_size}px by default)`));
    f.teacher.value = models.some((m) => m.name === 'resnet20') ? 'resnet20' : models[0].name;
    for (const s of STUDENTS.filter((n) => models.some((m) => m.name === n))) f.student.append(el('option', { value: s }, s));
    this.imagesState = $('#y-images-state', panel);
    this.problem = $('#y-problem', panel);
    this.table = $('#y-classes', panel);
    this.teacherAcc = $('#y-teacher-acc', panel);
    this.downloadBtn = $('#y-download', panel);
    f.teacherFile.addEventListener('change', () => this.readTeacher());
    // A new folder, size, channel count or split decodes the images again.
    for (const k of ['folder', 'size', 'channels', 'valPercent']) f[k].addEventListener('change', () => this.decode());
    f.skipBad.addEventListener('change', () => this.showProblem());
    this.downloadBtn.addEventListener('click', () => this.download().catch((e) => showError(e, 'Could not save the student')));
    this.controls.ready();
  }

  async readTeacher() {
    const file = this.form.elements.teacherFile.files[0];
    this.teacherBytes = file ? new Uint8Array(await file.arrayBuffer()) : null;
    this.teacherName = file ? file.name : null;
  }

  /** Decodes the picked folder into a new ImageSet (one file at a time) and shows its summary. */
  decode() {
    this.decoding = this.decodeNow().catch((e) => {
      showError(e, 'Could not read the images');
      this.imagesState.textContent = 'The images could not be read.';
    });
    return this.decoding;
  }

  async decodeNow() {
    const f = this.form.elements;
    const files = [...f.folder.files];
    if (this.set) this.set.free();
    this.set = null;
    this.summary = null;
    if (!files.length) {
      this.imagesState.textContent = 'No images picked yet.';
      return;
    }
    const root = (files[0].webkitRelativePath || '').split('/')[0] || 'images';
    const size = parseInt(f.size.value, 10);
    const channels = parseInt(f.channels.value, 10);
    const set = new wd.ImageSet({ size, channels, val_split: parseFloat(f.valPercent.value) / 100, name: root });
    files.sort((a, b) => (inside(a) < inside(b) ? -1 : 1));
    this.firstFiles = {};
    for (const [i, file] of files.entries()) {
      if (i % 50 === 0) this.imagesState.textContent = `Decoding ${i} of ${files.length} files…`;
      const path = inside(file);
      const got = set.add(path, new Uint8Array(await file.arrayBuffer()));
      if (got === 'image') {
        const cls = path.split('/').slice(-2)[0];
        (this.firstFiles[cls] ||= []).length < THUMBS && this.firstFiles[cls].push(file);
      }
    }
    this.set = set;
    this.summary = set.summary();
    this.files = files;
    this.showSummary(root, size, channels);
  }

  showSummary(root, size, channels) {
    const s = this.summary;
    const body = $('tbody', this.table);
    body.textContent = '';
    for (const c of s.classes) {
      const thumbs = el('span', { class: 'thumbs' });
      for (const file of this.firstFiles[c.name] || []) {
        thumbs.append(el('img', { src: URL.createObjectURL(file), alt: c.name, width: 32, height: 32 }));
      }
      body.append(el('tr', {}, el('td', {}, c.name), el('td', {}, String(c.train)), el('td', {}, String(c.val)), el('td', {}, thumbs)));
    }
    this.table.hidden = s.classes.length === 0;
    const extra = [s.bad.length && `${s.bad.length} unreadable`, s.ignored && `${s.ignored} other files ignored`].filter(Boolean);
    this.imagesState.textContent = `${root}: ${s.images} images in ${s.classes.length} classes (${s.train} training, ${s.val} held out)` +
      `${extra.length ? `, ${extra.join(', ')}` : ''}; held at ${channels}x${size}x${size}: ${mib(s.bytes)} of the ${mib(s.limit_bytes)} the page keeps.`;
    this.showProblem();
  }

  /** The reason the images cannot be trained on, shown (with the unreadable files), or null. */
  showProblem() {
    if (!this.set) return null;
    const p = this.set.problem(this.form.elements.skipBad.checked);
    this.problem.textContent = '';
    if (p) {
      this.problem.append(el('p', {}, p));
      if (this.summary.bad.length) {
        const list = el('ul', {});
        for (const b of this.summary.bad.slice(0, 20)) list.append(el('li', {}, `${b.file}: ${b.error}`));
        this.problem.append(list);
      }
    }
    this.problem.hidden = !p;
    return p;
  }

  settings() {
    const f = this.form.elements;
    const s = {
      student: f.student.value, teacher: f.teacher.value, method: f.method.value, eps: parseFloat(f.eps.value),
      batch: parseInt(f.batch.value, 10), lr: parseFloat(f.lr.value), train_limit: 0, test_limit: 0,
    };
    const train = this.summary ? this.summary.train : 1;
    s.epochs = Math.max(1, Math.ceil((parseInt(f.steps.value, 10) * s.batch) / Math.max(1, train)));
    return s;
  }

  async createSession(cfg, method) {
    if (this.decoding) await this.decoding;
    if (!this.teacherBytes && method !== 'none') throw new Error('pick the teacher\'s .safetensors file first');
    if (!this.set) throw new Error('pick a folder of images first (one subfolder of PNG/JPEG images per class)');
    const problem = this.showProblem();
    if (problem) throw new Error(problem);
    const assets = this.teacherBytes ? { teacher: this.teacherBytes } : {};
    const skip = this.form.elements.skipBad.checked;
    return this.app.gpu(() => wd.Session.withImages({ ...cfg, method }, assets, this.set, skip));
  }

  async afterBuild() {
    this.downloadBtn.disabled = true;
    this.teacherAcc.textContent = '';
    const s = this.d.sessions.distilled;
    if (this.form.elements.method.value === 'none') return;
    this.out.state.textContent = 'Measuring the teacher on the held-out images…';
    const t = await this.app.gpu(() => s.query('teacher_eval', {}));
    this.teacher = t;
    this.teacherAcc.textContent = `Teacher ${this.form.elements.teacher.value} (${this.teacherName}) on the ${t.examples} held-out images: ` +
      `${percent(t.accuracy)} top-1${t.accuracy < 1.5 / this.summary.classes.length ? ' (near chance: is it the right architecture, size and channels for these images?)' : ''}.`;
  }

  async afterFinish() {
    this.downloadBtn.disabled = false;
    // The student's logits for the first held-out images (the test compares them with `webdistill predict`).
    const s = this.d.sessions.distilled;
    const files = this.set.heldOut(PREDICTIONS);
    this.predictions = [];
    for (const [index, file] of files.entries()) {
      const p = await this.app.gpu(() => s.query('predict', { index }));
      this.predictions.push({ file, logits: p.student_logits });
    }
  }

  result(cka) {
    return { ...super.result(cka), teacher: this.teacher || null, summary: this.summary, predictions: this.predictions };
  }

  async download() {
    const s = this.d.sessions.distilled;
    if (!s) throw new Error('train a student first');
    const bytes = await this.app.gpu(() => s.modelFile());
    const card = await this.app.gpu(() => s.query('card', {}));
    const name = `${card.model}_${card.method}`;
    // The card (what `webdistill predict --card` reads) and how the student was trained.
    const ev = this.evals.distilled;
    const training = { ...this.settings(), steps: this.step, held_out_accuracy: ev ? ev.accuracy : null,
      teacher_accuracy: this.teacher ? this.teacher.accuracy : null, teacher_file: this.teacherName, adapter: $('#adapter').textContent };
    download(bytes, `${name}.safetensors`, 'application/octet-stream');
    download(JSON.stringify({ ...card, training }, null, 2), `${name}.json`, 'application/json');
    this.out.state.textContent = `Saved ${name}.safetensors and ${name}.json.`;
  }

  async free() {
    await super.free();
    if (this.downloadBtn) this.downloadBtn.disabled = true;
  }
}

export function mountYours(panel, app) {
  new YoursTab(panel, app);
}
