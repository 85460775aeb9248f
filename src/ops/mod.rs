//! Ops: each file pairs an op family's forward and backward rules, the kernels they dispatch
//! (in `shaders/`), and the f64 CPU reference the tests compare against.

pub mod attention;
pub mod batchnorm;
pub mod conv;
pub mod counter;
pub mod data;
pub mod elementwise;
pub mod gather;
pub mod layernorm2d;
pub mod layout;
pub mod loss;
pub mod matmul;
pub mod norm;
pub mod obow;
pub mod pool;
pub mod random;
pub mod reduce;
pub mod softmax;

pub use attention::AttnImpl;
pub use batchnorm::BnVars;
pub use conv::Conv2dSpec;
pub use elementwise::{Binary, Unary};
pub use pool::PoolSpec;
pub use reduce::Reduce;
