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
}
