//! The demo's own tokenizer: a byte-level BPE trained on the demo corpus and saved as a Hugging
//! Face Llama-style tokenizer directory, so that every later step loads it exactly as it would
//! load a real checkpoint's tokenizer ([`LlamaTokenizer::from_dir`]).
//!
//! Design:
//! - Special tokens in Llama's order: `<unk>` = 0, `<s>` = 1, `</s>` = 2.
//! - Pre-tokenizer: every digit on its own (so a tiny model sees arithmetic digit by digit and
//!   never has to learn what a merged "347" means), then the GPT-2 byte-level split. The
//!   byte-level alphabet (all 256 bytes) is put into the vocabulary up front, so any UTF-8 text
//!   encodes without `<unk>` and decodes back byte for byte (newlines and spaces included).
//! - No normalizer, a byte-level decoder, and a `<s> $A` template post-processor, so BOS comes
//!   from `encode(text, true)` as it does for Llama tokenizers; EOS is left to
//!   [`LlamaTokenizer::encode_alpaca`].
//!
//! Determinism: the `tokenizers` BPE trainer counts words and pairs in hash maps (with per-map
//! random seeds) and in parallel (rayon), but every quantity it derives is a sum, and the next
//! merge is the most frequent pair with ties broken by the smaller pair of ids; characters get
//! their ids in code-point order. Neither the hash order nor the thread count therefore reaches
//! the result, and the saved files are sorted (vocabulary by id, merges by rank, JSON objects by
//! key). The tests train twice in one process (different hash seeds) and compare bytes, and pin
//! the ids of a fixed corpus, so a change here is caught. No parallelism switch is needed, and
//! none is set: `tokenizers`' switch is process-wide and would also slow encoding elsewhere.
//!
//! [`LlamaTokenizer::from_dir`]: brainstacks_model::llama::LlamaTokenizer::from_dir
//! [`LlamaTokenizer::encode_alpaca`]: brainstacks_model::llama::LlamaTokenizer::encode_alpaca

use std::path::Path;

use serde_json::json;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::models::{ModelWrapper, TrainerWrapper};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::processors::PostProcessorWrapper;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Tokenizer};

use crate::{Error, Result};

pub const UNK_TOKEN: &str = "<unk>";
pub const BOS_TOKEN: &str = "<s>";
pub const EOS_TOKEN: &str = "</s>";
pub const UNK_ID: u32 = 0;
pub const BOS_ID: u32 = 1;
pub const EOS_ID: u32 = 2;

/// The three special tokens and the 256 byte symbols every trained vocabulary starts with.
pub const BASE_VOCAB_SIZE: usize = 3 + 256;

/// Settings of [`train_tokenizer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizerTraining {
    /// Vocabulary size including the special tokens and the 256 byte symbols; the trained
    /// vocabulary is at most this large (smaller when the corpus runs out of pairs to merge).
    pub vocab_size: usize,
    /// A pair is merged only if it occurs at least this often.
    pub min_frequency: u64,
    /// `model_max_length` written to tokenizer_config.json: the longest sequence the model
    /// will be trained on (its `max_position_embeddings`).
    pub model_max_length: usize,
}

impl Default for TokenizerTraining {
    fn default() -> Self {
        Self { vocab_size: 1024, min_frequency: 2, model_max_length: 2048 }
    }
}

/// What [`train_tokenizer`] made, for the demo's report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenizerStats {
    /// Tokens in the trained vocabulary, special tokens included.
    pub vocab_size: usize,
    /// Texts trained on.
    pub documents: usize,
    /// Unicode scalar values in those texts.
    pub chars: usize,
    /// Tokens of those texts with the trained tokenizer, without special tokens.
    pub tokens: usize,
}

impl TokenizerStats {
    /// Average characters per token (0 for an empty corpus).
    pub fn chars_per_token(&self) -> f64 {
        if self.tokens == 0 { 0.0 } else { self.chars as f64 / self.tokens as f64 }
    }
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::Invalid { what: "tokenizer training".into(), msg: msg.into() }
}

fn tokenizers_err(op: &str, e: impl std::fmt::Display) -> Error {
    invalid(format!("{op}: {e}"))
}

fn byte_level() -> ByteLevel {
    // No prefix space: the first word of a text is encoded as written, so decoding gives the
    // text back exactly.
    ByteLevel::new(false, true, true)
}

/// The untrained pipeline: BPE model, pre-tokenizer, decoder and post-processor.
fn untrained() -> Result<Tokenizer> {
    let bpe = BPE::builder().unk_token(UNK_TOKEN.into()).build().map_err(|e| tokenizers_err("building the BPE model", e))?;
    let mut tok = Tokenizer::new(ModelWrapper::BPE(bpe));
    let pre = Sequence::new(vec![PreTokenizerWrapper::Digits(Digits::new(true)), PreTokenizerWrapper::ByteLevel(byte_level())]);
    tok.with_pre_tokenizer(Some(PreTokenizerWrapper::Sequence(pre)));
    tok.with_decoder(Some(DecoderWrapper::ByteLevel(byte_level())));
    let template = TemplateProcessing::builder()
        .try_single(format!("{BOS_TOKEN} $A"))
        .and_then(|b| b.try_pair(format!("{BOS_TOKEN} $A {BOS_TOKEN} $B")))
        .map_err(|e| tokenizers_err("the BOS template", e))?
        .special_tokens(vec![(BOS_TOKEN, BOS_ID)])
        .build()
        .map_err(|e| tokenizers_err("the BOS template", e))?;
    tok.with_post_processor(Some(PostProcessorWrapper::Template(template)));
    Ok(tok)
}

