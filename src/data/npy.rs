//! float32 `.npy` files (NumPy's format) for `predict`'s input and output batches.

use crate::checkpoint;
use crate::error::{Error, Result};
use std::path::Path;

/// Read a float32 C-order `.npy` as (shape, values).
pub fn read_npy(path: &Path) -> Result<(Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::file(path, e))?;
    let npy = npyz::NpyFile::new(&bytes[..]).map_err(|e| Error::file(path, format!("not a .npy file: {e}")))?;
    if npy.order() != npyz::Order::C {
        return Err(Error::file(path, "array is in Fortran order; save it in C order (np.ascontiguousarray)"));
    }
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let dtype = npy.dtype();
    let data: Vec<f32> = match npy.into_vec::<f32>() {
        Ok(v) => v,
        Err(_) => return Err(Error::file(path, format!("array dtype is {dtype:?}, expected float32"))),
    };
    Ok((shape, data))
}

/// Write a float32 C-order `.npy`.
pub fn write_npy(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    let mut buf = Vec::new();
    {
        use npyz::WriterBuilder;
        let mut w = npyz::WriteOptions::<f32>::new()
            .default_dtype()
            .shape(&shape.iter().map(|&d| d as u64).collect::<Vec<_>>())
            .writer(&mut buf)
            .begin_nd()
            .map_err(|e| Error::file(path, e))?;
        w.extend(data.iter().copied()).map_err(|e| Error::file(path, e))?;
        w.finish().map_err(|e| Error::file(path, e))?;
    }
    checkpoint::write_atomic(path, &buf)
}
