//! The autograd crate's error type.

use brainstacks_tensor::DType;

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Tensor(#[from] brainstacks_tensor::Error),

    #[error("{op}: inputs were recorded on different tapes; use one tape per computation")]
    DifferentTapes { op: String },

    #[error("backward: the loss must hold exactly one element, got shape {shape:?} (use `backward_with` to seed a non-scalar output)")]
    NonScalarLoss { shape: Vec<usize> },

    #[error("backward: the seed gradient has shape {seed:?} and dtype {seed_dtype}, the output has shape {output:?} and dtype {output_dtype}")]
    SeedMismatch { seed: Vec<usize>, seed_dtype: DType, output: Vec<usize>, output_dtype: DType },

    #[error("{op}: backward rule returned a gradient of shape {got:?}/{got_dtype} for input {input} of shape {expected:?}/{expected_dtype}")]
    GradientShape {
        op: String,
        input: usize,
        expected: Vec<usize>,
        expected_dtype: DType,
        got: Vec<usize>,
        got_dtype: DType,
    },

    #[error("{op}: backward rule returned {got} gradients for {expected} inputs")]
    GradientCount { op: String, expected: usize, got: usize },

    #[error("{op}: {msg}")]
    Invalid { op: String, msg: String },
}
