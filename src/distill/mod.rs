//! Distillation objectives (OFA-KD and its baselines), the CKA diagnostic, and (in later
//! files) OBoW. Nothing here touches wgpu: everything is graph ops.

pub mod cka;
pub mod fitnet;
pub mod losses;
pub mod ofa;
