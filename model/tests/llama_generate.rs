//! The tokenizer and decoding against transformers, on the tiny `llama3` fixture and the
//! tokenizer and references written by `scripts/fixtures/make_generation_fixture.py`.

use std::path::{Path, PathBuf};

use brainstacks_model::llama::{GenerateOptions, LlamaModel, LlamaTokenizer, LoadOptions, StopReason, TextStream, alpaca_prompt};
use serde_json::Value;

type R = Result<(), Box<dyn std::error::Error>>;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_llama_llama3")
}

fn reference() -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir().join("generation_reference.json")).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

/// Our ids (with and without special tokens) and decoded text equal AutoTokenizer's, for plain
/// text, both Alpaca templates, unseen characters (`<unk>`), odd whitespace and the empty string.
#[test]
fn tokenizer_matches_transformers() -> R {
    let tok = LlamaTokenizer::from_dir(dir())?;
    assert_eq!((tok.vocab_size(), tok.bos_token_id, tok.eos_token_id), (97, Some(1), Some(2)));
    assert_eq!((tok.add_bos_token, tok.add_eos_token), (Some(true), Some(false)));
    let r = reference();
    let cases = r["encode"].as_array().unwrap();
    assert!(cases.iter().any(|c| c["text"] == alpaca_prompt("What is two plus two?", None).as_str()));
    assert!(cases.iter().any(|c| c["text"] == alpaca_prompt("Add the numbers.", Some("3 and 4")).as_str()));
    for c in cases {
        let text = c["text"].as_str().unwrap();
        let got = tok.encode(text, true)?;
        assert_eq!(got, ids(&c["ids"]), "{text:?}");
        assert_eq!(tok.encode(text, false)?, ids(&c["ids_no_special"]), "{text:?}");
        assert_eq!(tok.decode(&got, true)?, c["decoded"].as_str().unwrap(), "{text:?}");
    }
    Ok(())
}

