//! Checkpoints as `.safetensors`, named exactly like the PyTorch state dicts, so files move
//! between webdistill and PyTorch (`load_state_dict(strict=True)`) unchanged.
//!
//! Loading checks every name, shape and dtype first and reports all problems at once; f16,
//! bf16 and f64 are converted to f32. Saving writes a temporary file and renames it, so a
//! crash never leaves a half-written checkpoint.

use crate::error::{Error, Result};
use crate::graph::DType;
use crate::store::{Param, StateRef, Store, Which};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use std::collections::{BTreeMap, HashMap};

/// One tensor read from a file, converted to f32 (integers keep their values).
#[derive(Clone, Debug)]
pub struct FileTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// PyTorch stores BatchNorm's counter as a 0-dim int64; the store keeps it as U32 [1].
fn is_scalar_counter(name: &str) -> bool {
    name.ends_with("num_batches_tracked")
}

fn to_f32(name: &str, v: &TensorView, path: &str) -> Result<Vec<f32>> {
    let b = v.data();
    let out: Vec<f32> = match v.dtype() {
        Dtype::F32 => bytemuck::pod_collect_to_vec(b),
        Dtype::F16 => bytemuck::pod_collect_to_vec::<u8, u16>(b).into_iter().map(|h| half::f16::from_bits(h).to_f32()).collect(),
        Dtype::BF16 => bytemuck::pod_collect_to_vec::<u8, u16>(b).into_iter().map(|h| half::bf16::from_bits(h).to_f32()).collect(),
        Dtype::F64 => bytemuck::pod_collect_to_vec::<u8, f64>(b).into_iter().map(|x| x as f32).collect(),
        Dtype::I64 => bytemuck::pod_collect_to_vec::<u8, i64>(b).into_iter().map(|x| x as f32).collect(),
        Dtype::I32 => bytemuck::pod_collect_to_vec::<u8, i32>(b).into_iter().map(|x| x as f32).collect(),
        Dtype::U8 => b.iter().map(|&x| x as f32).collect(),
        d => return Err(Error::file(path, format!("tensor '{name}' has dtype {d:?}, which cannot be converted to f32"))),
    };
    Ok(out)
}

/// Parse safetensors bytes into f32 tensors. `path` names the source in errors.
pub fn parse(bytes: &[u8], path: &str) -> Result<BTreeMap<String, FileTensor>> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| Error::file(path, format!("not a valid safetensors file: {e}")))?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let data = to_f32(&name, &view, path)?;
        out.insert(name, FileTensor { shape: view.shape().to_vec(), data });
    }
    Ok(out)
}

/// The string metadata of safetensors bytes (`__metadata__`; empty when there is none).
pub fn metadata(bytes: &[u8], path: &str) -> Result<BTreeMap<String, String>> {
    let (_, m) = SafeTensors::read_metadata(bytes).map_err(|e| Error::file(path, format!("not a valid safetensors file: {e}")))?;
    Ok(m.metadata().as_ref().map(|h| h.iter().map(|(k, v)| (k.clone(), v.clone())).collect()).unwrap_or_default())
}

/// Read a safetensors file.
#[cfg(not(target_arch = "wasm32"))]
pub fn read(path: &std::path::Path) -> Result<BTreeMap<String, FileTensor>> {
    let bytes = std::fs::read(path).map_err(|e| Error::file(path, e))?;
    parse(&bytes, &path.display().to_string())
}

/// Store tensors under `prefix`, with their names relative to it.
pub fn entries(store: &Store, prefix: &str) -> (Vec<(String, Param)>, Vec<(String, StateRef)>) {
    let strip = |n: &str| n.strip_prefix(prefix).map(|s| s.to_string());
    let params = store.params().iter().filter_map(|p| strip(p.name()).map(|n| (n, p.clone()))).collect();
    let states = store.states().iter().filter_map(|s| strip(s.name()).map(|n| (n, s.clone()))).collect();
    (params, states)
}

