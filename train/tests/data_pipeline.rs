//! The data pipeline end to end: encoding, packing, labels, evaluation batches, micro-batch
//! order and domain loading. Expected values are rebuilt independently from the definitions.

use std::path::PathBuf;

use brainstacks_model::llama::{LlamaTokenizer, alpaca_prompt};
use brainstacks_tensor::{DType, Device, Rng, Tensor};
use brainstacks_train::data::*;

const IGN: i64 = IGNORE_INDEX;

fn bytes(s: &str) -> Vec<u32> {
    s.bytes().map(u32::from).collect()
}

fn enc(ids: &[u32], resp_from: usize) -> EncodedExample {
    EncodedExample { ids: ids.to_vec(), is_response: (0..ids.len()).map(|i| i >= resp_from).collect() }
}

fn i64s(t: &Tensor) -> Vec<i64> {
    t.to_vec::<i64>().unwrap()
}

#[test]
fn byte_encoding_is_bos_prompt_response_eos() {
    let ex = Example::with_input("Translate", "chat", "Plaudern");
    let e = encode_example(&ByteTokenizer, &ex).unwrap();
    let prompt = alpaca_prompt("Translate", Some("chat"));
    let mut want = vec![ByteTokenizer::BOS];
    want.extend(bytes(&prompt));
    want.extend(bytes("Plaudern"));
    want.push(ByteTokenizer::EOS);
    assert_eq!(e.ids, want);
    assert_eq!(e.prompt_len(), 1 + prompt.len());
    let flags: Vec<bool> = (0..want.len()).map(|i| i > prompt.len()).collect();
    assert_eq!(e.is_response, flags);
    assert_eq!(ByteTokenizer.decode(&e.ids), format!("{prompt}Plaudern"));
}

fn legacy_tokenizer() -> LlamaTokenizer {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../model/tests/fixtures/tokenizer_llama_legacy");
    LlamaTokenizer::from_dir(dir).unwrap()
}

/// A sentencepiece-style Llama tokenizer (Prepend "▁" normalizer): the response is tokenized in
/// context after the prompt's newline, not as a fresh text with a word-start marker, and the
/// boundary falls exactly after the prompt's own ids.
#[test]
fn llama_encoding_keeps_the_in_context_tokens_and_an_exact_boundary() {
    let tok = legacy_tokenizer();
    let ex = Example::new("Say hello", "hello there");
    let e = encode_example(&tok, &ex).unwrap();
    let prompt = alpaca_prompt("Say hello", None);
    let prompt_ids = tok.encode(&prompt, false).unwrap();
    let full = tok.encode(&format!("{prompt}hello there"), false).unwrap();
    assert_eq!(&full[..prompt_ids.len()], &prompt_ids[..], "the prompt's ids are a prefix here");
    let bos = tok.bos_token_id.unwrap();
    let eos = tok.eos_token_id.unwrap();
    assert_eq!(TextEncoder::bos(&tok), Some(bos));
    assert_eq!(TextEncoder::eos(&tok).unwrap(), eos);
    let mut want = vec![bos];
    want.extend(&full);
    want.push(eos);
    assert_eq!(e.ids, want);
    assert_eq!(e.prompt_len(), 1 + prompt_ids.len());
    assert!(e.is_response[1 + prompt_ids.len()..].iter().all(|&r| r));
    // Encoding the response alone would differ (it starts a new text), which is why the
    // example is tokenized as a whole.
    let alone = tok.encode("hello there", false).unwrap();
    assert_ne!(&full[prompt_ids.len()..], &alone[..]);
    assert_eq!(tok.decode(&full[prompt_ids.len()..], true).unwrap().trim_start(), "hello there");
}

