//! The tensor crate's error type. Every variant names the op; shape and dtype variants carry both
//! sides so a message alone tells the user what went wrong where.

use crate::DType;

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{op}: shape mismatch between {lhs:?} and {rhs:?}{}", note_suffix(.note))]
    ShapeMismatch { op: &'static str, lhs: Vec<usize>, rhs: Vec<usize>, note: String },

    #[error("{op}: dtype mismatch between {lhs} and {rhs}")]
    DTypeMismatch { op: &'static str, lhs: DType, rhs: DType },

    #[error("{op}: dtype {dtype} is not supported{}", note_suffix(.note))]
    UnsupportedDType { op: &'static str, dtype: DType, note: String },

    #[error("{op}: dim {dim} is out of range for a tensor of rank {rank} (shape {shape:?})")]
    DimOutOfRange { op: &'static str, dim: isize, rank: usize, shape: Vec<usize> },

    #[error("{op}: index {index} is out of range for size {size}")]
    IndexOutOfRange { op: &'static str, index: i64, size: usize },

    #[error("{op}: {msg} (shape {shape:?})")]
    InvalidArgument { op: &'static str, msg: String, shape: Vec<usize> },

    #[error("{op}: on {device}: {msg}")]
    Device { op: &'static str, device: crate::Device, msg: String },

    /// An operating-system error on a file, naming the file and what was being done.
    #[error("{op} {}: {source}", .path.display())]
    Io { op: &'static str, path: std::path::PathBuf, #[source] source: std::io::Error },

    /// A file whose content breaks its format: names the file and, in `msg`, the tensor or key.
    #[error("{}: {msg}", .path.display())]
    Format { path: std::path::PathBuf, msg: String },
}

fn note_suffix(note: &str) -> String {
    if note.is_empty() { String::new() } else { format!(": {note}") }
}

impl Error {
    pub(crate) fn shape(op: &'static str, lhs: &[usize], rhs: &[usize], note: impl Into<String>) -> Self {
        Error::ShapeMismatch { op, lhs: lhs.to_vec(), rhs: rhs.to_vec(), note: note.into() }
    }
    pub(crate) fn invalid(op: &'static str, shape: &[usize], msg: impl Into<String>) -> Self {
        Error::InvalidArgument { op, msg: msg.into(), shape: shape.to_vec() }
    }
    pub(crate) fn io(op: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        Error::Io { op, path: path.to_path_buf(), source }
    }
    pub(crate) fn format(path: &std::path::Path, msg: impl Into<String>) -> Self {
        Error::Format { path: path.to_path_buf(), msg: msg.into() }
    }
    pub(crate) fn dtype(op: &'static str, dtype: DType, note: impl Into<String>) -> Self {
        Error::UnsupportedDType { op, dtype, note: note.into() }
    }
}