/// Options for [`load_into`].
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Tensors (relative names) that may be missing from the file, by prefix (e.g. "fc." to
    /// fine-tune a backbone with a new head). Empty: every tensor must be present.
    pub allow_missing: Vec<String>,
    /// Ignore tensors in the file that the model does not have.
    pub ignore_unexpected: bool,
}

/// Load `tensors` into the store entries under `prefix`. Every mismatch is reported in one error.
pub fn load_into(store: &Store, prefix: &str, tensors: &BTreeMap<String, FileTensor>, source: &str, opts: &LoadOptions) -> Result<usize> {
    let (params, states) = entries(store, prefix);
    let mut problems = Vec::new();
    let mut known: HashMap<&str, Vec<usize>> = HashMap::new();
    for (n, p) in &params {
        known.insert(n, p.shape().to_vec());
    }
    for (n, s) in &states {
        known.insert(n, s.shape().to_vec());
    }
    for (n, shape) in &known {
        match tensors.get(*n) {
            None if opts.allow_missing.iter().any(|a| n.starts_with(a.as_str())) => {}
            None => problems.push(format!("missing tensor '{n}' (expected shape {shape:?})")),
            Some(t) => {
                let ok = t.shape == *shape || (is_scalar_counter(n) && t.shape.is_empty() && shape == &[1]);
                if !ok {
                    problems.push(format!("tensor '{n}' has shape {:?} in the file, the model expects {shape:?}", t.shape));
                }
            }
        }
    }
    if !opts.ignore_unexpected {
        for n in tensors.keys() {
            if !known.contains_key(n.as_str()) {
                problems.push(format!("unexpected tensor '{n}' {:?} (not in this model)", tensors[n].shape));
            }
        }
    }
    if !problems.is_empty() {
        return Err(Error::file(source, format!("{} problem(s) loading into the model:\n  {}", problems.len(), problems.join("\n  "))));
    }
    let mut loaded = 0;
    for (n, p) in &params {
        if let Some(t) = tensors.get(n) {
            store.write_param(p, Which::Value, &t.data)?;
            loaded += 1;
        }
    }
    for (n, s) in &states {
        if let Some(t) = tensors.get(n) {
            store.write_state(s, &t.data)?;
            loaded += 1;
        }
    }
    Ok(loaded)
}

/// Load a file into the model under `prefix`.
#[cfg(not(target_arch = "wasm32"))]
pub fn load(store: &Store, prefix: &str, path: &std::path::Path, opts: &LoadOptions) -> Result<usize> {
    let t = read(path)?;
    load_into(store, prefix, &t, &path.display().to_string(), opts)
}

type Item = (String, Dtype, Vec<usize>, Vec<u8>);

/// Read the tensors under `prefix` (names relative to it) that pass `keep`; with `slots`, also
/// every optimizer slot of those parameters, named "<slot>/<name>".
async fn collect(store: &Store, prefix: &str, keep: &dyn Fn(&str) -> bool, slots: bool) -> Result<Vec<Item>> {
    let (params, states) = entries(store, prefix);
    let mut items: Vec<Item> = Vec::new();
    let slot_names = if slots { store.slot_names() } else { Vec::new() };
    for (n, p) in params.into_iter().filter(|(n, _)| keep(n)) {
        let v = store.read_param_async(&p, Which::Value).await?;
        items.push((n.clone(), Dtype::F32, p.shape().to_vec(), bytemuck::cast_slice(&v).to_vec()));
        for sn in &slot_names {
            let v = store.read_param_async(&p, Which::Slot(sn)).await?;
            items.push((format!("{sn}/{n}"), Dtype::F32, p.shape().to_vec(), bytemuck::cast_slice(&v).to_vec()));
        }
    }
    for (n, s) in states.into_iter().filter(|(n, _)| keep(n)) {
        let v = store.read_state_async(&s).await?;
        match s.dtype() {
            DType::F32 => items.push((n, Dtype::F32, s.shape().to_vec(), bytemuck::cast_slice(&v).to_vec())),
            DType::U32 => {
                let ints: Vec<i64> = v.iter().map(|&x| x as i64).collect();
                let shape = if is_scalar_counter(&n) && s.shape() == [1] { vec![] } else { s.shape().to_vec() };
                items.push((n, Dtype::I64, shape, bytemuck::cast_slice(&ints).to_vec()));
            }
        }
    }
    Ok(items)
}

