//! Deterministic instruction data for `brainstacks demo`, one generator per domain, written as
//! Alpaca JSONL (the format a user would bring).
//!
//! The four domains are trained in curriculum order ([`DOMAINS`]) and are built to overlap the
//! way the method needs: math answers are bare worked steps in one fixed format, chat answers
//! share one house style, and medical answers need both at once (math's steps inside chat's
//! style). Code is the odd one out: traces of small programs that are actually run.
//!
//! Everything is a function of (domain, seed, example index): example `i` is the same on every
//! machine and for every `n`. The vocabulary is kept small (about 630 word types over all four
//! domains, most of them chat's) and responses short (20 to 40 words on average) so a tiny
//! model can learn them in minutes and most examples fit a 128-token sequence.
//!
//! One sample per domain, `generate(domain, n, 0)[i]` for the `#i` shown:
//!
//! ```text
//! chat #3     Q: Can you tell me how to write a short letter?
//!             A: To write a short letter, follow these steps.
//!                - Start with a friendly greeting.
//!                - Say why you are writing.
//!                - Keep each part short and clear.
//!                - End with a kind closing and your name.
//!                Let me know if you have more questions.
//! code #7     Q: Trace this program step by step.
//!         input: n = 5
//!                s = 9
//!                for i in range(3):
//!                    n = n - 3
//!                print(s)
//!                print(n)
//!             A: n = 5
//!                s = 9
//!                i=0: n = 5 - 3 = 2
//!                i=1: n = 2 - 3 = -1
//!                i=2: n = -1 - 3 = -4
//!                print 9
//!                print -4
//!                Output: 9 -4
//! math #4     Q: Solve step by step. A machine makes 35 parts per hour for 5 hours, then 20
//!                parts per hour for 4 hours. What is the total in parts?
//!             A: Step 1: 35 x 5 = 175
//!                Step 2: 20 x 4 = 80
//!                Step 3: 175 + 80 = 255
//!                Answer: 255 parts
//! medical #16 Q: A person weighs 231 lb and is 1.76 m tall. What is the BMI?
//!             A: Let us work it out.
//!                Step 1: 231 / 2.2 = 105
//!                Step 2: 1.76 x 1.76 = 3.1
//!                Step 3: 105 / 3.1 = 33.87
//!                Answer: 33.9 (obese)
//!                - A BMI of 30 or more is obese.
//!                I hope this helps!
//! ```
//!
//! ```no_run
//! use brainstacks_train::demo::generators::{generate, write_alpaca_jsonl, DOMAINS};
//! for domain in DOMAINS {
//!     let examples = generate(domain, 500, 0)?;
//!     write_alpaca_jsonl(format!("data/{domain}.jsonl").as_ref(), &examples)?;
//! }
//! # Ok::<(), brainstacks_train::Error>(())
//! ```

mod chat;
mod code;
mod math;
mod medical;
mod rng;
mod steps;

use std::path::Path;

use crate::data::Example;
use crate::{Error, Result};
use rng::Rng;

/// The demo's domains, in curriculum order.
pub const DOMAINS: [&str; 4] = ["chat", "code", "math", "medical"];

/// `n` examples of `domain`, the same for the same (domain, n, seed) on every machine; example
/// `i` does not depend on `n`.
///
/// ```
/// use brainstacks_train::demo::generators::generate;
/// let a = generate("math", 3, 7).unwrap();
/// assert_eq!(a, generate("math", 3, 7).unwrap());
/// assert_eq!(a[..2], generate("math", 2, 7).unwrap()[..]);
/// assert!(a[0].response.contains("Answer: "));
/// assert!(generate("poetry", 3, 7).is_err());
/// ```
pub fn generate(domain: &str, n: usize, seed: u64) -> Result<Vec<Example>> {
    let make: fn(&mut Rng) -> Example = match domain {
        "chat" => chat::example,
        "code" => code::example,
        "math" => math::example,
        "medical" => medical::example,
        other => {
            return Err(Error::Invalid {
                what: format!("demo domain {other:?}"),
                msg: format!("unknown domain; the demo generates {}", DOMAINS.join(", ")),
            });
        }
    };
    Ok((0..n).map(|i| make(&mut Rng::for_example(domain, seed, i as u64))).collect())
}

/// Writes `examples` as Alpaca JSONL, one `{"instruction":..,"input":..,"output":..}` object per
/// line (`input` is `""` when the example has none), atomically: a reader sees the old file or
/// the whole new one.
pub fn write_alpaca_jsonl(path: &Path, examples: &[Example]) -> Result<()> {
    /// Field order as users see it in Alpaca files (a `json!` map would sort the keys).
    #[derive(serde::Serialize)]
    struct Line<'a> {
        instruction: &'a str,
        input: &'a str,
        output: &'a str,
    }
    let mut text = String::new();
    for e in examples {
        let line = Line { instruction: &e.instruction, input: e.input.as_deref().unwrap_or(""), output: &e.response };
        let json = serde_json::to_string(&line)
            .map_err(|err| Error::Invalid { what: path.display().to_string(), msg: format!("cannot encode an example as JSON: {err}") })?;
        text.push_str(&json);
        text.push('\n');
    }
    brainstacks_tensor::io::write_atomic_bytes(path, text.as_bytes())?;
    Ok(())
}

/// A rough token count for a tokenizer trained on this data: each word one token, each digit
/// and each other symbol one token (Llama-style BPE splits numbers into digits).
fn rough_tokens(text: &str) -> usize {
    let mut n = 0;
    let mut in_word = false;
    for c in text.chars() {
        if c.is_ascii_alphabetic() {
            n += usize::from(!in_word);
            in_word = true;
        } else {
            in_word = false;
            n += usize::from(!c.is_whitespace());
        }
    }
    n
}

#[cfg(test)]
mod tests;
