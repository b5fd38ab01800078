//! The training crate's error type.

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Model(#[from] brainstacks_model::Error),
    #[error(transparent)]
    Autograd(#[from] brainstacks_autograd::Error),
    #[error(transparent)]
    Tensor(#[from] brainstacks_tensor::Error),
    #[error("{what}: {msg}")]
    Invalid { what: String, msg: String },
    /// The run was asked to stop (Ctrl-C); everything up to the last completed round is saved.
    #[error("interrupted: {0}")]
    Interrupted(String),
}
