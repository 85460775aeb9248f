//! webdistill: train and distil neural networks on any GPU through WebGPU.
//!
//! A training step is built once as a graph of ops on symbolic tensors ([`graph::Graph`]),
//! differentiated at build time, compiled into a [`graph::Plan`] (ordered dispatches over an
//! arena reused by liveness) and replayed with one submit per step. See docs/ARCHITECTURE.md.

#[cfg(not(target_arch = "wasm32"))]
pub mod bench;
pub mod checkpoint;
#[cfg(not(target_arch = "wasm32"))]
pub mod cli;
pub mod data;
pub mod distill;
pub mod embed;
pub mod error;
pub mod golden;
pub mod gpu;
pub mod graph;
pub mod models;
pub mod nn;
pub mod ops;
pub mod optim;
#[cfg(not(target_arch = "wasm32"))]
pub mod report;
pub mod selftest;
pub mod session;
pub mod store;
pub mod tensor;
pub mod train;
#[cfg(target_arch = "wasm32")]
pub mod web;

pub use error::{Error, Result};
pub use gpu::{AdapterReport, Context};
pub use graph::{Graph, Plan, Var};
pub use store::{Init, Param, Store};
/// The wgpu this crate is built with: hosts that share their device must use the same major
/// version (see [`embed`]).
pub use wgpu;
