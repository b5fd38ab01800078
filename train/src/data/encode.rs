//! An example as token ids in the method's format, with which tokens are the response.

use brainstacks_model::llama::alpaca_prompt;

use super::encoder::TextEncoder;
use super::example::Example;
use crate::Result;

/// The ids of one example: `BOS? + prompt + response + EOS`, with `is_response[i]` true for the
/// response tokens and the final EOS (what a response-only loss predicts).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedExample {
    pub ids: Vec<u32>,
    pub is_response: Vec<bool>,
}

impl EncodedExample {
    pub fn len(&self) -> usize {
        self.ids.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
    /// Tokens before the response (BOS and the Alpaca prompt).
    pub fn prompt_len(&self) -> usize {
        self.is_response.iter().take_while(|r| !**r).count()
    }
}

/// Encodes `example` as the method trains on it: BOS (when the tokenizer has one), the tokens
/// of `alpaca_prompt(instruction, input) + response`, then EOS.
///
/// The prompt/response boundary: the text is tokenized **as a whole** (as the method's code
/// does; a sentencepiece tokenizer encoding the response alone would put a word-start `▁` in
/// front of it that never occurs after the prompt's newline), and the prompt alone; the
/// response starts where the two id sequences first differ. With the byte tokenizer, and with
/// Llama tokenizers for a prompt ending in a newline, the whole prompt's ids are a prefix, so the
/// boundary is exact; if a tokenizer ever merged across it, the merged token counts as response.
///
/// ```
/// use brainstacks_train::data::{encode_example, ByteTokenizer, Example};
/// let enc = encode_example(&ByteTokenizer, &Example::new("Say hi", "hi")).unwrap();
/// let n = enc.len();
/// assert_eq!(enc.ids[0], ByteTokenizer::BOS);
/// assert_eq!(&enc.ids[n - 3..], &[104, 105, ByteTokenizer::EOS]);
/// assert_eq!(enc.prompt_len(), n - 3);
/// assert!(enc.is_response[n - 3..].iter().all(|&r| r));
/// ```
pub fn encode_example<E: TextEncoder + ?Sized>(encoder: &E, example: &Example) -> Result<EncodedExample> {
    let prompt = alpaca_prompt(&example.instruction, example.input.as_deref());
    let prompt_ids = encoder.encode(&prompt)?;
    let full = encoder.encode(&format!("{prompt}{}", example.response))?;
    let boundary = prompt_ids.iter().zip(&full).take_while(|(a, b)| a == b).count();
    let eos = encoder.eos()?;
    let bos = encoder.bos();
    let n = usize::from(bos.is_some()) + full.len() + 1;
    let mut ids = Vec::with_capacity(n);
    let mut is_response = Vec::with_capacity(n);
    if let Some(b) = bos {
        ids.push(b);
        is_response.push(false);
    }
    for (i, &id) in full.iter().enumerate() {
        ids.push(id);
        is_response.push(i >= boundary);
    }
    ids.push(eos);
    is_response.push(true);
    Ok(EncodedExample { ids, is_response })
}

/// [`encode_example`] for every example, in order.
pub fn encode_all<E: TextEncoder + ?Sized>(encoder: &E, examples: &[Example]) -> Result<Vec<EncodedExample>> {
    examples.iter().map(|e| encode_example(encoder, e)).collect()
}
