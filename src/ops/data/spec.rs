//! What the GPU augmentation kernels do to each view, as plain values.
//!
//! The pipeline of one view is fixed: geometry (crop / resize, horizontal flip) -> colour
//! (jitter in a random order, random grayscale) -> Gaussian blur -> finish (zero padding,
//! channel replication, mixup/cutmix with the flipped batch, normalisation). Each stage is a
//! kernel driven by a per-sample parameter record drawn on the GPU (see `ops::data`); stages that
//! a spec leaves off are not dispatched at all.
//!
//! Why stages and not one fused kernel: contrast needs the mean of each whole image at its
//! point in the (random) jitter order, blur needs neighbouring pixels after colour, and mixup
//! needs the partner row after all per-sample work, so a fused kernel would still need
//! barriers or extra passes. Drawing every random choice once per sample into a 24-float
//! record keeps each stage a plain, testable function of (pixels, record), and lets several
//! views (the OBoW crops) share one gathered batch.
//!
//! These specs live in the op layer because the ops consume them; the `data` module re-exports
//! them (`data::Augment`, ...) for recipes and hosts.

/// How a view takes its pixels from the source image.
#[derive(Clone, Debug, PartialEq)]
pub enum Crop {
    /// The whole image, resized (bilinear) to the view size; a plain copy when sizes agree.
    Full,
    /// torchvision `RandomCrop(size, padding)`: zero padding on every side, then a random
    /// `size` x `size` window, copied exactly (CIFAR's "pad 4, crop 32").
    Pad { padding: usize },
    /// torchvision `RandomResizedCrop(size, scale, ratio)`: 10 attempts at an area fraction in
    /// `scale` and a log-uniform aspect ratio in `ratio`, else the central fallback; the box is
    /// resized with bilinear interpolation (half-pixel centres, edge clamped to the box, no
    /// antialiasing when shrinking).
    ResizedCrop { scale: (f32, f32), ratio: (f32, f32) },
    /// torchvision `Resize(resize)` (shorter side) then `CenterCrop(size)`: the eval transform of
    /// timm and the OBoW teacher view. `resize` must be at least the view size.
    Center { resize: usize },
}

/// torchvision `ColorJitter(brightness, contrast, saturation, hue)` applied with probability `p`
/// (`RandomApply`). Factors: uniform in `[max(0, 1 - v), 1 + v]`, hue in `[-hue, hue]`; the
/// four ops run in a random order (torch.randperm(4)), on float pixels in [0, 1] with the
/// tensor formulas (blend with black / the grayscale mean / the grayscale image, clamped; hue
/// through HSV). On 1-channel data only brightness and contrast change anything (torchvision
/// leaves 1-channel images unchanged under saturation and hue).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Jitter {
    pub brightness: f32,
    pub contrast: f32,
    pub saturation: f32,
    pub hue: f32,
    pub p: f32,
}

impl Jitter {
    /// OBoW / SimCLR-style strength (0.4, 0.4, 0.4, 0.1) with probability 0.8.
    pub fn obow() -> Self {
        Jitter { brightness: 0.4, contrast: 0.4, saturation: 0.4, hue: 0.1, p: 0.8 }
    }
}

/// torchvision `GaussianBlur(kernel, sigma)` applied with probability `p`: sigma uniform in
/// `sigma`, a normalised `kernel`-tap (odd) Gaussian along x then y, reflect padding.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Blur {
    pub sigma: (f32, f32),
    pub kernel: usize,
    pub p: f32,
}

/// The random transforms of one view.
#[derive(Clone, Debug, PartialEq)]
pub struct Augment {
    pub crop: Crop,
    /// Probability of a horizontal flip.
    pub hflip: f32,
    pub jitter: Option<Jitter>,
    /// Probability of `RandomGrayscale` (3-channel data; no effect on 1 channel).
    pub grayscale: f32,
    pub blur: Option<Blur>,
}

impl Default for Augment {
    fn default() -> Self {
        Augment::none()
    }
}

impl Augment {
    /// No augmentation (evaluation).
    pub fn none() -> Self {
        Augment { crop: Crop::Full, hflip: 0.0, jitter: None, grayscale: 0.0, blur: None }
    }
    /// CIFAR-style: random crop with `padding` and a horizontal flip.
    pub fn pad_crop_flip(padding: usize) -> Self {
        Augment { crop: Crop::Pad { padding }, hflip: 0.5, ..Augment::none() }
    }
    /// timm's default train transform: RandomResizedCrop(scale 0.08-1, ratio 3/4-4/3) + flip.
    pub fn resized_crop_flip() -> Self {
        Augment { crop: Crop::ResizedCrop { scale: (0.08, 1.0), ratio: (0.75, 4.0 / 3.0) }, hflip: 0.5, ..Augment::none() }
    }
    /// Does this view need the colour kernel?
    pub fn has_color(&self) -> bool {
        self.jitter.is_some_and(|j| j.p > 0.0) || self.grayscale > 0.0
    }
    /// Does this view need the blur kernel?
    pub fn has_blur(&self) -> bool {
        self.blur.is_some_and(|b| b.p > 0.0)
    }
}

/// timm `Mixup` in its default "batch" mode: with probability `prob` the whole batch is mixed
/// with itself flipped (row b with row B-1-b); cutmix is chosen with `switch_prob` when both
/// alphas are positive; lambda ~ Beta(alpha, alpha) (drawn on the GPU); cutmix's box follows
/// `rand_bbox` and lambda is corrected to the box's real area.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Mix {
    pub mixup_alpha: f32,
    pub cutmix_alpha: f32,
    pub prob: f32,
    pub switch_prob: f32,
}

impl Mix {
    /// The OFA-KD ViT/MLP recipe: mixup 0.8, cutmix 1.0, always, switching half of the time.
    pub fn timm_default() -> Self {
        Mix { mixup_alpha: 0.8, cutmix_alpha: 1.0, prob: 1.0, switch_prob: 0.5 }
    }
}

/// OBoW's `CropImagePatches` on an augmented base view: a `grid` x `grid` layout of `size`
/// patches, cell g starting at `g * ((base - size - jitter) / (grid - 1)) + randint(0, jitter)`,
/// of which `keep` random cells are kept.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Patches {
    pub size: usize,
    pub jitter: usize,
    pub keep: usize,
    pub grid: usize,
}
