//! One error type for the whole library. Every variant carries enough context (the op, the
//! tensor, the file, the limit) for the message alone to tell a user what went wrong.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    /// Shapes that do not fit an op, found while the graph is built (nothing ran).
    #[error("{op}: {msg}")]
    Shape { op: &'static str, msg: String },

    /// No usable GPU adapter.
    #[error("no GPU adapter found{detail}.\n{hint}")]
    NoAdapter { detail: String, hint: &'static str },

    /// wgpu reported an error (validation, out of memory, device lost) while doing `context`.
    #[error("GPU error while {context}: {msg}")]
    Gpu { context: String, msg: String },

    /// A tensor does not fit the device's limits.
    #[error("tensor '{tensor}' needs {bytes} bytes, more than this adapter's {limit_name} of {limit} bytes")]
    TooLarge { tensor: String, bytes: u64, limit_name: &'static str, limit: u64 },

    /// Data handed to the library is not what the tensor expects.
    #[error("input '{tensor}': {msg}")]
    BadInput { tensor: String, msg: String },

    /// Misuse of the API that the types cannot rule out.
    #[error("{0}")]
    Usage(String),

    /// A file could not be read, written or parsed.
    #[error("{path}: {msg}")]
    File { path: String, msg: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn shape(op: &'static str, msg: impl Into<String>) -> Self {
        Error::Shape { op, msg: msg.into() }
    }
    pub fn usage(msg: impl Into<String>) -> Self {
        Error::Usage(msg.into())
    }
    pub fn file(path: impl AsRef<std::path::Path>, msg: impl std::fmt::Display) -> Self {
        Error::File { path: path.as_ref().display().to_string(), msg: msg.to_string() }
    }
    pub fn gpu(context: impl Into<String>, msg: impl std::fmt::Display) -> Self {
        Error::Gpu { context: context.into(), msg: msg.to_string() }
    }
}
