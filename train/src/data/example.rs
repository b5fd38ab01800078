//! Training examples and the JSONL formats they are read from.
//!
//! One example per line, in either of two forms:
//! - Alpaca: `{"instruction": .., "input": .. (optional, may be empty or null), "output": ..}`;
//! - chat: `{"messages": [{"role": "system" | "user" | "assistant", "content": ..}, ..]}`
//!   (`"human"` is read as user, `"gpt"` and `"model"` as assistant).
//!
//! A line with a `"messages"` key is read as chat, any other object as Alpaca. Blank lines are
//! skipped. Errors name the source and the 1-based line number.
//!
//! Chat mapping onto the Alpaca fields (the method wraps everything in the Alpaca template):
//! - the **last assistant message** is the response; messages after it are ignored;
//! - system messages become the `input` (several are joined by a blank line);
//! - the user message right before the response is the instruction. Earlier user and assistant
//!   turns, when there are any, come first as a transcript, one `User: ..` / `Assistant: ..` line
//!   per turn, followed by a blank line and then that last user message.
//!
//! Cleaning (the method's data hygiene, §3.2): every field has the chat-template tokens of
//! [`CHAT_TEMPLATE_TOKENS`] removed and surrounding whitespace trimmed, then the response is cut
//! to [`ParseOptions::max_response_chars`] characters (2000, as the method's code does).

use std::path::Path;

use serde_json::{Map, Value};

use crate::{Error, Result};

/// One instruction-following example in the Alpaca fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Example {
    pub instruction: String,
    /// Extra context (`### Input:` section); `None` when absent or empty.
    pub input: Option<String>,
    pub response: String,
}

impl Example {
    /// An example with no input section.
    pub fn new(instruction: impl Into<String>, response: impl Into<String>) -> Self {
        Self { instruction: instruction.into(), input: None, response: response.into() }
    }

    /// An example with an input section (an empty `input` counts as none).
    pub fn with_input(instruction: impl Into<String>, input: impl Into<String>, response: impl Into<String>) -> Self {
        let input = input.into();
        Self { instruction: instruction.into(), input: (!input.is_empty()).then_some(input), response: response.into() }
    }
}

/// Chat-template markers of the common model families (ChatML, Llama 2 and 3, Gemma, Phi,
/// Zephyr, plain BOS/EOS spellings). They are removed from every text so a dataset rendered
/// for one model does not teach another model foreign control tokens.
pub const CHAT_TEMPLATE_TOKENS: &[&str] = &[
    "<|im_start|>",
    "<|im_end|>",
    "<|im_sep|>",
    "<start_of_turn>",
    "<end_of_turn>",
    "[INST]",
    "[/INST]",
    "<<SYS>>",
    "<</SYS>>",
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|endoftext|>",
    "<|user|>",
    "<|assistant|>",
    "<|system|>",
    "<|end|>",
    "<|pad|>",
    "<s>",
    "</s>",
    "<bos>",
    "<eos>",
    "<pad>",
];

/// `text` without any of [`CHAT_TEMPLATE_TOKENS`]. Removal repeats until nothing is left to
/// remove, so a marker that only appears once another is cut out (`<<s>s>`) goes too.
///
/// ```
/// use brainstacks_train::data::strip_chat_tokens;
/// assert_eq!(strip_chat_tokens("<|im_start|>user\nHi<|im_end|>"), "user\nHi");
/// assert_eq!(strip_chat_tokens("[INST] 2+2? [/INST]"), " 2+2? ");
/// ```
pub fn strip_chat_tokens(text: &str) -> String {
    let mut out = text.to_string();
    loop {
        let before = out.len();
        for tok in CHAT_TEMPLATE_TOKENS {
            if out.contains(tok) {
                out = out.replace(tok, "");
            }
        }
        // Each pass that changes anything makes the text shorter, so this terminates.
        if out.len() == before {
            return out;
        }
    }
}

/// The first `max_chars` characters of `text` (a cut on a character boundary, never inside a
/// multi-byte character). Returns whether anything was cut.
///
/// ```
/// use brainstacks_train::data::truncate_chars;
/// let mut s = String::from("héllo");
/// assert!(truncate_chars(&mut s, 2));
/// assert_eq!(s, "hé");
/// ```
pub fn truncate_chars(text: &mut String, max_chars: usize) -> bool {
    match text.char_indices().nth(max_chars) {
        Some((byte, _)) => {
            text.truncate(byte);
            true
        }
        None => false,
    }
}

/// How lines become examples.
#[derive(Clone, Debug)]
pub struct ParseOptions {
    /// Responses are cut to this many characters (`None`: never cut). Default 2000.
    pub max_response_chars: Option<usize>,
    /// Remove [`CHAT_TEMPLATE_TOKENS`] from every field. Default on.
    pub strip_chat_tokens: bool,
}

