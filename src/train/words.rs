//! What OBoW's visual words look like: for a sample of a vocabulary's words, the test-set image
//! patches whose local features are nearest (`webdistill obow-words`, the page's `words`
//! query).

use super::config::TrainConfig;
use super::probe::sample_distinct;
use super::run::{STUDENT, TEACHER};
use crate::checkpoint::{self, FileTensor, LoadOptions};
use crate::data::{BatchSpec, Dataset, GpuData};
use crate::error::{Error, Result};
use crate::gpu::Context;
use crate::graph::{Graph, Plan};
use crate::models::{self, FeatureShape, ModelConfig};
use crate::nn::Fwd;
use crate::store::Store;
use rand::SeedableRng;
use std::collections::BTreeMap;

/// One image patch nearest to a word.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WordHit {
    pub distance: f32,
    /// Index in the test set.
    pub image: usize,
    /// Centre of the patch in image pixels (row, column), and its side.
    pub center: (f32, f32),
    pub side: usize,
}

/// For each of `words` (rows of `vocab` [K, C], a vocabulary of stage `stage` of `teacher`),
/// the `per_word` test-set locations whose local feature (the border-cropped map averaged over
/// 3x3 windows, as the words themselves are made) is nearest, with the image patch they cover.
/// `teacher` weights are PyTorch names; `img_size` is the size the run trained at.
#[allow(clippy::too_many_arguments)]
pub async fn word_patches(
    ctx: &Context,
    model: &str,
    teacher: &BTreeMap<String, FileTensor>,
    vocab: &[f32],
    stage: usize,
    words: &[usize],
    per_word: usize,
    test: &Dataset,
    mean: &[f32],
    std: &[f32],
    img_size: usize,
) -> Result<Vec<Vec<WordHit>>> {
    let size = if img_size == 0 { test.h } else { img_size };
    let mut store = Store::new(0);
    let net = models::build(model, &mut store, STUDENT, &ModelConfig::new(test.c, size, test.classes))?;
    let FeatureShape::Map { c, h, w } =
        *net.feature_shapes().get(stage).ok_or_else(|| Error::usage(format!("{model} has no stage {}", stage + 1)))?
    else {
        return Err(Error::usage("vocabulary pictures need CNN feature maps"));
    };
    if vocab.len() % c != 0 || h < 5 || w < 5 {
        return Err(Error::usage(format!("a vocabulary of {} values does not fit stage {} ({c}x{h}x{w})", vocab.len(), stage + 1)));
    }
    let counter = GpuData::counter(&mut store, "counter")?;
    let gpu = GpuData::upload(ctx, &mut store, test, "test")?;
    store.upload(ctx)?;
    checkpoint::load_into(&store, STUDENT, teacher, "teacher weights", &LoadOptions { allow_missing: vec![], ignore_unexpected: true })?;
    let eb = 50.min(test.n).max(1);
    let mut g = Graph::new();
    let cv = g.state(&counter);
    let spec = BatchSpec { size: test.h, out_size: size, ..BatchSpec::eval(eb).normalize(mean, std) };
    let b = g.batch(&gpu, &spec, cv, 0)?;
    let out = net.forward(&mut g, b.images, Fwd::eval())?;
    let fmap = g.keep(out.features[stage]);
    g.data_tick(cv)?;
    let plan = Plan::compile(ctx, &g, &mut store, "word patches")?;
    let stride = size as f32 / h as f32;
    let pad = (size - test.h) as f32 / 2.0;
    let side = ((5.0 * stride).round() as usize).clamp(4, test.h);
    let (ah, aw) = (h - 4, w - 4);
    let mut hits: Vec<Vec<WordHit>> = vec![Vec::new(); words.len()];
    for batch in 0..test.n.div_ceil(eb) {
        plan.run(1)?;
        let f = plan.request(&[fmap])?.take(ctx).await?.remove(0);
        for r in 0..eb {
            let image = batch * eb + r;
            if image >= test.n {
                break;
            }
            let img = &f[r * c * h * w..(r + 1) * c * h * w];
            for y in 0..ah {
                for x in 0..aw {
                    let mut feat = vec![0.0f32; c];
                    for (ch, v) in feat.iter_mut().enumerate() {
                        let mut acc = 0.0;
                        for dy in 0..3 {
                            for dx in 0..3 {
                                acc += img[(ch * h + y + 1 + dy) * w + x + 1 + dx];
                            }
                        }
                        *v = acc / 9.0;
                    }
                    for (wi, &word) in words.iter().enumerate() {
                        let wv = &vocab[word * c..(word + 1) * c];
                        let d: f32 = feat.iter().zip(wv).map(|(a, b)| (a - b) * (a - b)).sum();
                        let list = &mut hits[wi];
                        if list.len() < per_word || d < list.last().map(|h| h.distance).unwrap_or(f32::INFINITY) {
                            // Centre of the 3x3 window: map cell (y + 2, x + 2) of the full map.
                            let cy = (y as f32 + 2.5) * stride - pad;
                            let cx = (x as f32 + 2.5) * stride - pad;
                            // One patch per image and word: keep the nearest location only.
                            if let Some(pos) = list.iter().position(|h| h.image == image) {
                                if list[pos].distance <= d {
                                    continue;
                                }
                                list.remove(pos);
                            }
                            let at = list.partition_point(|h| h.distance <= d);
                            list.insert(at, WordHit { distance: d, image, center: (cy, cx), side });
                            list.truncate(per_word);
                        }
                    }
                }
            }
        }
    }
    Ok(hits)
}

