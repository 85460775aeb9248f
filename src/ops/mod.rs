//! Ops: each file pairs an op family's forward and backward rules, the kernels they dispatch
//! (in `shaders/`), and the f64 CPU reference the tests compare against.

pub mod attention;
pub mod elementwise;
pub mod gather;
pub mod layout;
pub mod loss;
pub mod matmul;
pub mod norm;
pub mod random;
pub mod reduce;
pub mod softmax;

pub use attention::AttnImpl;
pub use elementwise::{Binary, Unary};
pub use reduce::Reduce;
