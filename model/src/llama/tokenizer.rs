//! The tokenizer of a Hugging Face Llama checkpoint (`tokenizer.json` through the `tokenizers`
//! crate, `tokenizer_config.json` for the special tokens) and the Alpaca instruction template
//! the method trains and generates with.
//!
//! Special tokens: `encode(text, true)` applies tokenizer.json's post-processor (for Llama
//! tokenizers a `<s> $A` template, so BOS comes from there, exactly as transformers 5 encodes).
//! When tokenizer_config.json states `add_bos_token` / `add_eos_token` explicitly, the result is
//! then made to agree with them, as transformers 4's Llama tokenizers did by rebuilding the
//! post-processor: a missing BOS (EOS) is added, one that only the post-processor added is
//! removed when the flag is false. A BOS or EOS written in the text itself is always kept.

use std::path::Path;

use serde_json::Value;

use crate::{Error, Result};

fn tok_err(msg: impl Into<String>) -> Error {
    Error::Config { layer: "tokenizer".into(), msg: msg.into() }
}

/// The Alpaca prompt (everything up to and including `### Response:\n`), with or without an
/// input section. The method wraps every training example as `alpaca_prompt(..) + answer`
/// followed by the EOS token, and generates from `alpaca_prompt(instruction, None)`.
pub fn alpaca_prompt(instruction: &str, input: Option<&str>) -> String {
    match input.filter(|s| !s.is_empty()) {
        None => format!(
            "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n\
             ### Instruction:\n{instruction}\n\n### Response:\n"
        ),
        Some(input) => format!(
            "Below is an instruction that describes a task, paired with an input that provides further context. \
             Write a response that appropriately completes the request.\n\n\
             ### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
        ),
    }
}

/// A Llama tokenizer: tokenizer.json plus the special-token settings of tokenizer_config.json.
pub struct LlamaTokenizer {
    inner: tokenizers::Tokenizer,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    /// `add_bos_token` / `add_eos_token` when tokenizer_config.json states them.
    pub add_bos_token: Option<bool>,
    pub add_eos_token: Option<bool>,
}

impl std::fmt::Debug for LlamaTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlamaTokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("bos_token_id", &self.bos_token_id)
            .field("eos_token_id", &self.eos_token_id)
            .field("add_bos_token", &self.add_bos_token)
            .field("add_eos_token", &self.add_eos_token)
            .finish()
    }
}

/// A special token in tokenizer_config.json: a string or an AddedToken object `{"content": ..}`.
fn special_token(cfg: &serde_json::Map<String, Value>, key: &str) -> Result<Option<String>> {
    match cfg.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Object(o)) => match o.get("content") {
            Some(Value::String(s)) => Ok(Some(s.clone())),
            _ => Err(tok_err(format!("tokenizer_config.json: {key:?} is an object without a string \"content\""))),
        },
        Some(v) => Err(tok_err(format!("tokenizer_config.json: {key:?} must be a string or an object, found {v}"))),
    }
}

fn flag(cfg: &serde_json::Map<String, Value>, key: &str) -> Result<Option<bool>> {
    match cfg.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(tok_err(format!("tokenizer_config.json: {key:?} must be a boolean, found {v}"))),
    }
}

/// The special-token settings of a `tokenizer_config.json`: which ids BOS and EOS are, and
/// whether `add_bos_token` / `add_eos_token` are stated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpecialTokens {
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    pub add_bos_token: Option<bool>,
    pub add_eos_token: Option<bool>,
}

impl SpecialTokens {
    /// Reads `bos_token` / `eos_token` (a string or an AddedToken object, looked up with
    /// `token_to_id`) and the two flags from a parsed tokenizer_config.json. A flag that is true
    /// while its token is unset is an error.
    pub fn from_config(cfg: &serde_json::Map<String, Value>, token_to_id: impl Fn(&str) -> Option<u32>) -> Result<Self> {
        let id_of = |key: &str| -> Result<Option<u32>> {
            match special_token(cfg, key)? {
                None => Ok(None),
                Some(t) => {
                    token_to_id(&t).map(Some).ok_or_else(|| tok_err(format!("tokenizer_config.json: {key} {t:?} is not in the vocabulary")))
                }
            }
        };
        let (bos_token_id, eos_token_id) = (id_of("bos_token")?, id_of("eos_token")?);
        let (add_bos_token, add_eos_token) = (flag(cfg, "add_bos_token")?, flag(cfg, "add_eos_token")?);
        for (name, on, id) in [("add_bos_token", add_bos_token, bos_token_id), ("add_eos_token", add_eos_token, eos_token_id)] {
            if on == Some(true) && id.is_none() {
                return Err(tok_err(format!("tokenizer_config.json: {name} is true but its token is not set")));
            }
        }
        Ok(Self { bos_token_id, eos_token_id, add_bos_token, add_eos_token })
    }

    /// [`from_config`](Self::from_config) on the text of a tokenizer_config.json.
    ///
    /// ```
    /// use brainstacks_model::llama::SpecialTokens;
    /// let vocab = |t: &str| match t { "<s>" => Some(1), "</s>" => Some(2), _ => None };
    /// let s = SpecialTokens::from_config_json(r#"{"bos_token": "<s>", "eos_token": {"content": "</s>"}, "add_bos_token": true}"#, vocab).unwrap();
    /// assert_eq!((s.bos_token_id, s.eos_token_id, s.add_bos_token, s.add_eos_token), (Some(1), Some(2), Some(true), None));
    /// assert!(SpecialTokens::from_config_json(r#"{"add_eos_token": true}"#, vocab).is_err());
    /// ```
    pub fn from_config_json(text: &str, token_to_id: impl Fn(&str) -> Option<u32>) -> Result<Self> {
        match serde_json::from_str(text).map_err(|e| tok_err(format!("tokenizer_config.json: {e}")))? {
            Value::Object(o) => Self::from_config(&o, token_to_id),
            _ => Err(tok_err("tokenizer_config.json: expected a JSON object")),
        }
    }
}