/// tokenizer_config.json as transformers writes it for this tokenizer. `tokenizer_class` is
/// `PreTrainedTokenizerFast`, which takes tokenizer.json as it is (a Llama class could rebuild
/// the pipeline for SentencePiece-style `▁` pieces), and `clean_up_tokenization_spaces` is off
/// so decoding gives the text back exactly there too.
fn tokenizer_config(model_max_length: usize) -> serde_json::Value {
    let added = |content: &str| {
        json!({
            "content": content, "lstrip": false, "normalized": false, "rstrip": false,
            "single_word": false, "special": true
        })
    };
    json!({
        "add_bos_token": true,
        "add_eos_token": false,
        "added_tokens_decoder": {
            UNK_ID.to_string(): added(UNK_TOKEN),
            BOS_ID.to_string(): added(BOS_TOKEN),
            EOS_ID.to_string(): added(EOS_TOKEN),
        },
        "bos_token": BOS_TOKEN,
        "clean_up_tokenization_spaces": false,
        "eos_token": EOS_TOKEN,
        "model_max_length": model_max_length,
        "pad_token": null,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": UNK_TOKEN,
    })
}

fn special_tokens_map() -> serde_json::Value {
    json!({ "bos_token": BOS_TOKEN, "eos_token": EOS_TOKEN, "unk_token": UNK_TOKEN })
}

/// Trains the byte-level BPE on `texts` (each string one document) and writes `dir`'s
/// tokenizer.json, tokenizer_config.json and special_tokens_map.json (each atomically; `dir` is
/// created if missing). The same texts and options give byte-identical files.
///
/// ```no_run
/// use brainstacks_train::demo::tokenizer::{TokenizerTraining, train_tokenizer};
/// let texts = vec!["### Instruction:\nAdd 12 and 30.\n\n### Response:\n42".to_string()];
/// let stats = train_tokenizer(&texts, &TokenizerTraining::default(), "out/model".as_ref())?;
/// println!("{} tokens, {:.2} chars/token", stats.vocab_size, stats.chars_per_token());
/// # Ok::<(), brainstacks_train::Error>(())
/// ```
pub fn train_tokenizer(texts: &[String], opts: &TokenizerTraining, dir: &Path) -> Result<TokenizerStats> {
    if opts.vocab_size < BASE_VOCAB_SIZE {
        return Err(invalid(format!(
            "vocab_size {} is below {BASE_VOCAB_SIZE} (3 special tokens and the 256 byte symbols)",
            opts.vocab_size
        )));
    }
    if opts.model_max_length == 0 {
        return Err(invalid("model_max_length must be at least 1"));
    }
    if texts.iter().all(|t| t.is_empty()) {
        return Err(invalid("no text to train on"));
    }

    let mut tok = untrained()?;
    let specials = [UNK_TOKEN, BOS_TOKEN, EOS_TOKEN].map(|t| AddedToken::from(t, true)).to_vec();
    let trainer = BpeTrainerBuilder::new()
        .vocab_size(opts.vocab_size)
        .min_frequency(opts.min_frequency)
        .show_progress(false)
        .special_tokens(specials)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    let mut trainer = TrainerWrapper::BpeTrainer(trainer);
    tok.train(&mut trainer, texts.iter()).map_err(|e| tokenizers_err("training", e))?;

    // The specials must have landed where Llama's config expects them.
    for (t, id) in [(UNK_TOKEN, UNK_ID), (BOS_TOKEN, BOS_ID), (EOS_TOKEN, EOS_ID)] {
        if tok.token_to_id(t) != Some(id) {
            return Err(invalid(format!("{t} got id {:?}, expected {id}", tok.token_to_id(t))));
        }
    }

    let mut tokens = 0;
    for text in texts {
        tokens += tok.encode(text.as_str(), false).map_err(|e| tokenizers_err("encoding the corpus", e))?.len();
    }
    let stats = TokenizerStats {
        vocab_size: tok.get_vocab_size(true),
        documents: texts.len(),
        chars: texts.iter().map(|t| t.chars().count()).sum(),
        tokens,
    };

    std::fs::create_dir_all(dir).map_err(|e| invalid(format!("creating {}: {e}", dir.display())))?;
    let tokenizer_json = tok.to_string(true).map_err(|e| tokenizers_err("serializing tokenizer.json", e))?;
    let pretty = |v: serde_json::Value| serde_json::to_string_pretty(&v).expect("a json! value always serializes");
    let files = [
        ("tokenizer.json", tokenizer_json),
        ("tokenizer_config.json", pretty(tokenizer_config(opts.model_max_length))),
        ("special_tokens_map.json", pretty(special_tokens_map())),
    ];
    for (name, text) in files {
        brainstacks_tensor::io::write_atomic_bytes(&dir.join(name), text.as_bytes())?;
    }
    Ok(stats)
}

#[cfg(test)]
mod tests;
