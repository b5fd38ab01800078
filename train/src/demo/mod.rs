//! `brainstacks demo`: the whole method on data, a tokenizer and a base model that the demo makes
//! itself. The starter spiral job lives on in [`spirals`].

pub mod generators;
pub mod report;
pub mod results;
pub mod spirals;
pub mod tokenizer;

pub use spirals::*;
