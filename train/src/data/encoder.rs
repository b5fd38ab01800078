//! The tokenizer interface the data pipeline uses, with two implementations: a Hugging Face
//! Llama tokenizer and a byte-level tokenizer for tests and toy runs that have no
//! tokenizer.json.

use brainstacks_model::llama::LlamaTokenizer;

use crate::{Error, Result};

/// Text to token ids, plus the special tokens an example is framed with.
pub trait TextEncoder {
    /// Ids of `text` with no special tokens added.
    fn encode(&self, text: &str) -> Result<Vec<u32>>;
    /// The token put before every example, when the tokenizer adds one.
    fn bos(&self) -> Option<u32>;
    /// The token that ends every example (and pads evaluation batches).
    fn eos(&self) -> Result<u32>;
    /// Number of ids the model's embedding must cover.
    fn vocab_size(&self) -> usize;
    /// The text of generated ids, special tokens skipped.
    fn decode_text(&self, ids: &[u32]) -> Result<String>;
}

/// Bytes as tokens: ids 0..=255 are the UTF-8 bytes of the text, [`ByteTokenizer::BOS`] = 256,
/// [`ByteTokenizer::EOS`] = 257, vocabulary 258.
///
/// ```
/// use brainstacks_train::data::{ByteTokenizer, TextEncoder};
/// let tok = ByteTokenizer;
/// assert_eq!(tok.encode("hé").unwrap(), vec![104, 0xC3, 0xA9]);
/// assert_eq!((tok.bos(), tok.eos().unwrap(), tok.vocab_size()), (Some(256), 257, 258));
/// assert_eq!(tok.decode(&[256, 104, 105, 257]), "hi");
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct ByteTokenizer;

impl ByteTokenizer {
    pub const BOS: u32 = 256;
    pub const EOS: u32 = 257;
    pub const VOCAB_SIZE: usize = 258;

    /// The text of `ids`, special tokens (and anything above 255) skipped, invalid UTF-8
    /// replaced by U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids.iter().filter_map(|&i| u8::try_from(i).ok()).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl TextEncoder for ByteTokenizer {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(text.bytes().map(u32::from).collect())
    }
    fn bos(&self) -> Option<u32> {
        Some(Self::BOS)
    }
    fn eos(&self) -> Result<u32> {
        Ok(Self::EOS)
    }
    fn vocab_size(&self) -> usize {
        Self::VOCAB_SIZE
    }
    fn decode_text(&self, ids: &[u32]) -> Result<String> {
        Ok(self.decode(ids))
    }
}

/// The Llama tokenizer encodes as the method's code does with transformers: `encode(text,
/// false)` for the text; BOS is the one `encode(.., true)` puts in front (from the
/// post-processor and `add_bos_token`), so a tokenizer configured without BOS frames examples
/// without it; EOS is `eos_token` of tokenizer_config.json, an error when it is not set.
impl TextEncoder for LlamaTokenizer {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(LlamaTokenizer::encode(self, text, false)?)
    }
    fn bos(&self) -> Option<u32> {
        let bos = self.bos_token_id?;
        // Probe what `encode` adds with special tokens on a text that contains no BOS itself.
        let with = LlamaTokenizer::encode(self, "a", true).ok()?;
        let without = LlamaTokenizer::encode(self, "a", false).ok()?;
        (with.first() == Some(&bos) && without.first() != Some(&bos)).then_some(bos)
    }
    fn eos(&self) -> Result<u32> {
        self.eos_token_id.ok_or_else(|| Error::Invalid {
            what: "tokenizer".into(),
            msg: "every training example ends with EOS, but tokenizer_config.json sets no eos_token".into(),
        })
    }
    fn vocab_size(&self) -> usize {
        LlamaTokenizer::vocab_size(self)
    }
    fn decode_text(&self, ids: &[u32]) -> Result<String> {
        Ok(LlamaTokenizer::decode(self, ids, true)?)
    }
}
