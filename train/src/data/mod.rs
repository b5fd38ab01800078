//! The data pipeline: JSONL examples (Alpaca or chat) → cleaned [`Example`]s → seeded
//! train/validation split → token ids in the Alpaca format with response flags → packed
//! training rows and padded evaluation batches with next-token labels.
//!
//! ```
//! use brainstacks_tensor::Device;
//! use brainstacks_train::data::*;
//! let text = (0..50)
//!     .map(|i| format!(r#"{{"instruction": "Add {i} and 1.", "output": "{}"}}"#, i + 1))
//!     .collect::<Vec<_>>()
//!     .join("\n");
//! let examples = parse_jsonl(&text, "mem", &ParseOptions::default()).unwrap().examples;
//! let domain = DomainData::from_examples("math", examples, &SplitConfig::default()).unwrap();
//! let rows = domain.packed_train(&ByteTokenizer, 64, 42).unwrap();
//! let mut train = MicroBatches::new(rows, 2, LossMask::FullSequence, 42, Device::Cpu).unwrap();
//! let batch = train.next_batch().unwrap();
//! assert_eq!(batch.labels.shape(), &[2, 64]);
//! let val = domain.eval_examples(&ByteTokenizer, 200).unwrap();
//! let eval = eval_batches(&val, 4, 512, LossMask::FullSequence, ByteTokenizer::EOS, &Device::Cpu).unwrap();
//! assert_eq!(eval.len(), 1);
//! ```

mod batch;
mod dataset;
mod encode;
mod encoder;
mod example;
mod micro_batches;
mod split;

pub use batch::{Batch, IGNORE_INDEX, LossMask, LossMeter, PackTail, TokenRow, eval_batches, pack};
pub use dataset::{DomainConfig, DomainData};
pub use encode::{EncodedExample, encode_all, encode_example};
pub use encoder::{ByteTokenizer, TextEncoder};
pub use example::{
    CHAT_TEMPLATE_TOKENS, Example, JsonlCounts, JsonlData, LineFormat, ParseOptions, parse_jsonl, parse_line, read_jsonl,
    strip_chat_tokens, truncate_chars,
};
pub use micro_batches::MicroBatches;
pub use split::{SplitConfig, SplitIndices, eval_subset, shuffled_indices, split_indices, split_train_val};
