//! Augmentation specs and dataset statistics. The specs (what the GPU augmentation kernels do
//! to each view, as plain values) live with the ops that consume them, in `ops::data::spec`;
//! they are re-exported here so recipes say `data::Augment`, `data::Mix`, ...

pub use crate::ops::data::spec::{Augment, Blur, Crop, Jitter, Mix, Patches};

/// Per-channel statistics of common datasets, in [0, 1] pixel units.
pub mod stats {
    pub const FASHION_MNIST_MEAN: [f32; 1] = [0.2860];
    pub const FASHION_MNIST_STD: [f32; 1] = [0.3530];
    pub const MNIST_MEAN: [f32; 1] = [0.1307];
    pub const MNIST_STD: [f32; 1] = [0.3081];
    pub const CIFAR10_MEAN: [f32; 3] = [0.4914, 0.4822, 0.4465];
    pub const CIFAR10_STD: [f32; 3] = [0.2470, 0.2435, 0.2616];
    pub const CIFAR100_MEAN: [f32; 3] = [0.5071, 0.4865, 0.4409];
    pub const CIFAR100_STD: [f32; 3] = [0.2673, 0.2564, 0.2762];
    pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
    pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];
}