fn serialize(items: &[Item], metadata: &BTreeMap<String, String>) -> Result<Vec<u8>> {
    let views: Vec<(String, TensorView)> = items
        .iter()
        .map(|(n, d, s, b)| Ok((n.clone(), TensorView::new(*d, s.clone(), b).map_err(|e| Error::usage(format!("tensor '{n}': {e}")))?)))
        .collect::<Result<_>>()?;
    let meta: HashMap<String, String> = metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let mut bytes = safetensors::serialize(views, Some(meta)).map_err(|e| Error::usage(format!("serialising a checkpoint: {e}")))?;
    sort_header(&mut bytes);
    Ok(bytes)
}

/// Rewrite a safetensors header with its keys in sorted order. The crate writes the metadata
/// from a `HashMap`, whose order changes from one process to the next, so the same weights
/// and metadata would give different bytes; sorted, a file is a function of its contents. The
/// same keys and values in another order have the same length, so the header is rewritten in
/// place (its padding kept); anything unexpected leaves the bytes as they were.
fn sort_header(bytes: &mut [u8]) {
    let Some(n) = bytes.get(..8).map(|b| u64::from_le_bytes(b.try_into().unwrap()) as usize) else { return };
    let Some(header) = bytes.get(8..8usize.saturating_add(n)) else { return };
    let Ok(serde_json::Value::Object(top)) = serde_json::from_slice::<serde_json::Value>(header) else { return };
    let mut sorted: BTreeMap<&str, serde_json::Value> = BTreeMap::new();
    for (k, v) in &top {
        let v = match v {
            serde_json::Value::Object(m) => serde_json::to_value(m.iter().collect::<BTreeMap<_, _>>()).unwrap_or_else(|_| v.clone()),
            v => v.clone(),
        };
        sorted.insert(k, v);
    }
    let Ok(text) = serde_json::to_string(&sorted) else { return };
    if text.len() <= n {
        bytes[8..8 + text.len()].copy_from_slice(text.as_bytes());
        bytes[8 + text.len()..8 + n].fill(b' ');
    }
}

/// Serialise the tensors under `prefix` (relative names) with metadata: a model checkpoint
/// with exactly the PyTorch state-dict names.
pub async fn to_bytes(store: &Store, prefix: &str, metadata: &BTreeMap<String, String>) -> Result<Vec<u8>> {
    serialize(&collect(store, prefix, &|_| true, false).await?, metadata)
}

/// Everything needed to resume a run: every tensor whose name passes `keep` and every
/// optimizer slot, by full store name.
pub async fn state_to_bytes(store: &Store, metadata: &BTreeMap<String, String>, keep: &dyn Fn(&str) -> bool) -> Result<Vec<u8>> {
    serialize(&collect(store, "", keep, true).await?, metadata)
}