/// `add_bos_token` / `add_eos_token` from tokenizer_config.json win over the post-processor, a
/// BOS typed in the text stays, and an Alpaca example ends with EOS.
#[test]
fn special_token_flags_and_alpaca_examples() -> R {
    let scratch = std::env::temp_dir().join(format!("bs-tok-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let cfg = scratch.join("tokenizer_config.json");
    let json = dir().join("tokenizer.json");
    let text = "the cat sat";
    let base = LlamaTokenizer::from_dir(dir())?.encode(text, false)?;
    for (bos, eos) in [(false, false), (true, true), (false, true)] {
        std::fs::write(
            &cfg,
            format!(r#"{{"bos_token": {{"content": "<s>"}}, "eos_token": "</s>", "add_bos_token": {bos}, "add_eos_token": {eos}}}"#),
        )?;
        let tok = LlamaTokenizer::from_files(&json, Some(&cfg))?;
        let mut want = base.clone();
        if bos {
            want.insert(0, 1);
        }
        if eos {
            want.push(2);
        }
        assert_eq!(tok.encode(text, true)?, want, "bos {bos} eos {eos}");
        assert_eq!(tok.encode(&format!("<s>{text}"), true)?.first(), Some(&1), "a typed BOS stays");
    }
    std::fs::write(&cfg, r#"{"bos_token": "<nope>"}"#)?;
    assert!(LlamaTokenizer::from_files(&json, Some(&cfg)).unwrap_err().to_string().contains("<nope>"));
    std::fs::remove_dir_all(&scratch)?;

    let tok = LlamaTokenizer::from_dir(dir())?;
    let (ex, prompt_len) = tok.encode_alpaca("What is two plus two?", None, "Four.")?;
    let prompt = tok.encode(&alpaca_prompt("What is two plus two?", None), true)?;
    assert_eq!(&ex[..prompt_len], &prompt[..]);
    assert_eq!((ex[0], *ex.last().unwrap()), (1, 2));
    assert_eq!(tok.decode(&ex, true)?, format!("{}Four.", alpaca_prompt("What is two plus two?", None)));
    Ok(())
}

/// Greedy decoding (with and without a repetition penalty) gives transformers'
/// `generate(do_sample=False)` ids token for token, and the streamed ids are the returned ones.
#[test]
fn greedy_matches_transformers_generate() -> R {
    let m = LlamaModel::load(dir(), &LoadOptions::default())?;
    for c in reference()["generate"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        let want = ids(&c["new_ids"]);
        let opts = GenerateOptions {
            max_new_tokens: c["max_new_tokens"].as_u64().unwrap() as usize,
            repetition_penalty: c["repetition_penalty"].as_f64().unwrap(),
            ..Default::default()
        };
        let mut streamed = Vec::new();
        let g = m.generate(&ids(&c["prompt"]), &opts, |id| {
            streamed.push(id);
            true
        })?;
        assert_eq!(g.ids, want, "{name}");
        assert_eq!(streamed, want, "{name}");
        let stop = if want.last() == Some(&2) { StopReason::Eos } else { StopReason::MaxTokens };
        assert_eq!(g.stop, stop, "{name}");
        println!("{name}: {} tokens equal transformers'", want.len());
    }
    Ok(())
}

/// Sampling: a seed reproduces the tokens, another seed (almost surely) differs, the callback can
/// stop early, EOS stops, and the streamed text adds up to the decoded text.
#[test]
fn sampling_is_seeded_and_streams_text() -> R {
    let m = LlamaModel::load(dir(), &LoadOptions::default())?;
    let tok = LlamaTokenizer::from_dir(dir())?;
    let prompt = tok.encode(&alpaca_prompt("What is two plus two?", None), true)?;
    let opts = |seed| GenerateOptions {
        max_new_tokens: 20,
        temperature: 0.9,
        top_p: 0.95,
        repetition_penalty: 1.2,
        seed,
        eos_token_ids: Some(vec![]),
    };
    let a = m.generate(&prompt, &opts(7), |_| true)?;
    let b = m.generate(&prompt, &opts(7), |_| true)?;
    let c = m.generate(&prompt, &opts(8), |_| true)?;
    assert_eq!(a, b);
    assert_eq!(a.ids.len(), 20);
    assert_ne!(a.ids, c.ids);

    let mut stream = TextStream::new(&tok, &prompt)?;
    let mut text = String::new();
    let mut n = 0;
    let g = m.generate(&prompt, &opts(7), |id| {
        text.push_str(&stream.push(id).unwrap());
        n += 1;
        n < 5
    })?;
    assert_eq!((g.stop, &g.ids[..]), (StopReason::Callback, &a.ids[..5]));
    let mut all = prompt.clone();
    all.extend(&g.ids);
    assert_eq!(format!("{}{text}", tok.decode(&prompt, true)?), tok.decode(&all, true)?);

    // The first sampled token declared EOS: one token, stopped by EOS.
    let eos = GenerateOptions { eos_token_ids: Some(vec![a.ids[0]]), ..opts(7) };
    let g = m.generate(&prompt, &eos, |_| true)?;
    assert_eq!((g.ids.len(), g.stop), (1, StopReason::Eos));
    // Bad options and prompts are errors.
    assert!(m.generate(&prompt, &GenerateOptions { top_p: 0.0, ..opts(7) }, |_| true).is_err());
    assert!(m.generate(&[], &opts(7), |_| true).is_err());
    assert!(m.generate(&[500], &opts(7), |_| true).is_err());
    Ok(())
}

/// The original Llama / TinyLlama tokenizer.json layout (normalizer instead of pre-tokenizer,
/// byte fallback, fused `<unk>`, Replace/ByteFallback/Fuse/Strip decoder): ids and decoded text
/// equal AutoTokenizer's for accents, emoji, CJK, leading spaces and control characters; and
/// streaming holds back the bytes of a character until it is complete, adding up to the text.
#[test]
fn byte_fallback_tokenizer_matches_transformers_and_streams() -> R {
    let d = dir().with_file_name("tokenizer_llama_legacy");
    let tok = LlamaTokenizer::from_dir(&d)?;
    let r: Value = serde_json::from_str(&std::fs::read_to_string(d.join("reference.json"))?)?;
    for c in r.as_array().unwrap() {
        let text = c["text"].as_str().unwrap();
        let got = tok.encode(text, true)?;
        assert_eq!(got, ids(&c["ids"]), "{text:?}");
        assert_eq!(tok.decode(&got, true)?, c["decoded"].as_str().unwrap(), "{text:?}");
        // Streamed one id at a time after BOS: never a partial character, same text in the end.
        let mut stream = TextStream::new(&tok, &got[..1])?;
        let mut streamed = String::new();
        for &id in &got[1..] {
            let piece = stream.push(id)?;
            assert!(!piece.contains('\u{FFFD}'), "{text:?}: {piece:?}");
            streamed.push_str(&piece);
        }
        streamed.push_str(&stream.finish()?);
        assert_eq!(streamed, c["decoded"].as_str().unwrap(), "{text:?}");
    }
    Ok(())
}
