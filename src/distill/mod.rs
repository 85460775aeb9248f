//! Distillation objectives (OFA-KD and its baselines), the CKA diagnostic, and OBoW's
//! self-supervised teacher-student pieces. Nothing here touches wgpu: everything is graph ops.

pub mod cka;
pub mod fitnet;
pub mod losses;
pub mod objective;
pub mod obow;
pub mod ofa;