#[test]
fn packing_cuts_one_stream_into_rows() {
    let a = enc(&[1, 2, 3, 4, 5], 3);
    let b = enc(&[6, 7, 8], 1);
    let c = enc(&[9, 10, 11, 12], 2);
    let rows = pack(&[a.clone(), b.clone(), c.clone()], 4, PackTail::Drop).unwrap();
    let stream: Vec<u32> = (1..=12).collect();
    let flags = [a.is_response, b.is_response, c.is_response].concat();
    assert_eq!(rows.len(), 3);
    for (k, row) in rows.iter().enumerate() {
        assert_eq!(row.ids, stream[4 * k..4 * k + 4]);
        assert_eq!(row.is_response, flags[4 * k..4 * k + 4]);
        assert_eq!(row.real_len, 4);
    }
    assert_eq!(rows[0].labels(LossMask::FullSequence), vec![2, 3, 4, IGN]);
    // Row 0 flags: 1,2,3 prompt; 4,5 response.
    assert_eq!(rows[0].labels(LossMask::ResponseOnly), vec![IGN, IGN, 4, IGN]);
    // Row 1 = [5, 6, 7, 8] with flags [T, F, T, T].
    assert_eq!(rows[1].labels(LossMask::ResponseOnly), vec![IGN, 7, 8, IGN]);

    // 13 tokens into rows of 5: drop keeps 2 rows, pad adds a third with 3 real tokens.
    let d = enc(&[13], 0);
    let all = [enc(&(1..=12).collect::<Vec<_>>(), 6), d];
    assert_eq!(pack(&all, 5, PackTail::Drop).unwrap().len(), 2);
    let padded = pack(&all, 5, PackTail::Pad { pad_id: 99 }).unwrap();
    assert_eq!(padded.len(), 3);
    let last = &padded[2];
    assert_eq!((last.ids.clone(), last.real_len), (vec![11, 12, 13, 99, 99], 3));
    assert_eq!(last.labels(LossMask::FullSequence), vec![12, 13, IGN, IGN, IGN]);
    assert_eq!(last.labels(LossMask::ResponseOnly), vec![12, 13, IGN, IGN, IGN]);
    // An exact multiple adds no padded row.
    assert_eq!(pack(&all[..1], 4, PackTail::Pad { pad_id: 0 }).unwrap().len(), 3);
    assert!(pack(&all, 1, PackTail::Drop).is_err());
}

/// Over many lengths: rows are consecutive slices of the stream and the labels follow the
/// convention position by position.
#[test]
fn packing_property_over_many_shapes() {
    let mut rng = Rng::new(11);
    for seq_len in [2usize, 3, 7, 16] {
        let lens = Tensor::rand_uniform(&mut rng, 1.0, 20.0, &[9], DType::F64, &Device::Cpu).unwrap().to_vec::<f64>().unwrap();
        let mut next = 0u32;
        let examples: Vec<EncodedExample> = lens
            .iter()
            .map(|&l| {
                let n = l as usize;
                let ids: Vec<u32> = (0..n as u32).map(|i| next + i).collect();
                next += n as u32;
                enc(&ids, n / 2)
            })
            .collect();
        let stream: Vec<u32> = examples.iter().flat_map(|e| e.ids.clone()).collect();
        let flags: Vec<bool> = examples.iter().flat_map(|e| e.is_response.clone()).collect();
        let rows = pack(&examples, seq_len, PackTail::Pad { pad_id: u32::MAX }).unwrap();
        assert_eq!(rows.len(), stream.len().div_ceil(seq_len));
        for (k, row) in rows.iter().enumerate() {
            let start = k * seq_len;
            let real = row.real_len;
            assert_eq!(real, seq_len.min(stream.len() - start));
            assert_eq!(row.ids[..real], stream[start..start + real]);
            assert!(row.ids[real..].iter().all(|&p| p == u32::MAX));
            let full = row.labels(LossMask::FullSequence);
            let resp = row.labels(LossMask::ResponseOnly);
            for t in 0..seq_len {
                let target = (t + 1 < real).then(|| stream[start + t + 1] as i64);
                assert_eq!(full[t], target.unwrap_or(IGN));
                let r = target.filter(|_| flags[start + t + 1]);
                assert_eq!(resp[t], r.unwrap_or(IGN));
            }
        }
    }
}

