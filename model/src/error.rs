//! The model crate's error type.

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Autograd(#[from] brainstacks_autograd::Error),
    #[error(transparent)]
    Tensor(#[from] brainstacks_tensor::Error),
    #[error("{layer}: {msg}")]
    Config { layer: String, msg: String },
    /// A checkpoint that breaks its format: names the file (or directory) and the tensor.
    #[error("{}: {msg}", .path.display())]
    Checkpoint { path: std::path::PathBuf, msg: String },
}