/// Restore what [`state_to_bytes`] wrote. Every store tensor that passes `keep` (and its
/// optimizer slots) must be present with its shape; all problems are reported at once.
pub fn load_state(store: &Store, tensors: &BTreeMap<String, FileTensor>, source: &str, keep: &dyn Fn(&str) -> bool) -> Result<()> {
    let mut problems = Vec::new();
    let slots = store.slot_names();
    let mut check = |name: String, shape: &[usize]| match tensors.get(&name) {
        None => problems.push(format!("missing tensor '{name}'")),
        Some(t) if t.shape != shape && !(is_scalar_counter(&name) && t.shape.is_empty()) => {
            problems.push(format!("tensor '{name}' has shape {:?}, the run expects {shape:?}", t.shape))
        }
        _ => {}
    };
    for p in store.params().iter().filter(|p| keep(p.name())) {
        check(p.name().to_string(), p.shape());
        for sn in &slots {
            check(format!("{sn}/{}", p.name()), p.shape());
        }
    }
    for s in store.states().iter().filter(|s| keep(s.name())) {
        check(s.name().to_string(), s.shape());
    }
    if !problems.is_empty() {
        return Err(Error::file(
            source,
            format!("cannot resume from this state ({} problem(s)):\n  {}", problems.len(), problems.join("\n  ")),
        ));
    }
    for p in store.params().iter().filter(|p| keep(p.name())) {
        store.write_param(p, Which::Value, &tensors[p.name()].data)?;
        for sn in &slots {
            store.write_param(p, Which::Slot(sn), &tensors[&format!("{sn}/{}", p.name())].data)?;
        }
    }
    for s in store.states().iter().filter(|s| keep(s.name())) {
        store.write_state(s, &tensors[s.name()].data)?;
    }
    Ok(())
}

/// Write `bytes` to `path` atomically: a temporary file in the same folder, synced, renamed.
#[cfg(not(target_arch = "wasm32"))]
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, e))?;
    let tmp = dir.join(format!(".{}.tmp-{}", path.file_name().and_then(|f| f.to_str()).unwrap_or("checkpoint"), std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        crash_test::maybe_abort_in_write(&mut f, bytes)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename itself survives a power cut once the folder is synced (where it can be).
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok::<(), std::io::Error>(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::file(path, e));
    }
    Ok(())
}

/// The crash tests' fault: with `WEBDISTILL_CRASH_IN_WRITE=N` in the environment, the N-th
/// atomic write of the process writes half its bytes and then aborts, as a kill -9 in the
/// middle of a checkpoint would (tests/crash.rs); without it, nothing happens.
#[cfg(not(target_arch = "wasm32"))]
mod crash_test {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static WRITES: AtomicUsize = AtomicUsize::new(0);

    pub fn maybe_abort_in_write(f: &mut std::fs::File, bytes: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        let Some(n) = std::env::var("WEBDISTILL_CRASH_IN_WRITE").ok().and_then(|v| v.parse::<usize>().ok()) else { return Ok(()) };
        if WRITES.fetch_add(1, Ordering::SeqCst) + 1 == n {
            f.write_all(&bytes[..bytes.len() / 2])?;
            f.sync_all()?;
            std::process::abort();
        }
        Ok(())
    }
}

/// Save the model under `prefix` to `path` (atomically).
#[cfg(not(target_arch = "wasm32"))]
pub fn save(store: &Store, prefix: &str, path: &std::path::Path, metadata: &BTreeMap<String, String>) -> Result<()> {
    let bytes = pollster::block_on(to_bytes(store, prefix, metadata))?;
    write_atomic(path, &bytes)
}

#[cfg(test)]
mod header_tests {
    use super::*;

    #[test]
    fn the_same_tensors_and_metadata_give_the_same_bytes() {
        let items: Vec<Item> = vec![("w".into(), Dtype::F32, vec![2], bytemuck::cast_slice(&[1.0f32, 2.0]).to_vec())];
        let meta: BTreeMap<String, String> = (0..12).map(|i| (format!("key{i}"), format!("value {i}"))).collect();
        // HashMaps of one process iterate in different orders: many serialisations, one result.
        let first = serialize(&items, &meta).unwrap();
        for _ in 0..20 {
            assert!(serialize(&items, &meta).unwrap() == first, "checkpoint bytes depend on hash order");
        }
        assert_eq!(metadata(&first, "t").unwrap(), meta);
        assert_eq!(parse(&first, "t").unwrap()["w"].data, vec![1.0, 2.0]);
    }
}