#[test]
fn batches_hold_ids_and_labels_as_i64_tensors() {
    let rows = pack(&[enc(&[1, 2, 3, 4, 5, 6, 7, 8], 5)], 4, PackTail::Drop).unwrap();
    let b = Batch::from_rows(&[&rows[1], &rows[0]], LossMask::ResponseOnly, &Device::Cpu).unwrap();
    assert_eq!(b.ids.dtype(), DType::I64);
    assert_eq!(b.ids.shape(), &[2, 4]);
    assert_eq!((b.batch_size(), b.seq_len()), (2, 4));
    assert_eq!(i64s(&b.ids), vec![5, 6, 7, 8, 1, 2, 3, 4]);
    // Response from id 6 on: row [5, 6, 7, 8] predicts 6, 7, 8; row [1, 2, 3, 4] nothing.
    assert_eq!(i64s(&b.labels), vec![6, 7, 8, IGN, IGN, IGN, IGN, IGN]);
    assert_eq!(b.targets, 3);
    assert!(Batch::from_rows(&[], LossMask::FullSequence, &Device::Cpu).is_err());
    let short = TokenRow { ids: vec![1, 2], is_response: vec![false, true], real_len: 2 };
    let err = Batch::from_rows(&[&rows[0], &short], LossMask::FullSequence, &Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("row 1 has 2 ids"), "{err}");
}

/// The labels plug into the tensor cross-entropy with ignore_index as the trainer uses it: the
/// loss is the mean over exactly the counted positions.
#[test]
fn labels_feed_cross_entropy_with_ignore_index() {
    let ex = [enc(&[3, 1, 4, 1, 5], 2), enc(&[2, 6], 1)];
    let batches = eval_batches(&ex, 2, 16, LossMask::ResponseOnly, 0, &Device::Cpu).unwrap();
    let b = &batches[0];
    let (rows, t, v) = (2, 5, 7);
    let logits = Tensor::randn(&mut Rng::new(5), 0.0, 1.0, &[rows * t, v], DType::F64, &Device::Cpu).unwrap();
    let loss = logits.cross_entropy(&b.labels.reshape(&[rows * t]).unwrap(), Some(IGNORE_INDEX)).unwrap().to_scalar_f64().unwrap();
    let lv = logits.to_vec::<f64>().unwrap();
    let labels = i64s(&b.labels);
    let (mut sum, mut n) = (0.0, 0);
    for (r, &l) in labels.iter().enumerate() {
        if l == IGN {
            continue;
        }
        let row = &lv[r * v..(r + 1) * v];
        let lse = row.iter().map(|x| x.exp()).sum::<f64>().ln();
        sum += lse - row[l as usize];
        n += 1;
    }
    // Row 0 predicts 4, 1, 5 (response from index 2); row 1 predicts 6; pads never.
    assert_eq!(labels, vec![IGN, 4, 1, 5, IGN, 6, IGN, IGN, IGN, IGN]);
    assert_eq!((n, b.targets), (4, 4));
    assert!((loss - sum / n as f64).abs() < 1e-12);
}

#[test]
fn eval_batches_pad_with_eos_but_count_the_real_eos() {
    let tok = ByteTokenizer;
    let examples = encode_all(&tok, &[Example::new("q", "a"), Example::new("q", "abcdef"), Example::new("qq", "z")]).unwrap();
    let b = eval_batches(&examples, 2, 512, LossMask::FullSequence, ByteTokenizer::EOS, &Device::Cpu).unwrap();
    assert_eq!(b.len(), 2);
    let (n0, n1) = (examples[0].len(), examples[1].len());
    assert_eq!(b[0].ids.shape(), &[2, n1]);
    let ids = i64s(&b[0].ids);
    let labels = i64s(&b[0].labels);
    // Row 0: its own EOS is predicted at n0 - 2, then only pads (= EOS ids) follow, uncounted.
    assert_eq!(labels[n0 - 2], ByteTokenizer::EOS as i64);
    assert!(ids[n0..n1].iter().all(|&i| i == ByteTokenizer::EOS as i64));
    assert!(labels[n0 - 1..n1].iter().all(|&l| l == IGN));
    assert_eq!(b[0].targets, (n0 - 1) + (n1 - 1));
    assert_eq!(b[1].ids.shape(), &[1, examples[2].len()]);
    // Response-only: per row, the response tokens plus EOS.
    let r = eval_batches(&examples, 2, 512, LossMask::ResponseOnly, ByteTokenizer::EOS, &Device::Cpu).unwrap();
    assert_eq!(r[0].targets, 2 + 7);
    // Truncation keeps the first max_len tokens (the EOS of a long example is cut off).
    let t = eval_batches(&examples[1..2], 4, 10, LossMask::FullSequence, ByteTokenizer::EOS, &Device::Cpu).unwrap();
    assert_eq!(i64s(&t[0].ids), examples[1].ids[..10].iter().map(|&i| i as i64).collect::<Vec<_>>());
    assert_eq!(t[0].targets, 9);
    assert!(eval_batches(&examples, 0, 10, LossMask::FullSequence, 0, &Device::Cpu).is_err());
    assert!(eval_batches(&[], 2, 10, LossMask::FullSequence, 0, &Device::Cpu).unwrap().is_empty());
}

