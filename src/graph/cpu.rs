//! A plain f64 tensor for the CPU references the tests compare the kernels against.

#[derive(Clone, Debug, PartialEq)]
pub struct CpuTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

impl CpuTensor {
    pub fn new(shape: &[usize], data: Vec<f64>) -> Self {
        assert_eq!(shape.iter().product::<usize>(), data.len(), "CpuTensor shape {shape:?} vs {} values", data.len());
        CpuTensor { shape: shape.to_vec(), data }
    }
    pub fn zeros(shape: &[usize]) -> Self {
        CpuTensor { shape: shape.to_vec(), data: vec![0.0; shape.iter().product()] }
    }
    pub fn from_f32(shape: &[usize], data: &[f32]) -> Self {
        Self::new(shape, data.iter().map(|&v| v as f64).collect())
    }
    pub fn numel(&self) -> usize {
        self.data.len()
    }
    pub fn to_f32(&self) -> Vec<f32> {
        self.data.iter().map(|&v| v as f32).collect()
    }
    /// Row-major strides.
    pub fn strides(&self) -> Vec<usize> {
        strides(&self.shape)
    }
    pub fn map(&self, f: impl Fn(f64) -> f64) -> Self {
        CpuTensor { shape: self.shape.clone(), data: self.data.iter().map(|&v| f(v)).collect() }
    }
}

/// The index helpers live with the shape rules in [`crate::tensor`]; the CPU references
/// (and the ops) have always found them here.
pub use crate::tensor::{strides, unravel};

use super::{Graph, Source, Var};
use crate::error::{Error, Result};
use std::collections::HashMap;

impl Graph {
    /// Evaluate the graph on the CPU in f64 with every op's reference implementation.
    /// `feeds` gives inputs, parameters and state; constants come from the graph. Tensors
    /// whose op has no reference (gradient-only ops) are left out.
    pub fn eval_cpu(&self, feeds: &HashMap<Var, CpuTensor>) -> Result<HashMap<Var, CpuTensor>> {
        let mut vals: HashMap<Var, CpuTensor> = feeds.clone();
        for (i, t) in self.tensors.iter().enumerate() {
            if let Source::Const(bits) = &t.source {
                let data = match t.dtype {
                    super::DType::F32 => bits.iter().map(|&b| f32::from_bits(b) as f64).collect(),
                    super::DType::U32 => bits.iter().map(|&b| b as f64).collect(),
                };
                vals.insert(Var(i as u32), CpuTensor::new(&t.shape, data));
            }
        }
        for (i, n) in self.nodes.iter().enumerate() {
            if n.inputs.iter().any(|v| !vals.contains_key(v)) {
                continue;
            }
            let ins: Vec<&CpuTensor> = n.inputs.iter().map(|v| &vals[v]).collect();
            match n.op.cpu(&self.node_ref(i), &ins) {
                Ok(outs) => {
                    for (v, o) in n.outputs.iter().zip(outs) {
                        if o.shape != self.shape(*v) {
                            return Err(Error::usage(format!(
                                "{}: CPU reference gave shape {:?}, expected {:?}",
                                n.op.name(),
                                o.shape,
                                self.shape(*v)
                            )));
                        }
                        vals.insert(*v, o);
                    }
                }
                Err(_) => continue,
            }
        }
        Ok(vals)
    }
}
