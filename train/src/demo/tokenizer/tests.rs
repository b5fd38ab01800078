use std::path::PathBuf;

use brainstacks_model::llama::{LlamaTokenizer, alpaca_prompt};

use super::*;

/// A fresh directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("bs-demo-tok-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A small deterministic generator (64-bit LCG, high bits), so the corpora need no crate.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const WORDS: &[&str] = &[
    "the", "river", "stone", "blue", "quickly", "garden", "of", "and", "a", "light", "winter", "small", "write", "poem", "about", "list",
    "three", "colors", "name", "city", "near", "sea", "explain", "why", "sky",
];

/// Alpaca-formatted examples: sums (digits) and short sentences, as the demo corpus has.
fn alpaca_corpus(n: usize, seed: u64) -> Vec<String> {
    let mut rng = Lcg(seed);
    (0..n)
        .map(|i| {
            if i % 2 == 0 {
                let (a, b) = (rng.below(1000), rng.below(1000));
                format!("{}{}", alpaca_prompt(&format!("Add {a} and {b}."), None), a + b)
            } else {
                let mut sentence = |k: u64| (0..k).map(|_| WORDS[rng.below(WORDS.len() as u64) as usize]).collect::<Vec<_>>().join(" ");
                let (instr, input, answer) = (sentence(4), sentence(3), sentence(8));
                format!("{}{answer}.", alpaca_prompt(&instr, Some(&input)))
            }
        })
        .collect()
}

const TRICKY: &[&str] = &[
    "### Response:\n",
    "Line one\nline two\n\n\n### Instruction:\nAdd 12 and 30.\n\n### Response:\n42",
    "  two leading spaces, trailing ones  ",
    "\t\ttabs\r\nand CRLF\r\n",
    "12345 + 678 = 13023; -0.5e10",
    "naïve café — 東京 🚀 Ünïcödé ½ ⅞ ٣",
    "",
    " ",
    "\n",
    "don't they'll I'm",
];

fn train_into(texts: &[String], opts: &TokenizerTraining, name: &str) -> (TempDir, TokenizerStats, LlamaTokenizer) {
    let dir = TempDir::new(name);
    let stats = train_tokenizer(texts, opts, &dir.0).unwrap();
    let tok = LlamaTokenizer::from_dir(&dir.0).unwrap();
    (dir, stats, tok)
}

/// Random strings over ASCII, newlines, Latin-1, CJK and emoji, so byte-level fallbacks for
/// characters never seen in training are exercised too.
fn random_text(rng: &mut Lcg) -> String {
    let len = rng.below(40);
    (0..len)
        .map(|_| {
            let c = match rng.below(6) {
                0 => b" \n\t"[rng.below(3) as usize] as u32,
                1 => 0x30 + rng.below(10) as u32,
                2 => 0x20 + rng.below(95) as u32,
                3 => 0xA0 + rng.below(0x160) as u32,
                4 => 0x4E00 + rng.below(0x5000) as u32,
                _ => 0x1F300 + rng.below(0x300) as u32,
            };
            char::from_u32(c).unwrap()
        })
        .collect()
}

#[test]
fn decode_of_encode_is_the_text_exactly() {
    let (_dir, _, tok) = train_into(&alpaca_corpus(400, 1), &TokenizerTraining::default(), "roundtrip");
    let mut rng = Lcg(7);
    let randoms: Vec<String> = (0..300).map(|_| random_text(&mut rng)).collect();
    for text in TRICKY.iter().copied().chain(randoms.iter().map(String::as_str)) {
        let plain = tok.encode(text, false).unwrap();
        assert!(!plain.contains(&UNK_ID), "{text:?} produced <unk>: {plain:?}");
        assert_eq!(tok.decode(&plain, false).unwrap(), text, "ids {plain:?}");
        let with_bos = tok.encode(text, true).unwrap();
        assert_eq!(with_bos[0], BOS_ID);
        assert_eq!(&with_bos[1..], &plain[..]);
        assert_eq!(tok.decode(&with_bos, true).unwrap(), text);
    }
}