/// One image tile of a word-patch grid: `c` (1 or 3) channels of `side` x `side` u8 pixels, CHW.
#[derive(Clone, Debug, PartialEq)]
pub struct Tile {
    pub c: usize,
    pub side: usize,
    pub pixels: Vec<u8>,
}

/// The `side` x `side` patch of image `i` of `ds` centred at `center` (pixels), zero outside.
pub fn patch_tile(ds: &Dataset, i: usize, center: (f32, f32), side: usize) -> Tile {
    let (c, h, w) = (ds.c, ds.h, ds.w);
    let img = &ds.images[i * c * h * w..(i + 1) * c * h * w];
    let y0 = (center.0 - side as f32 / 2.0).round() as isize;
    let x0 = (center.1 - side as f32 / 2.0).round() as isize;
    let mut px = vec![0u8; c * side * side];
    for ch in 0..c {
        for y in 0..side {
            for x in 0..side {
                let (sy, sx) = (y0 + y as isize, x0 + x as isize);
                if sy >= 0 && sx >= 0 && (sy as usize) < h && (sx as usize) < w {
                    px[(ch * side + y) * side + x] = img[(ch * h + sy as usize) * w + sx as usize];
                }
            }
        }
    }
    Tile { c, side, pixels: px }
}

/// Tiles in rows as one RGBA image (width, height, pixels): each tile scaled up `scale` times
/// (nearest neighbour), 2-px gaps on a dark background. Used by `obow-words` (PNG) and the web
/// session's `words` query.
pub fn tile_grid_rgba(rows: &[Vec<Tile>], scale: usize) -> Result<(usize, usize, Vec<u8>)> {
    let scale = scale.max(1);
    let cell = rows.iter().flatten().map(|t| t.side).max().unwrap_or(1) * scale;
    let cols = rows.iter().map(|r| r.len()).max().unwrap_or(0).max(1);
    let gap = 2;
    let (w, h) = (cols * (cell + gap) + gap, rows.len().max(1) * (cell + gap) + gap);
    let mut img: Vec<u8> = [40u8, 40, 40, 255].repeat(w * h);
    for (ri, row) in rows.iter().enumerate() {
        for (ci, t) in row.iter().enumerate() {
            if t.pixels.len() != t.c * t.side * t.side || !(t.c == 1 || t.c == 3) {
                return Err(Error::usage(format!("tile of {} bytes is not {}x{}x{}", t.pixels.len(), t.c, t.side, t.side)));
            }
            let (x0, y0) = (gap + ci * (cell + gap), gap + ri * (cell + gap));
            for y in 0..t.side * scale {
                for x in 0..t.side * scale {
                    let (sy, sx) = (y / scale, x / scale);
                    let o = ((y0 + y) * w + x0 + x) * 4;
                    for ch in 0..3 {
                        img[o + ch] = t.pixels[(ch.min(t.c - 1) * t.side + sy) * t.side + sx];
                    }
                }
            }
        }
    }
    Ok((w, h, img))
}

/// The picture of a sample of an OBoW run's visual words: one row of nearest test patches per
/// word.
pub struct WordGrid {
    pub rows: Vec<Vec<Tile>>,
    /// 0-based BoW level and backbone stage.
    pub level: usize,
    pub stage: usize,
    /// Patch side in pixels.
    pub side: usize,
}

/// Which words [`word_grid`] shows.
#[derive(Clone, Debug, PartialEq)]
pub struct WordRequest {
    /// BoW level (1-based; None: the last).
    pub level: Option<usize>,
    /// Words to show, drawn at random from `seed`.
    pub words: usize,
    /// Nearest test patches per word.
    pub per_word: usize,
    pub seed: u64,
}