impl Default for ParseOptions {
    fn default() -> Self {
        Self { max_response_chars: Some(2000), strip_chat_tokens: true }
    }
}

/// Which form a line was written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineFormat {
    Alpaca,
    Chat,
}

/// Examples read from one JSONL source, with what was seen on the way.
#[derive(Clone, Debug, Default)]
pub struct JsonlData {
    pub examples: Vec<Example>,
    pub counts: JsonlCounts,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JsonlCounts {
    /// Lines in the source, blank ones included.
    pub lines: usize,
    pub blank: usize,
    pub alpaca: usize,
    pub chat: usize,
    /// Examples whose response was cut to `max_response_chars`.
    pub truncated: usize,
}

/// Reads a JSONL file of Alpaca or chat examples (see the module docs for the formats and the
/// chat mapping). An error names the file, the line and what is wrong with it.
pub fn read_jsonl(path: impl AsRef<Path>, opts: &ParseOptions) -> Result<JsonlData> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Invalid { what: path.display().to_string(), msg: format!("cannot read the JSONL file: {e}") })?;
    parse_jsonl(&text, &path.display().to_string(), opts)
}

/// Parses JSONL text; `source` names it in errors (`source:line: ...`).
///
/// ```
/// use brainstacks_train::data::{parse_jsonl, Example, ParseOptions};
/// let text = r#"{"instruction": "Add 2 and 3.", "input": "", "output": "5"}
///
/// {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}"#;
/// let data = parse_jsonl(text, "mem", &ParseOptions::default()).unwrap();
/// assert_eq!(data.examples, vec![Example::new("Add 2 and 3.", "5"), Example::new("Hi", "Hello!")]);
/// assert_eq!((data.counts.alpaca, data.counts.chat, data.counts.blank), (1, 1, 1));
/// ```
pub fn parse_jsonl(text: &str, source: &str, opts: &ParseOptions) -> Result<JsonlData> {
    let mut data = JsonlData::default();
    for (i, line) in text.lines().enumerate() {
        data.counts.lines += 1;
        if line.trim().is_empty() {
            data.counts.blank += 1;
            continue;
        }
        let at = |msg: String| Error::Invalid { what: format!("{source}:{}", i + 1), msg };
        let (example, format, truncated) = parse_line(line, opts).map_err(at)?;
        match format {
            LineFormat::Alpaca => data.counts.alpaca += 1,
            LineFormat::Chat => data.counts.chat += 1,
        }
        data.counts.truncated += usize::from(truncated);
        data.examples.push(example);
    }
    Ok(data)
}

/// One non-blank line: the example, its format, and whether the response was cut.
/// The error is the message without the location (the caller adds it).
pub fn parse_line(line: &str, opts: &ParseOptions) -> std::result::Result<(Example, LineFormat, bool), String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("bad JSON: {e}"))?;
    let Value::Object(obj) = value else {
        return Err(format!("expected a JSON object, found {}", kind(&value)));
    };
    let (raw, format) =
        if obj.contains_key("messages") { (chat_example(&obj)?, LineFormat::Chat) } else { (alpaca_example(&obj)?, LineFormat::Alpaca) };
    let clean = |s: &str| {
        let s = if opts.strip_chat_tokens { strip_chat_tokens(s) } else { s.to_string() };
        s.trim().to_string()
    };
    let instruction = clean(&raw.instruction);
    let input = raw.input.as_deref().map(clean).filter(|s| !s.is_empty());
    let mut response = clean(&raw.response);
    if instruction.is_empty() {
        return Err("the instruction is empty (after removing chat-template tokens)".into());
    }
    if response.is_empty() {
        return Err("the response is empty (after removing chat-template tokens)".into());
    }
    let truncated = opts.max_response_chars.is_some_and(|n| truncate_chars(&mut response, n));
    Ok((Example { instruction, input, response }, format, truncated))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn string_field(obj: &Map<String, Value>, key: &str, form: &str) -> std::result::Result<String, String> {
    match obj.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(v) => Err(format!("field {key:?} must be a string, found {}", kind(v))),
        None => Err(format!("missing field {key:?} ({form} form; a chat example has a \"messages\" array instead)")),
    }
}

fn alpaca_example(obj: &Map<String, Value>) -> std::result::Result<Example, String> {
    const FORM: &str = "Alpaca form: \"instruction\", optional \"input\", \"output\"";
    let instruction = string_field(obj, "instruction", FORM)?;
    let response = string_field(obj, "output", FORM)?;
    let input = match obj.get("input") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(v) => {
            return Err(format!("field \"input\" must be a string or null, found {}", kind(v)));
        }
    };
    Ok(Example { instruction, input, response })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    System,
    User,
    Assistant,
}