#[test]
fn every_digit_is_its_own_token() {
    let (_dir, _, tok) = train_into(&alpaca_corpus(400, 1), &TokenizerTraining::default(), "digits");
    for text in ["1234567890", "Add 347 and 29.", " 100"] {
        let ids = tok.encode(text, false).unwrap();
        let pieces: Vec<String> = ids.iter().map(|&id| tok.decode(&[id], false).unwrap()).collect();
        let digits: Vec<&String> = pieces.iter().filter(|p| p.chars().any(|c| c.is_ascii_digit())).collect();
        assert_eq!(digits.len(), text.chars().filter(char::is_ascii_digit).count(), "{pieces:?}");
        assert!(digits.iter().all(|p| p.len() == 1), "{pieces:?}");
    }
}

#[test]
fn the_saved_directory_loads_as_a_llama_tokenizer() {
    let texts = alpaca_corpus(400, 1);
    let (dir, stats, tok) = train_into(&texts, &TokenizerTraining::default(), "llama");
    assert_eq!(tok.bos_token_id, Some(BOS_ID));
    assert_eq!(tok.eos_token_id, Some(EOS_ID));
    assert_eq!(tok.token_to_id(UNK_TOKEN), Some(UNK_ID));
    assert_eq!((tok.add_bos_token, tok.add_eos_token), (Some(true), Some(false)));
    assert_eq!(tok.vocab_size(), stats.vocab_size);

    let (ids, prompt_len) = tok.encode_alpaca("Add 12 and 30.", None, "42").unwrap();
    assert_eq!(ids[0], BOS_ID);
    assert_eq!(*ids.last().unwrap(), EOS_ID);
    assert_eq!(ids.iter().filter(|&&id| id == BOS_ID || id == EOS_ID).count(), 2);
    let prompt = alpaca_prompt("Add 12 and 30.", None);
    assert_eq!(tok.decode(&ids[..prompt_len], true).unwrap(), prompt);
    assert_eq!(tok.decode(&ids, true).unwrap(), format!("{prompt}42"));

    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.0.join("tokenizer_config.json")).unwrap()).unwrap();
    assert_eq!(cfg["unk_token"], UNK_TOKEN);
    assert_eq!(cfg["model_max_length"], 2048);
    let map: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.0.join("special_tokens_map.json")).unwrap()).unwrap();
    assert_eq!(map, serde_json::json!({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}));
}

#[test]
fn stats_count_the_corpus_with_the_trained_tokenizer() {
    let texts = alpaca_corpus(200, 3);
    let (_dir, stats, tok) = train_into(&texts, &TokenizerTraining::default(), "stats");
    assert_eq!(stats.documents, 200);
    assert_eq!(stats.chars, texts.iter().map(|t| t.chars().count()).sum::<usize>());
    let tokens: usize = texts.iter().map(|t| tok.encode(t, false).unwrap().len()).sum();
    assert_eq!(stats.tokens, tokens);
    assert!(stats.chars_per_token() > 2.0, "{stats:?}");
}

#[test]
fn training_twice_gives_byte_identical_files() {
    // Each training builds its hash maps with fresh random seeds, so this also shows that the
    // hash order does not reach the result.
    let texts = alpaca_corpus(600, 11);
    let opts = TokenizerTraining { vocab_size: 700, ..Default::default() };
    let (a, _, _) = train_into(&texts, &opts, "det-a");
    let (b, _, _) = train_into(&texts, &opts, "det-b");
    for name in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"] {
        let (x, y) = (std::fs::read(a.0.join(name)).unwrap(), std::fs::read(b.0.join(name)).unwrap());
        assert!(x == y, "{name} differs between two trainings on the same texts");
    }
}

