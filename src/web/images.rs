//! The "Your data" tab's side of the wasm API: the images the user picked, decoded one file at a
//! time at the models' input size ([`crate::data::folder`], the CLI's `folder:` loader), and a
//! distillation session over them with the user's teacher.
//!
//! ```js
//! const set = new ImageSet({ size: 32, channels: 3, val_split: 0.1, name: 'shapes' });
//! for (const f of files) set.add(f.webkitRelativePath.split('/').slice(1).join('/'), new Uint8Array(await f.arrayBuffer()));
//! const summary = set.summary();     // { classes: [{ name, train, val }], bad: [{ file, error }], bytes, limit_bytes, ... }
//! const s = await Session.withImages(settings, { teacher: bytes }, set, skipBad);
//! const file = await s.modelFile();  // Uint8Array: the student's .safetensors, card in its metadata
//! ```

use super::{Session, js_error, js_to_json, json_to_js, to_js};
use crate::data::folder::{Added, FolderBuilder, FolderOptions};
use crate::session::{Assets, run::RunSession};
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::prelude::*;

/// The decoded pixels a page holds at most (one byte per pixel and channel): the wasm heap
/// also holds the training copy and the packed upload, so this keeps the total near 1 GiB.
pub const MAX_IMAGE_BYTES: usize = 256 << 20;

#[derive(serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ImageSetOptions {
    size: usize,
    channels: usize,
    val_split: f32,
    name: String,
}

impl Default for ImageSetOptions {
    fn default() -> Self {
        let d = FolderOptions::default();
        ImageSetOptions { size: d.size, channels: d.channels, val_split: d.val_split, name: "images".into() }
    }
}

/// An image folder the user picked, decoded as it arrives (so only the decoded pixels stay).
#[wasm_bindgen]
pub struct ImageSet {
    builder: FolderBuilder,
    name: String,
    bytes: usize,
    refused: usize,
}

#[wasm_bindgen]
impl ImageSet {
    /// `options`: `{ size, channels (1 or 3), val_split, name }` (defaults 32, 3, 0.1, "images").
    #[wasm_bindgen(constructor)]
    pub fn new(options: JsValue) -> Result<ImageSet, JsValue> {
        let o: ImageSetOptions = match js_to_json(&options)? {
            serde_json::Value::Null => ImageSetOptions::default(),
            v => serde_json::from_value(v).map_err(|e| js_error("UsageError", &format!("ImageSet options: {e}")))?,
        };
        let opts = FolderOptions { size: o.size, channels: o.channels, val_split: o.val_split };
        let builder = FolderBuilder::new(&o.name, opts).map_err(to_js)?;
        Ok(ImageSet { builder, name: o.name, bytes: 0, refused: 0 })
    }

    /// Add one file by its path inside the folder (`CLASS/FILE.png`, or `train/CLASS/...` and
    /// `val/CLASS/...`). Returns what became of it: `image`, `ignored` (not PNG/JPEG, or not in
    /// a class folder), `bad` (does not decode; listed in the summary) or `full` (over
    /// [`MAX_IMAGE_BYTES`]; counted in the summary's `refused`). Never throws for a bad file.
    pub fn add(&mut self, path: String, bytes: &[u8]) -> String {
        let o = self.builder.options();
        let each = o.channels * o.size * o.size;
        if self.bytes + each > MAX_IMAGE_BYTES {
            self.refused += 1;
            return "full".into();
        }
        match self.builder.add(&path, bytes) {
            Added::Image => {
                self.bytes += each;
                "image".into()
            }
            Added::Ignored => "ignored".into(),
            Added::Bad => "bad".into(),
        }
    }

    /// `{ classes: [{ name, train, val }], images, train, val, bad: [{ file, error }], ignored,
    /// bytes, limit_bytes, refused, layout }`.
    pub fn summary(&self) -> Result<JsValue, JsValue> {
        let mut v = serde_json::to_value(self.builder.summary()).map_err(|e| js_error("Error", &e.to_string()))?;
        if let Some(o) = v.as_object_mut() {
            o.insert("limit_bytes".into(), MAX_IMAGE_BYTES.into());
            o.insert("refused".into(), self.refused.into());
        }
        json_to_js(&v)
    }
}

#[wasm_bindgen]
impl ImageSet {
    /// Why training on this set would be refused (bad files unless `skip_bad`, no images, one
    /// class, nothing held out, more than fits), or `undefined` when it is usable.
    pub fn problem(&self, skip_bad: bool) -> Option<String> {
        if self.refused > 0 {
            let o = self.builder.options();
            return Some(format!(
                "{} image(s) did not fit: the page holds at most {} MiB of decoded images ({} images of {}x{}x{}); pick fewer images or a smaller input size",
                self.refused,
                MAX_IMAGE_BYTES >> 20,
                MAX_IMAGE_BYTES / (o.channels * o.size * o.size),
                o.channels,
                o.size,
                o.size
            ));
        }
        self.builder.check(skip_bad).err().map(|e| e.to_string())
    }

    /// The paths (as added) of the first `n` held-out images, in the order of the session's
    /// test set (`query('predict', { index })` indexes it).
    #[wasm_bindgen(js_name = heldOut)]
    pub fn held_out(&self, n: usize) -> Vec<String> {
        self.builder.held_out(n)
    }
}

#[wasm_bindgen]
impl Session {
    /// A `distill` session on an [`ImageSet`] with the user's teacher (`assets.teacher`, a
    /// safetensors state dict of the architecture `settings.teacher` names). Refused, with the
    /// reason, when the set has bad files (unless `skip_bad`), one class or nothing held out,
    /// or when the teacher's names or shapes do not match its architecture.
    #[wasm_bindgen(js_name = withImages)]
    pub async fn with_images(settings: JsValue, assets: JsValue, images: &ImageSet, skip_bad: bool) -> Result<Session, JsValue> {
        let ctx = super::context()?;
        let config = js_to_json(&settings)?;
        let files: Assets = super::assets_of(&assets);
        if let Some(p) = images.problem(skip_bad) {
            return Err(js_error("BadInputError", &p));
        }
        let (splits, _) = images.builder.finish(skip_bad).map_err(to_js)?;
        let s = RunSession::with_images(&ctx, &config, &files, splits, &images.name).map_err(to_js)?;
        ctx.scoped_async("creating the session", || ()).await.map_err(to_js)?;
        let boxed: Box<dyn crate::session::Session> = Box::new(s);
        Ok(Session { inner: Rc::new(RefCell::new(boxed)), kind: "distill" })
    }

    /// The trained student as a `.safetensors` file (PyTorch names, OFA branches excluded; its
    /// card, with class names and normalisation, in the metadata): resolves to a `Uint8Array`.
    #[wasm_bindgen(js_name = modelFile)]
    pub fn model_file(&self) -> js_sys::Promise {
        let inner = self.inner.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let mut s = inner.try_borrow_mut().map_err(|_| super::busy())?;
            let bytes = s.model_file().await.map_err(to_js)?;
            Ok(js_sys::Uint8Array::from(bytes.as_slice()).into())
        })
    }
}