impl LlamaTokenizer {
    /// `dir/tokenizer.json` and, when present, `dir/tokenizer_config.json`.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let cfg = dir.join("tokenizer_config.json");
        Self::from_files(&dir.join("tokenizer.json"), cfg.exists().then_some(cfg.as_path()))
    }

    pub fn from_files(tokenizer_json: &Path, tokenizer_config: Option<&Path>) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_file(tokenizer_json).map_err(|e| tok_err(format!("{}: {e}", tokenizer_json.display())))?;
        let cfg = match tokenizer_config {
            None => serde_json::Map::new(),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| tok_err(format!("{}: {e}", p.display())))?;
                match serde_json::from_str(&text).map_err(|e| tok_err(format!("{}: {e}", p.display())))? {
                    Value::Object(o) => o,
                    _ => return Err(tok_err(format!("{}: expected a JSON object", p.display()))),
                }
            }
        };
        let SpecialTokens { bos_token_id, eos_token_id, add_bos_token, add_eos_token } =
            SpecialTokens::from_config(&cfg, |t| inner.token_to_id(t))?;
        Ok(Self { inner, bos_token_id, eos_token_id, add_bos_token, add_eos_token })
    }

    /// Tokens including added ones.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    fn raw(&self, text: &str, special: bool) -> Result<Vec<u32>> {
        Ok(self.inner.encode(text, special).map_err(|e| tok_err(format!("encoding: {e}")))?.get_ids().to_vec())
    }

    /// Token ids of `text`; with `add_special_tokens`, BOS/EOS as described in the module docs.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let mut ids = self.raw(text, add_special_tokens)?;
        if !add_special_tokens || (self.add_bos_token.is_none() && self.add_eos_token.is_none()) {
            return Ok(ids);
        }
        let plain = self.raw(text, false)?;
        if let (Some(on), Some(bos)) = (self.add_bos_token, self.bos_token_id) {
            let has = ids.first() == Some(&bos);
            if on && !has {
                ids.insert(0, bos);
            } else if !on && has && plain.first() != Some(&bos) {
                ids.remove(0);
            }
        }
        if let (Some(on), Some(eos)) = (self.add_eos_token, self.eos_token_id) {
            let has = ids.last() == Some(&eos);
            if on && !has {
                ids.push(eos);
            } else if !on && has && plain.last() != Some(&eos) {
                ids.pop();
            }
        }
        Ok(ids)
    }

    /// The text of `ids` (special tokens dropped with `skip_special_tokens`).
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner.decode(ids, skip_special_tokens).map_err(|e| tok_err(format!("decoding: {e}")))
    }

    /// A training example in the method's format: the Alpaca prompt and the answer, followed
    /// by EOS, with BOS as `encode` adds it. Returns the ids and how many of them are prompt.
    pub fn encode_alpaca(&self, instruction: &str, input: Option<&str>, answer: &str) -> Result<(Vec<u32>, usize)> {
        let prompt = alpaca_prompt(instruction, input);
        let prompt_len = self.encode(&prompt, true)?.len();
        let mut ids = self.encode(&format!("{prompt}{answer}"), true)?;
        let eos = self.eos_token_id.ok_or_else(|| tok_err("an Alpaca example ends with EOS, but eos_token is not set"))?;
        if ids.last() != Some(&eos) {
            ids.push(eos);
        }
        Ok((ids, prompt_len))
    }
}

/// Turns a stream of generated ids into text pieces: each piece is what decoding the whole
/// sequence so far adds to the text already emitted, so word-boundary markers (`▁`) and
/// multi-token characters come out right. A piece is held back while the text ends in an
/// incomplete character (U+FFFD from a partial byte sequence).
pub struct TextStream<'a> {
    tok: &'a LlamaTokenizer,
    ids: Vec<u32>,
    emitted: usize,
}

impl<'a> TextStream<'a> {
    /// `context`: ids already shown (the prompt), so the first piece has its leading space.
    pub fn new(tok: &'a LlamaTokenizer, context: &[u32]) -> Result<Self> {
        let emitted = tok.decode(context, true)?.len();
        Ok(Self { tok, ids: context.to_vec(), emitted })
    }

    /// The new text after `id` (possibly empty).
    pub fn push(&mut self, id: u32) -> Result<String> {
        self.ids.push(id);
        let text = self.tok.decode(&self.ids, true)?;
        if text.ends_with('\u{FFFD}') || text.len() < self.emitted || !text.is_char_boundary(self.emitted) {
            return Ok(String::new());
        }
        let piece = text[self.emitted..].to_string();
        self.emitted = text.len();
        Ok(piece)
    }

    /// Whatever is still held back (an incomplete character at the end, shown as U+FFFD).
    pub fn finish(&mut self) -> Result<String> {
        let text = self.tok.decode(&self.ids, true)?;
        if text.len() <= self.emitted || !text.is_char_boundary(self.emitted) {
            return Ok(String::new());
        }
        let piece = text[self.emitted..].to_string();
        self.emitted = text.len();
        Ok(piece)
    }
}
