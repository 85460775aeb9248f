//! What a run reports: training metrics, test-set results, CKA matrices, predictions, and the
//! shape of its data.

/// Test-set results.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EvalResult {
    pub loss: f32,
    /// Percent.
    pub top1: f32,
    pub top5: f32,
    pub images: usize,
}

impl EvalResult {
    /// From the evaluation plan's sums `[loss, top-1 hits, top-5 hits, images]`.
    pub fn from_sums(v: &[f32]) -> EvalResult {
        let n = v[3].max(1.0);
        EvalResult { loss: v[0] / n, top1: 100.0 * v[1] / n, top5: 100.0 * v[2] / n, images: v[3] as usize }
    }
}

/// Averages of the training metrics since the last read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrainMetrics {
    pub steps: usize,
    pub loss: f32,
    /// Named loss terms (gt, kd, ofa, ...; bow, mu0, alpha for OBoW), averaged.
    pub terms: Vec<(String, f32)>,
    /// Learning rate of the last step.
    pub lr: f32,
}

/// What the data looks like to the models.
#[derive(Clone, Debug, PartialEq)]
pub struct DataInfo {
    pub name: String,
    pub classes: usize,
    pub channels: usize,
    /// Side of the images the models see (after padding/resizing).
    pub size: usize,
    pub train_images: usize,
    pub test_images: usize,
    /// Class names, in the order of the labels.
    pub class_names: Vec<String>,
}

/// CKA between every teacher stage (rows) and student stage (columns).
#[derive(Clone, Debug, PartialEq)]
pub struct CkaResult {
    pub values: Vec<f32>,
    pub teacher_stages: Vec<String>,
    pub student_stages: Vec<String>,
    pub images: usize,
}

impl std::fmt::Display for CkaResult {
    /// The matrix as a text table, teacher stages down, student stages across.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:>18}", "teacher \\ student")?;
        for c in &self.student_stages {
            write!(f, "{c:>10}")?;
        }
        for (row, values) in self.teacher_stages.iter().zip(self.values.chunks(self.student_stages.len().max(1))) {
            write!(f, "\n{row:>18}")?;
            for v in values {
                write!(f, "{v:>10.3}")?;
            }
        }
        Ok(())
    }
}

/// Class probabilities for one image.
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    /// The student's class probabilities, and its logits (what `webdistill predict` writes).
    pub student: Vec<f32>,
    pub student_logits: Vec<f32>,
    pub teacher: Option<Vec<f32>>,
}

/// Milliseconds from an arbitrary origin, monotonic where the platform allows
/// (`performance.now()` in browsers and workers, `Instant` natively).
pub fn now_ms() -> f64 {
    #[cfg(not(target_arch = "wasm32"))]
    {
        use std::sync::OnceLock;
        use std::time::Instant;
        static ORIGIN: OnceLock<Instant> = OnceLock::new();
        ORIGIN.get_or_init(Instant::now).elapsed().as_secs_f64() * 1e3
    }
    #[cfg(target_arch = "wasm32")]
    {
        use wasm_bindgen::JsCast;
        let perf = js_sys::Reflect::get(&js_sys::global(), &"performance".into()).ok();
        let now =
            perf.as_ref().and_then(|p| js_sys::Reflect::get(p, &"now".into()).ok()).and_then(|f| f.dyn_into::<js_sys::Function>().ok());
        match (perf, now) {
            (Some(p), Some(f)) => f.call0(&p).ok().and_then(|v| v.as_f64()).unwrap_or_else(js_sys::Date::now),
            _ => js_sys::Date::now(),
        }
    }
}