/// [`word_patches`] for the words `req` asks for of an OBoW run's state (`cfg` is the run's
/// config; `source` names the state in errors), as image tiles.
#[allow(clippy::too_many_arguments)]
pub async fn word_grid(
    ctx: &Context,
    cfg: &TrainConfig,
    state: &BTreeMap<String, FileTensor>,
    source: &str,
    test: &Dataset,
    mean: &[f32],
    std: &[f32],
    req: &WordRequest,
) -> Result<WordGrid> {
    let WordRequest { level, words, per_word, seed } = req.clone();
    let ocfg = cfg.obow.clone().ok_or_else(|| Error::usage("not an OBoW run"))?;
    let key = |i: usize| format!("{}.bow_extractor.bow_extractor.{i}._embedding", crate::distill::obow::PREFIX);
    let n_levels = (0..).take_while(|&i| state.contains_key(&key(i))).count();
    if n_levels == 0 {
        return Err(Error::file(source, "no OBoW vocabulary in this file (give an obow run's state.safetensors)"));
    }
    let li = level.map(|l| l.saturating_sub(1)).unwrap_or(n_levels - 1);
    if li >= n_levels {
        return Err(Error::usage(format!("level {}: the run has {n_levels} BoW levels", li + 1)));
    }
    let vocab = &state[&key(li)];
    let k = vocab.shape[0];
    let teacher: BTreeMap<String, FileTensor> =
        state.iter().filter_map(|(n, t)| n.strip_prefix(TEACHER).map(|r| (r.to_string(), t.clone()))).collect();
    let size = if cfg.img_size == 0 { test.h } else { cfg.img_size };
    // Which stage the level is: the config's levels, or the model's last ones.
    let n_stages =
        models::build(&cfg.model, &mut Store::new(0), "x", &ModelConfig::new(test.c, size, test.classes))?.feature_shapes().len();
    let stages: Vec<usize> = if ocfg.levels.is_empty() { (n_stages + 1 - n_levels..=n_stages).collect() } else { ocfg.levels.clone() };
    let stage = stages[li] - 1;
    let mut rng = rand::rngs::Xoshiro256PlusPlus::seed_from_u64(seed);
    let picked = sample_distinct(&mut rng, k, words.min(k));
    let hits = word_patches(ctx, &cfg.model, &teacher, &vocab.data, stage, &picked, per_word, test, mean, std, size).await?;
    let rows = hits.iter().map(|list| list.iter().map(|h| patch_tile(test, h.image, h.center, h.side)).collect()).collect();
    let side = hits.iter().flatten().map(|h| h.side).max().unwrap_or(0);
    Ok(WordGrid { rows, level: li, stage, side })
}

/// [`word_grid`] of a finished OBoW run: `weights` is its directory or its `state.safetensors`
/// (the run's `config.toml` beside it names the model and data); the patches come from the
/// test split of `data` (default: the run's), its first `test_limit` images (0: all). Writes the
/// grid as a PNG to `out` and returns it with the run's config.
#[cfg(not(target_arch = "wasm32"))]
pub fn picture_of_run(
    ctx: &Context,
    weights: &std::path::Path,
    data: Option<&str>,
    out: &std::path::Path,
    req: &WordRequest,
    test_limit: usize,
) -> Result<(WordGrid, TrainConfig)> {
    let (state_path, dir) = if weights.is_dir() {
        (weights.join("state.safetensors"), weights.to_path_buf())
    } else {
        (weights.to_path_buf(), weights.parent().map(|p| p.to_path_buf()).unwrap_or_default())
    };
    let cfg_path = dir.join("config.toml");
    let text = std::fs::read_to_string(&cfg_path)
        .map_err(|e| Error::file(&cfg_path, format!("{e} (obow-words reads the run's config.toml next to its state.safetensors)")))?;
    let cfg = TrainConfig::from_toml(&text, &cfg_path.display().to_string())?;
    if cfg.obow.is_none() {
        return Err(Error::file(&cfg_path, "not an OBoW run"));
    }
    let state = checkpoint::read(&state_path)?;
    let splits = super::runner::load_data(data.unwrap_or(&cfg.data), &cfg)?;
    let test = if test_limit > 0 { splits.test.head(test_limit) } else { splits.test.clone() };
    let (mean, std) = splits.train.mean_std();
    let grid = pollster::block_on(word_grid(ctx, &cfg, &state, &state_path.display().to_string(), &test, &mean, &std, req))?;
    super::report::patch_grid(out, &grid.rows, (48 / grid.side.max(1)).max(1))?;
    Ok((grid, cfg))
}