#[test]
fn the_vocabulary_size_is_honoured() {
    let texts = alpaca_corpus(400, 5);
    for want in [BASE_VOCAB_SIZE, 300, 400] {
        let opts = TokenizerTraining { vocab_size: want, ..Default::default() };
        let (_dir, stats, tok) = train_into(&texts, &opts, &format!("vocab-{want}"));
        // This corpus (25 words, digits kept apart) has about 190 merges to offer, so 400 is reached.
        assert_eq!(stats.vocab_size, want);
        assert_eq!(tok.vocab_size(), want);
    }
    // A corpus with few distinct pairs stops short of the request.
    let (_dir, stats, _) = train_into(&["ab ab ab ab".to_string()], &TokenizerTraining::default(), "vocab-tiny");
    assert!(stats.vocab_size > 256 && stats.vocab_size <= 1024, "{stats:?}");
    assert_eq!(stats.vocab_size, BASE_VOCAB_SIZE + 2); // "ab" and " ab"
}

#[test]
fn bad_settings_are_errors() {
    let dir = TempDir::new("bad");
    let texts = alpaca_corpus(4, 1);
    let small = TokenizerTraining { vocab_size: 258, ..Default::default() };
    assert!(train_tokenizer(&texts, &small, &dir.0).is_err());
    assert!(train_tokenizer(&[], &TokenizerTraining::default(), &dir.0).is_err());
    assert!(train_tokenizer(&[String::new()], &TokenizerTraining::default(), &dir.0).is_err());
    let no_len = TokenizerTraining { model_max_length: 0, ..Default::default() };
    assert!(train_tokenizer(&texts, &no_len, &dir.0).is_err());
    assert!(!dir.0.exists(), "nothing is written when the settings are refused");
}

#[test]
fn the_alpaca_boilerplate_becomes_one_token_per_word() {
    let (_dir, _, tok) = train_into(&alpaca_corpus(400, 1), &TokenizerTraining::default(), "boilerplate");
    // The pre-tokenizer cuts this sentence into 18 pieces (16 words, each after the first with
    // its leading space, and the two full stops on their own). BPE cannot merge across pieces,
    // so 18 is the fewest tokens possible, and a corpus where every example carries the
    // sentence reaches it.
    let sentence = "Below is an instruction that describes a task. Write a response that appropriately completes the request.";
    let ids = tok.encode(sentence, false).unwrap();
    assert_eq!(ids.len(), 18, "{ids:?}");
    // The whole prompt (with a one-word instruction) is about 35 tokens for ~150 characters.
    let prompt = alpaca_prompt("Explain.", None);
    let n = tok.encode(&prompt, false).unwrap().len();
    assert!(n <= 35, "{n} tokens for {} chars", prompt.len());
}

/// Pins the exact ids for a fixed corpus. The numbers were computed once with tokenizers 0.23.2
/// and are kept on purpose: the demo's model is trained on these ids, so a change in how the
/// `tokenizers` crate splits, orders or merges (an upgrade, another pre-tokenizer, a regex
/// backend) must show up as a failing test rather than as a silently different vocabulary.
#[test]
fn fixture_ids_are_stable() {
    let corpus: Vec<String> =
        ["the cat sat on the mat", "the cat ate 12 fish", "### Response:\nthe mat is red", "a cat and a mat and a hat"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    let opts = TokenizerTraining { vocab_size: 280, min_frequency: 2, ..Default::default() };
    let (_dir, stats, tok) = train_into(&corpus, &opts, "fixture");
    let got = tok.encode("the cat sat on a mat 12\n### Response:\n", true).unwrap();
    assert_eq!(stats.vocab_size, FIXTURE_VOCAB);
    assert_eq!(got, FIXTURE_IDS);
}

/// 259 base tokens and 13 merges; the corpus has no further pair seen twice (min_frequency 2).
const FIXTURE_VOCAB: usize = 272;
/// Cross-checked by hand where the layout makes it predictable: specials 0..=2, then the 256
/// byte symbols in code-point order (`!` = 3, so an ASCII char c is c - 30; `\n` is U+010A = 201,
/// the space symbol `Ġ` U+0120 = 223), then merges from 259 in the order they were learnt.
const FIXTURE_IDS: &[u32] =
    &[1, 261, 265, 223, 85, 259, 223, 270, 262, 266, 223, 19, 20, 201, 267, 5, 223, 52, 71, 85, 82, 270, 85, 71, 28, 201];