/// Token-weighted mean over batches equals the loss over all rows at once.
#[test]
fn loss_meter_gives_the_token_weighted_mean() {
    let examples = encode_all(&ByteTokenizer, &[Example::new("a", "b"), Example::new("cc", "dddd"), Example::new("e", "f")]).unwrap();
    let v = ByteTokenizer::VOCAB_SIZE;
    let mut rng = Rng::new(9);
    let width = examples.iter().map(EncodedExample::len).max().unwrap();
    let all = eval_batches(&examples, 3, 512, LossMask::FullSequence, 257, &Device::Cpu).unwrap().remove(0);
    let logits = Tensor::randn(&mut rng, 0.0, 1.0, &[3 * width, v], DType::F64, &Device::Cpu).unwrap();
    let whole = logits.cross_entropy(&all.labels.reshape(&[3 * width]).unwrap(), Some(IGN)).unwrap().to_scalar_f64().unwrap();
    let mut meter = LossMeter::default();
    for (k, b) in eval_batches(&examples, 2, 512, LossMask::FullSequence, 257, &Device::Cpu).unwrap().iter().enumerate() {
        let (rows, t) = (b.batch_size(), b.seq_len());
        // The same logits rows as in the one-batch case (row r of the batch, first t positions).
        let mut picked = Vec::new();
        for r in 0..rows {
            let src = (2 * k + r) * width;
            picked.push(logits.narrow(0, src, t).unwrap());
        }
        let lg = Tensor::cat(&picked.iter().collect::<Vec<_>>(), 0).unwrap();
        let loss = lg.cross_entropy(&b.labels.reshape(&[rows * t]).unwrap(), Some(IGN)).unwrap().to_scalar_f64().unwrap();
        meter.add(loss, b.targets);
    }
    assert_eq!(meter.targets, all.targets);
    assert!((meter.mean().unwrap() - whole).abs() < 1e-12);
    assert_eq!(LossMeter::default().mean(), None);
}

fn rows_of(n: usize, seq_len: usize) -> Vec<TokenRow> {
    (0..n).map(|k| TokenRow { ids: vec![k as u32; seq_len], is_response: vec![true; seq_len], real_len: seq_len }).collect()
}

fn first_ids(b: &Batch) -> Vec<i64> {
    let t = b.seq_len();
    i64s(&b.ids).chunks(t).map(|r| r[0]).collect()
}

#[test]
fn micro_batches_are_seeded_and_reshuffle_every_epoch() {
    let mut a = MicroBatches::new(rows_of(7, 3), 2, LossMask::FullSequence, 42, Device::Cpu).unwrap();
    let mut b = MicroBatches::new(rows_of(7, 3), 2, LossMask::FullSequence, 42, Device::Cpu).unwrap();
    let mut c = MicroBatches::new(rows_of(7, 3), 2, LossMask::FullSequence, 43, Device::Cpu).unwrap();
    assert_eq!(a.batches_per_epoch(), 3);
    let take = |m: &mut MicroBatches| (0..3).flat_map(|_| first_ids(&m.next_batch().unwrap())).collect::<Vec<_>>();
    let (a1, b1, c1) = (take(&mut a), take(&mut b), take(&mut c));
    assert_eq!(a1, b1);
    assert_ne!(a1, c1);
    assert_eq!(a.epoch(), 0);
    // Epoch 0 visits 6 distinct rows (the 7th is left over) in the order of the shuffle.
    let order0 = a.epoch_order().to_vec();
    assert_eq!(a1, order0[..6].iter().map(|&i| i as i64).collect::<Vec<_>>());
    let mut seen = a1.clone();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), 6);
    let a2 = take(&mut a);
    assert_eq!(a.epoch(), 1);
    assert_ne!(a.epoch_order(), &order0[..]);
    assert_eq!(a2, a.epoch_order()[..6].iter().map(|&i| i as i64).collect::<Vec<_>>());
    assert_eq!(a2, take(&mut b));
    // The order is the seeded permutation of shuffled_indices, epoch after epoch.
    let mut rng = Rng::new(42);
    assert_eq!(shuffled_indices(7, &mut rng).unwrap(), order0);
    assert_eq!(shuffled_indices(7, &mut rng).unwrap(), a.epoch_order());
    // The iterator form yields the same batches.
    let mut d = MicroBatches::new(rows_of(7, 3), 2, LossMask::FullSequence, 42, Device::Cpu).unwrap();
    let via_iter: Vec<i64> = d.by_ref().take(3).flat_map(|b| first_ids(&b.unwrap())).collect();
    assert_eq!(via_iter, a1);
}