fn chat_example(obj: &Map<String, Value>) -> std::result::Result<Example, String> {
    let Some(Value::Array(messages)) = obj.get("messages") else {
        return Err(format!("field \"messages\" must be an array, found {}", kind(&obj["messages"])));
    };
    let mut turns = Vec::with_capacity(messages.len());
    for (k, m) in messages.iter().enumerate() {
        let Value::Object(m) = m else {
            return Err(format!("messages[{k}] must be an object with \"role\" and \"content\", found {}", kind(m)));
        };
        let role = match m.get("role") {
            Some(Value::String(r)) => match r.as_str() {
                "system" => Role::System,
                "user" | "human" => Role::User,
                "assistant" | "gpt" | "model" => Role::Assistant,
                other => {
                    return Err(format!("messages[{k}]: unknown role {other:?} (expected system, user or assistant)"));
                }
            },
            Some(v) => {
                return Err(format!("messages[{k}]: \"role\" must be a string, found {}", kind(v)));
            }
            None => return Err(format!("messages[{k}]: missing field \"role\"")),
        };
        let content = match m.get("content") {
            Some(Value::String(c)) => c.as_str(),
            Some(v) => {
                return Err(format!("messages[{k}]: \"content\" must be a string, found {}", kind(v)));
            }
            None => return Err(format!("messages[{k}]: missing field \"content\"")),
        };
        turns.push((role, content));
    }
    let Some(last_assistant) = turns.iter().rposition(|(r, _)| *r == Role::Assistant) else {
        return Err("the conversation has no assistant turn to use as the response".into());
    };
    let response = turns[last_assistant].1.to_string();
    let before = &turns[..last_assistant];
    let system: Vec<&str> = before.iter().filter(|(r, _)| *r == Role::System).map(|(_, c)| *c).collect();
    let dialogue: Vec<(Role, &str)> = before.iter().filter(|(r, _)| *r != Role::System).copied().collect();
    let Some((&(Role::User, question), history)) = dialogue.split_last() else {
        return Err("the last assistant turn does not follow a user turn".into());
    };
    let mut instruction = String::new();
    for (role, content) in history {
        let who = if *role == Role::User { "User" } else { "Assistant" };
        instruction.push_str(&format!("{who}: {content}\n"));
    }
    if !history.is_empty() {
        instruction.push('\n');
    }
    instruction.push_str(question);
    let input = (!system.is_empty()).then(|| system.join("\n\n"));
    Ok(Example { instruction, input, response })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str) -> std::result::Result<Example, String> {
        parse_line(line, &ParseOptions::default()).map(|(e, _, _)| e)
    }

    #[test]
    fn alpaca_with_and_without_input() {
        let e = one(r#"{"instruction": "Sum", "input": "1 2", "output": "3"}"#).unwrap();
        assert_eq!(e, Example::with_input("Sum", "1 2", "3"));
        let e = one(r#"{"instruction": "Sum", "input": null, "output": "3"}"#).unwrap();
        assert_eq!(e.input, None);
        let e = one(r#"{"instruction": "Sum", "input": "  ", "output": "3"}"#).unwrap();
        assert_eq!(e.input, None);
        let e = one(r#"{"instruction": "Sum", "output": "3"}"#).unwrap();
        assert_eq!(e, Example::new("Sum", "3"));
    }

    #[test]
    fn chat_mapping_system_history_and_last_assistant() {
        let line = r#"{"messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": "4"},
            {"role": "user", "content": "And 3+3?"},
            {"role": "assistant", "content": "6"},
            {"role": "user", "content": "trailing, ignored"}]}"#;
        let line = line.replace('\n', " ");
        let e = one(&line).unwrap();
        assert_eq!(e.instruction, "User: What is 2+2?\nAssistant: 4\n\nAnd 3+3?");
        assert_eq!(e.input.as_deref(), Some("Be brief."));
        assert_eq!(e.response, "6");
    }

    #[test]
    fn chat_errors_say_what_is_wrong() {
        let e = one(r#"{"messages": [{"role": "user", "content": "Hi"}]}"#).unwrap_err();
        assert!(e.contains("no assistant turn"), "{e}");
        let e = one(r#"{"messages": [{"role": "system", "content": "S"}, {"role": "assistant", "content": "A"}]}"#).unwrap_err();
        assert!(e.contains("does not follow a user turn"), "{e}");
        let e = one(r#"{"messages": [{"role": "bot", "content": "A"}]}"#).unwrap_err();
        assert!(e.contains("unknown role \"bot\""), "{e}");
        let e = one(r#"{"messages": [{"role": "user"}]}"#).unwrap_err();
        assert!(e.contains("messages[0]: missing field \"content\""), "{e}");
        let e = one(r#"{"messages": "hi"}"#).unwrap_err();
        assert!(e.contains("must be an array"), "{e}");
    }

    #[test]
    fn errors_carry_source_and_line() {
        let text = "{\"instruction\": \"a\", \"output\": \"b\"}\n\n{\"instruction\": \"a\"}\n";
        let err = parse_jsonl(text, "math.jsonl", &ParseOptions::default()).unwrap_err().to_string();
        assert!(err.starts_with("math.jsonl:3: missing field \"output\""), "{err}");
        let err = parse_jsonl("{not json", "x.jsonl", &ParseOptions::default()).unwrap_err().to_string();
        assert!(err.starts_with("x.jsonl:1: bad JSON"), "{err}");
        let err = parse_jsonl("[1, 2]", "x.jsonl", &ParseOptions::default()).unwrap_err().to_string();
        assert!(err.contains("expected a JSON object, found an array"), "{err}");
        let err = parse_jsonl(r#"{"instruction": 3, "output": "b"}"#, "x", &ParseOptions::default()).unwrap_err().to_string();
        assert!(err.contains("\"instruction\" must be a string, found a number"), "{err}");
    }

    #[test]
    fn missing_file_is_named() {
        let err = read_jsonl("/nonexistent/dir/d.jsonl", &ParseOptions::default()).unwrap_err().to_string();
        assert!(err.starts_with("/nonexistent/dir/d.jsonl: cannot read"), "{err}");
    }

    #[test]
    fn chat_tokens_are_stripped_everywhere() {
        let line =
            r#"{"instruction": "<s>[INST] Q <|eot_id|>", "input": "<<SYS>>ctx<</SYS>>", "output": "<start_of_turn>A<end_of_turn></s>"}"#;
        let e = one(line).unwrap();
        assert_eq!(e, Example::with_input("Q", "ctx", "A"));
        assert_eq!(strip_chat_tokens("<<s>s>x"), "x");
        // Only the markers go: ordinary angle brackets stay.
        assert_eq!(strip_chat_tokens("a < b > c <|x|>"), "a < b > c <|x|>");
        let opts = ParseOptions { strip_chat_tokens: false, ..Default::default() };
        let (e, _, _) = parse_line(r#"{"instruction": "<s>Q", "output": "A"}"#, &opts).unwrap();
        assert_eq!(e.instruction, "<s>Q");
        // A text made only of markers is empty once they are gone.
        let e = one(r#"{"instruction": "Q", "output": "<|im_end|>"}"#).unwrap_err();
        assert!(e.contains("response is empty"), "{e}");
    }

    #[test]
    fn every_listed_marker_is_removed() {
        let required = [
            "<|im_start|>",
            "<|im_end|>",
            "<start_of_turn>",
            "<end_of_turn>",
            "[INST]",
            "[/INST]",
            "<s>",
            "</s>",
            "<|eot_id|>",
            "<|start_header_id|>",
            "<|end_header_id|>",
            "<|begin_of_text|>",
            "<|endoftext|>",
            "<|user|>",
            "<|assistant|>",
            "<|system|>",
            "<<SYS>>",
            "<</SYS>>",
            "<bos>",
            "<eos>",
        ];
        for t in required {
            assert!(CHAT_TEMPLATE_TOKENS.contains(&t), "{t} missing from the list");
        }
        for t in CHAT_TEMPLATE_TOKENS {
            assert_eq!(strip_chat_tokens(&format!("a{t}b{t}{t}c")), "abc", "{t}");
        }
    }

    #[test]
    fn responses_are_cut_on_char_boundaries() {
        let long: String = "é".repeat(2500);
        let line = serde_json::json!({"instruction": "x", "output": long}).to_string();
        let data = parse_jsonl(&line, "m", &ParseOptions::default()).unwrap();
        assert_eq!(data.examples[0].response.chars().count(), 2000);
        assert_eq!(data.examples[0].response.len(), 4000);
        assert_eq!(data.counts.truncated, 1);
        let opts = ParseOptions { max_response_chars: Some(3), ..Default::default() };
        let data = parse_jsonl(r#"{"instruction": "x", "output": "a😀bcd"}"#, "m", &opts).unwrap();
        assert_eq!(data.examples[0].response, "a😀b");
        let opts = ParseOptions { max_response_chars: None, ..Default::default() };
        let data = parse_jsonl(&line, "m", &opts).unwrap();
        assert_eq!(data.examples[0].response.chars().count(), 2500);
        let mut s = String::from("abc");
        assert!(!truncate_chars(&mut s, 3));
        assert_eq!(s, "abc");
    }
}
