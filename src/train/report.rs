//! What a run leaves behind: `metrics.jsonl` (one record per epoch), `steps.jsonl` (the
//! training loss of every chunk of steps the loop reads), PNG curves, and the CKA
//! heatmap. Charts use plotters with an embedded DejaVu Sans (assets/), so they render the
//! same on every machine without system fonts.

use crate::error::{Error, Result};
use plotters::prelude::*;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One epoch of a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub step: usize,
    pub lr: f32,
    pub train_loss: f32,
    pub test_loss: f32,
    pub test_top1: f32,
    pub test_top5: f32,
    pub images_per_s: f32,
    pub elapsed_s: f32,
    /// Epoch means of the named loss terms (OBoW: bow, crops, patches, lincls, mu per level,
    /// alpha); absent for runs that report none.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub terms: std::collections::BTreeMap<String, f32>,
}

/// The mean training loss over one chunk of steps ending at `step` (the loop reads the
/// metrics about 20 times an epoch), with the learning rate of its last step: a finer loss
/// curve than the per-epoch records, for plots and for comparisons with other frameworks.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub step: usize,
    pub loss: f32,
    pub lr: f32,
}

/// Records as JSON lines.
fn jsonl_text<T: Serialize>(path: &Path, recs: &[T]) -> Result<String> {
    let mut text = String::new();
    for r in recs {
        text += &serde_json::to_string(r).map_err(|e| Error::file(path, e))?;
        text.push('\n');
    }
    Ok(text)
}

/// Append records, one JSON line each (one write).
pub fn append_jsonl<T: Serialize>(path: &Path, recs: &[T]) -> Result<()> {
    use std::io::Write;
    let text = jsonl_text(path, recs)?;
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| Error::file(path, e))?;
    f.write_all(text.as_bytes()).map_err(|e| Error::file(path, e))
}

/// Replace the file with these records, atomically (resume trims a log to its checkpoint).
pub fn write_jsonl<T: Serialize>(path: &Path, recs: &[T]) -> Result<()> {
    crate::checkpoint::write_atomic(path, jsonl_text(path, recs)?.as_bytes())
}

/// Read every record of a JSON-lines file (metrics.jsonl, steps.jsonl: for resume and plots).
pub fn read_jsonl<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, e))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| Error::file(path, format!("line {}: {e}", i + 1))))
        .collect()
}

const FONT: &str = "sans-serif";

fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, include_bytes!("../../assets/DejaVuSans.ttf"));
    });
}

fn plot_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::file(path, format!("drawing the chart: {e}"))
}