#[test]
fn micro_batches_reject_too_little_data() {
    let err = MicroBatches::new(rows_of(1, 4), 2, LossMask::FullSequence, 0, Device::Cpu).err().unwrap().to_string();
    assert!(err.contains("1 packed rows for batch size 2"), "{err}");
    assert!(MicroBatches::new(rows_of(3, 4), 0, LossMask::FullSequence, 0, Device::Cpu).is_err());
    let mut rows = rows_of(3, 4);
    rows[2] = TokenRow { ids: vec![0; 5], is_response: vec![true; 5], real_len: 5 };
    assert!(MicroBatches::new(rows, 1, LossMask::FullSequence, 0, Device::Cpu).is_err());
}

struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, text: &str) -> Self {
        let p = std::env::temp_dir().join(format!("brainstacks-data-{}-{name}", std::process::id()));
        std::fs::write(&p, text).unwrap();
        Self(p)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn domain_loads_splits_and_prepares_batches() {
    let mut lines: Vec<String> = (0..120)
        .map(|i| serde_json::json!({"instruction": format!("What is {i} + {i}?"), "input": "", "output": format!("{}", 2 * i)}).to_string())
        .collect();
    lines.insert(5, String::new());
    lines.push(
        serde_json::json!({"messages": [{"role": "user", "content": "<|im_start|>hi"}, {"role": "assistant", "content": "hello<|im_end|>"}]})
            .to_string(),
    );
    let f = TempFile::new("math.jsonl", &(lines.join("\n") + "\n"));
    let d = DomainData::load("math", &f.0, &DomainConfig::default()).unwrap();
    assert_eq!(d.name, "math");
    assert_eq!(d.counts, JsonlCounts { lines: 122, blank: 1, alpaca: 120, chat: 1, truncated: 0 });
    // ceil(121 * 0.02) = 3 validation examples.
    assert_eq!((d.train.len(), d.val.len()), (118, 3));
    assert!(d.train.iter().chain(&d.val).any(|e| *e == Example::new("hi", "hello")));
    // Same file, same split.
    let again = DomainData::load("math", &f.0, &DomainConfig::default()).unwrap();
    assert_eq!((again.train, again.val.clone()), (d.train.clone(), d.val.clone()));

    let rows = d.packed_train(&ByteTokenizer, 128, 7).unwrap();
    let tokens: usize = encode_all(&ByteTokenizer, &d.train).unwrap().iter().map(EncodedExample::len).sum();
    assert_eq!(rows.len(), tokens / 128);
    assert_eq!(rows, d.packed_train(&ByteTokenizer, 128, 7).unwrap());
    assert_ne!(rows, d.packed_train(&ByteTokenizer, 128, 8).unwrap());
    let val = d.eval_examples(&ByteTokenizer, 2).unwrap();
    assert_eq!(val, encode_all(&ByteTokenizer, &d.val[..2]).unwrap());
    let err = d.packed_train(&ByteTokenizer, 1_000_000, 7).unwrap_err().to_string();
    assert!(err.contains("do not fill one packed sequence of 1000000"), "{err}");
}

#[test]
fn domain_errors_name_file_and_line() {
    let f = TempFile::new(
        "bad.jsonl",
        "{\"instruction\": \"a\", \"output\": \"b\"}\n{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}]}\n",
    );
    let err = DomainData::load("chat", &f.0, &DomainConfig::default()).unwrap_err().to_string();
    assert!(err.starts_with(&format!("{}:2: the conversation has no assistant turn", f.0.display())), "{err}");
    let empty = TempFile::new("empty.jsonl", "\n\n");
    let err = DomainData::load("chat", &empty.0, &DomainConfig::default()).unwrap_err().to_string();
    assert!(err.contains("holds no examples"), "{err}");
}