/// A line chart of named series over x.
pub fn line_chart(path: &Path, title: &str, x_label: &str, y_label: &str, series: &[(&str, Vec<(f32, f32)>)]) -> Result<()> {
    register_font();
    let root = BitMapBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
    let pts = series.iter().flat_map(|(_, v)| v.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f32::MAX, f32::MIN, f32::MAX, f32::MIN);
    for &(x, y) in pts {
        if y.is_finite() {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    let pad = ((y1 - y0) * 0.05).max(1e-3);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1.max(x0 + 1e-3), (y0 - pad)..(y1 + pad))
        .map_err(|e| plot_err(path, e))?;
    chart.configure_mesh().x_desc(x_label).y_desc(y_label).label_style((FONT, 14)).draw().map_err(|e| plot_err(path, e))?;
    let colors = [RGBColor(31, 119, 180), RGBColor(214, 39, 40), RGBColor(44, 160, 44), RGBColor(148, 103, 189), RGBColor(255, 127, 14)];
    for (i, (name, v)) in series.iter().enumerate() {
        let c = colors[i % colors.len()];
        chart
            .draw_series(LineSeries::new(v.iter().copied().filter(|p| p.1.is_finite()), c.stroke_width(2)))
            .map_err(|e| plot_err(path, e))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font((FONT, 14))
        .draw()
        .map_err(|e| plot_err(path, e))?;
    root.present().map_err(|e| plot_err(path, e))
}

/// `loss.png` and `accuracy.png` in `dir` from a run's records, and `terms.png` with the loss
/// terms when the records have any (running statistics such as `mu*` and `alpha` left out).
pub fn plot_run(dir: &Path, records: &[EpochRecord]) -> Result<()> {
    let ep = |f: fn(&EpochRecord) -> f32| records.iter().map(|r| (r.epoch as f32, f(r))).collect::<Vec<_>>();
    line_chart(&dir.join("loss.png"), "Loss", "epoch", "loss", &[("train", ep(|r| r.train_loss)), ("test", ep(|r| r.test_loss))])?;
    line_chart(
        &dir.join("accuracy.png"),
        "Test accuracy",
        "epoch",
        "%",
        &[("top-1", ep(|r| r.test_top1)), ("top-5", ep(|r| r.test_top5))],
    )?;
    let mut names: Vec<&String> = records.iter().flat_map(|r| r.terms.keys()).filter(|k| !k.starts_with("mu") && *k != "alpha").collect();
    names.sort();
    names.dedup();
    if names.is_empty() {
        return Ok(());
    }
    let series: Vec<(&str, Vec<(f32, f32)>)> = names
        .iter()
        .map(|n| (n.as_str(), records.iter().filter_map(|r| r.terms.get(*n).map(|&v| (r.epoch as f32, v))).collect()))
        .collect();
    line_chart(&dir.join("terms.png"), "Loss terms (train)", "epoch", "loss", &series)
}

pub use super::words::Tile;

/// A PNG of tiles in rows (e.g. one row per visual word, its nearest patches across), each
/// tile scaled up `scale` times (nearest neighbour), 2-px gaps on a dark background.
pub fn patch_grid(path: &Path, rows: &[Vec<Tile>], scale: usize) -> Result<()> {
    let (w, h, rgba) = super::words::tile_grid_rgba(rows, scale)?;
    let img = image::RgbaImage::from_raw(w as u32, h as u32, rgba).ok_or_else(|| Error::usage("patch grid: wrong buffer size"))?;
    img.save_with_format(path, image::ImageFormat::Png).map_err(|e| Error::file(path, e))
}

/// A heatmap of `m` (rows x cols, values in [0, 1]) with labels, e.g. CKA teacher x student.
pub fn heatmap(path: &Path, title: &str, m: &[f32], rows: &[String], cols: &[String], row_axis: &str, col_axis: &str) -> Result<()> {
    register_font();
    let (nr, nc) = (rows.len(), cols.len());
    let cell = 90i32;
    let (w, h) = (160 + cell * nc as i32 + 40, 80 + cell * nr as i32 + 90);
    let root = BitMapBackend::new(path, (w as u32, h as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
    let text = |s: &str, x: i32, y: i32, size: i32, root: &DrawingArea<BitMapBackend, plotters::coord::Shift>| {
        root.draw(&Text::new(s.to_string(), (x, y), (FONT, size).into_font().color(&BLACK)))
    };
    text(title, 12, 12, 22, &root).map_err(|e| plot_err(path, e))?;
    for (i, r) in rows.iter().enumerate() {
        text(r, 12, 80 + cell * i as i32 + cell / 2 - 8, 15, &root).map_err(|e| plot_err(path, e))?;
        for j in 0..nc {
            let v = m[i * nc + j].clamp(0.0, 1.0);
            // viridis-like ramp from dark blue to yellow
            let c = RGBColor((68.0 + 185.0 * v) as u8, (1.0 + 230.0 * v) as u8, (84.0 + (1.0 - v) * 80.0) as u8);
            let (x, y) = (160 + cell * j as i32, 80 + cell * i as i32);
            root.draw(&Rectangle::new([(x, y), (x + cell - 2, y + cell - 2)], c.filled())).map_err(|e| plot_err(path, e))?;
            let tc = if v > 0.6 { BLACK } else { WHITE };
            root.draw(&Text::new(format!("{v:.2}"), (x + cell / 2 - 18, y + cell / 2 - 8), (FONT, 16).into_font().color(&tc)))
                .map_err(|e| plot_err(path, e))?;
        }
    }
    for (j, c) in cols.iter().enumerate() {
        text(c, 160 + cell * j as i32 + 8, 80 + cell * nr as i32 + 8, 15, &root).map_err(|e| plot_err(path, e))?;
    }
    text(col_axis, 160, 80 + cell * nr as i32 + 40, 16, &root).map_err(|e| plot_err(path, e))?;
    text(row_axis, 12, 52, 16, &root).map_err(|e| plot_err(path, e))?;
    root.present().map_err(|e| plot_err(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_render() {
        let dir = std::env::temp_dir().join("webdistill-report-test");
        std::fs::create_dir_all(&dir).unwrap();
        let recs: Vec<EpochRecord> = (1..=5)
            .map(|e| EpochRecord {
                epoch: e,
                train_loss: 2.0 / e as f32,
                test_loss: 2.2 / e as f32,
                test_top1: 50.0 + 8.0 * e as f32,
                test_top5: 90.0,
                ..Default::default()
            })
            .collect();
        plot_run(&dir, &recs).unwrap();
        let path = dir.join("metrics.jsonl");
        let _ = std::fs::remove_file(&path);
        append_jsonl(&path, &recs[..1]).unwrap();
        append_jsonl(&path, &recs[1..]).unwrap();
        assert_eq!(read_jsonl::<EpochRecord>(&path).unwrap(), recs);
        let rows: Vec<String> = ["layer1", "layer2", "layer3"].iter().map(|s| s.to_string()).collect();
        let cols: Vec<String> = ["block1", "block3", "block5", "block6"].iter().map(|s| s.to_string()).collect();
        let m: Vec<f32> = (0..12).map(|i| i as f32 / 11.0).collect();
        heatmap(&dir.join("cka.png"), "CKA", &m, &rows, &cols, "teacher", "student").unwrap();
        let tile = |v: u8| Tile { c: 1, side: 4, pixels: vec![v; 16] };
        patch_grid(&dir.join("grid.png"), &[vec![tile(0), tile(128)], vec![tile(255)]], 3).unwrap();
        let g = image::open(dir.join("grid.png")).unwrap();
        assert_eq!((g.width(), g.height()), (2 * 14 + 2, 2 * 14 + 2));
        for f in ["loss.png", "accuracy.png", "cka.png"] {
            assert!(std::fs::metadata(dir.join(f)).unwrap().len() > 2000, "{f} looks empty");
        }
    }
}
