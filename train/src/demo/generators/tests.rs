//! Properties of the generated data: determinism, correctness of every worked step and trace,
//! the house styles, the JSONL round trip, and sizes that fit the demo's short sequences.

use super::*;
use crate::data::{ParseOptions, read_jsonl};

const N: usize = 400;

fn all(domain: &str) -> Vec<Example> {
    generate(domain, N, 11).unwrap()
}

#[test]
fn the_same_seed_gives_the_same_examples_and_another_seed_others() {
    for d in DOMAINS {
        let a = generate(d, 50, 3).unwrap();
        assert_eq!(a, generate(d, 50, 3).unwrap(), "{d}");
        let b = generate(d, 50, 4).unwrap();
        let same = a.iter().zip(&b).filter(|(x, y)| x == y).count();
        assert!(same < 25, "{d}: {same} of 50 examples equal under another seed");
    }
}

#[test]
fn example_i_does_not_depend_on_n() {
    for d in DOMAINS {
        let long = generate(d, 40, 9).unwrap();
        let short = generate(d, 7, 9).unwrap();
        assert_eq!(short[..], long[..7], "{d}");
        assert!(generate(d, 0, 9).unwrap().is_empty());
    }
}

#[test]
fn examples_vary_within_a_domain() {
    for d in DOMAINS {
        let ex = all(d);
        let mut responses: Vec<&str> = ex.iter().map(|e| e.response.as_str()).collect();
        responses.sort_unstable();
        responses.dedup();
        // Chat draws from fixed banks, so repeats are expected there; the others are computed.
        let floor = if d == "chat" { N / 4 } else { N * 3 / 4 };
        assert!(responses.len() >= floor, "{d}: only {} distinct responses of {N}", responses.len());
    }
}

#[test]
fn every_example_has_an_instruction_and_a_response() {
    for d in DOMAINS {
        for e in all(d) {
            assert!(!e.instruction.trim().is_empty() && !e.response.trim().is_empty(), "{d}: {e:?}");
            assert_eq!(e.response.trim(), e.response, "{d}: response has outer whitespace: {e:?}");
        }
    }
}

#[test]
fn math_steps_are_right() {
    for e in all("math") {
        let k = steps::check_worked(&e.response).unwrap_or_else(|err| panic!("{err}\n{}", e.response));
        assert!(k >= 2, "math problems are multi-step: {}", e.response);
        // Bare procedure: nothing but steps and the answer.
        assert!(e.response.lines().all(|l| l.starts_with("Step ") || l.starts_with("Answer: ")), "{}", e.response);
        assert!(e.response.lines().last().unwrap().starts_with("Answer: "));
    }
}

#[test]
fn medical_answers_use_maths_steps_in_chats_style() {
    let ex = all("medical");
    let mut calculations = 0;
    for e in &ex {
        let lines: Vec<&str> = e.response.lines().collect();
        assert!(lines.len() >= 3, "{}", e.response);
        // Chat's shape: a lead line that is not a step or a bullet, a bullet, a closing line.
        assert!(!lines[0].starts_with("Step ") && !lines[0].starts_with("- "), "{}", e.response);
        assert!(lines.iter().any(|l| l.starts_with("- ")), "no bullet: {}", e.response);
        assert!(!lines.last().unwrap().starts_with("- ") && chat::CLOSINGS.contains(lines.last().unwrap()), "{}", e.response);
        if e.response.contains("Step 1: ") {
            calculations += 1;
            assert!(e.response.contains("\nAnswer: "), "{}", e.response);
            steps::check_worked(&e.response).unwrap_or_else(|err| panic!("{err}\n{}", e.response));
            // Math's format exactly: the steps and answer are contiguous, as in a math answer.
            let worked: Vec<&str> = lines.iter().copied().filter(|l| l.starts_with("Step ") || l.starts_with("Answer: ")).collect();
            let start = lines.iter().position(|l| l.starts_with("Step 1: ")).unwrap();
            assert_eq!(lines[start..start + worked.len()], worked[..], "{}", e.response);
            assert!(lines[start + worked.len()].starts_with("- "), "a caution follows the answer: {}", e.response);
        }
    }
    assert!(calculations * 2 > ex.len(), "{calculations} of {} medical examples are calculations", ex.len());
}

#[test]
fn bmi_answers_name_the_right_category() {
    let ex = all("medical");
    let bmi_questions: Vec<&Example> = ex.iter().filter(|e| e.instruction.contains("BMI?")).collect();
    assert!(bmi_questions.len() > 20, "{} BMI questions", bmi_questions.len());
    for e in bmi_questions {
        let answer = e.response.lines().find_map(|l| l.strip_prefix("Answer: ")).unwrap();
        let bmi: f64 = answer.split(' ').next().unwrap().parse().unwrap();
        let expected = if bmi < 18.5 {
            "underweight"
        } else if bmi < 25.0 {
            "normal weight"
        } else if bmi < 30.0 {
            "overweight"
        } else {
            "obese"
        };
        assert!(answer.ends_with(&format!("({expected})")), "{}", e.response);
    }
}

#[test]
fn chat_answers_follow_the_house_style() {
    for e in all("chat") {
        let lines: Vec<&str> = e.response.lines().collect();
        let bullets = lines.iter().filter(|l| l.starts_with("- ")).count();
        assert!((2..=4).contains(&bullets), "{}", e.response);
        assert_eq!(lines.len(), bullets + 2, "lead, bullets, closing: {}", e.response);
        assert!(lines[1..=bullets].iter().all(|l| l.starts_with("- ")), "{}", e.response);
        assert!(!e.response.contains("Step "), "{}", e.response);
    }
}

#[test]
fn code_traces_are_what_the_shown_program_does() {
    let mut traces = 0;
    for e in all("code") {
        if let Some(source) = &e.input {
            traces += 1;
            let program = code::parse(source).unwrap_or_else(|err| panic!("{err}\n{source}"));
            assert_eq!(code::render(&program), *source, "parse and render are inverses");
            let run = code::run(&program).unwrap();
            assert_eq!(run.answer(), e.response, "\n{source}");
            assert!((3..=8).contains(&source.lines().count()), "{source}");
        } else {
            assert!(e.response.starts_with("def ") && e.response.contains("\nExample: "), "{}", e.response);
        }
    }
    assert!(traces * 2 > N, "{traces} traces of {N}");
}

#[test]
fn the_interpreter_traces_a_known_program() {
    let source = "s = 1\nfor i in range(3):\n    s = s * 2\n    if i > 0:\n        print(s)\nt = s - 5\nprint(t)";
    let program = code::parse(source).unwrap();
    let run = code::run(&program).unwrap();
    let expected = "s = 1\ni=0: s = 1 * 2 = 2\ni=0: if 0 > 0: false\ni=1: s = 2 * 2 = 4\ni=1: if 1 > 0: true\ni=1: print 4\n\
                    i=2: s = 4 * 2 = 8\ni=2: if 2 > 0: true\ni=2: print 8\nt = 8 - 5 = 3\nprint 3\nOutput: 4 8 3";
    assert_eq!(run.answer(), expected);
    assert!(code::run(&code::parse("print(q)").unwrap()).is_err());
    assert!(code::parse("x = 1\n  y = 2").is_err());
}

#[test]
fn function_examples_compute_their_example_calls() {
    // Spot-check the example results against the arithmetic they claim.
    for e in all("code").iter().filter(|e| e.input.is_none()) {
        let call = e.response.lines().last().unwrap().strip_prefix("Example: ").unwrap();
        let (call, result) = call.strip_suffix('.').unwrap().split_once(" returns ").unwrap();
        let args = |c: &str| -> Vec<i64> {
            let inner = &c[c.find('(').unwrap() + 1..c.len() - 1];
            inner.trim_matches(['[', ']']).split(", ").map(|v| v.parse().unwrap()).collect()
        };
        let name = &call[..call.find('(').unwrap()];
        let a = args(call);
        let expected = if let Some(k) = name.strip_prefix("times_") {
            (a[0] * k.parse::<i64>().unwrap()).to_string()
        } else if let Some(k) = name.strip_prefix("add_") {
            (a[0] + k.parse::<i64>().unwrap()).to_string()
        } else if let Some(k) = name.strip_prefix("more_than_") {
            if a[0] > k.parse().unwrap() { "True" } else { "False" }.to_string()
        } else if let Some(k) = name.strip_prefix("count_over_") {
            let k: i64 = k.parse().unwrap();
            a.iter().filter(|&&x| x > k).count().to_string()
        } else {
            match name {
                "is_even" => if a[0] % 2 == 0 { "True" } else { "False" }.to_string(),
                "sum_to" => (a[0] * (a[0] + 1) / 2).to_string(),
                "larger" => a[0].max(a[1]).to_string(),
                "square" => (a[0] * a[0]).to_string(),
                "total" => a.iter().sum::<i64>().to_string(),
                other => panic!("unexpected function {other}"),
            }
        };
        assert_eq!(result, expected, "{}", e.response);
    }
}

#[test]
fn examples_fit_the_demo_sequences() {
    // The method's Alpaca template around an example (its fixed preamble is ~25 of these tokens).
    let prompt = brainstacks_model::llama::alpaca_prompt;
    for d in DOMAINS {
        let ex = all(d);
        let words: Vec<usize> = ex.iter().map(|e| e.response.split_whitespace().count()).collect();
        let mut tokens: Vec<usize> =
            ex.iter().map(|e| rough_tokens(&prompt(&e.instruction, e.input.as_deref())) + rough_tokens(&e.response) + 1).collect();
        tokens.sort_unstable();
        let mean = words.iter().sum::<usize>() as f64 / words.len() as f64;
        let max = *words.iter().max().unwrap();
        let (p50, p90, tmax) = (tokens[N / 2], tokens[N * 9 / 10], tokens[N - 1]);
        println!("{d}: response words mean {mean:.1}, max {max}; rough tokens with template p50 {p50}, p90 {p90}, max {tmax}");
        assert!(max <= 80 && mean <= 60.0, "{d}: mean {mean}, max {max}");
        // "Most examples fit": the rough count overestimates (a BPE trained on this data merges
        // frequent numbers and units), so 85% within 128 leaves room.
        let fit = tokens.iter().filter(|&&t| t <= 128).count();
        assert!(fit * 100 >= N * 85, "{d}: only {fit} of {N} within 128 rough tokens");
    }
}

#[test]
fn vocabulary_stays_modest() {
    let mut all_words = std::collections::BTreeSet::new();
    for d in DOMAINS {
        let mut words = std::collections::BTreeSet::new();
        for e in generate(d, 2000, 0).unwrap() {
            for text in [&e.instruction, &e.response, e.input.as_ref().unwrap_or(&String::new())] {
                for w in text.split(|c: char| !c.is_ascii_alphabetic()).filter(|w| !w.is_empty()) {
                    words.insert(w.to_lowercase());
                }
            }
        }
        println!("{d}: {} distinct word types over 2000 examples", words.len());
        all_words.extend(words);
    }
    println!("all domains: {} distinct word types", all_words.len());
    assert!(all_words.len() <= 700, "{} word types", all_words.len());
}

#[test]
fn unknown_domains_are_a_typed_error_that_lists_the_domains() {
    let err = generate("poetry", 3, 0).unwrap_err();
    let Error::Invalid { what, msg } = &err else { panic!("expected Error::Invalid, got {err:?}") };
    assert!(what.contains("poetry"), "{what}");
    for d in DOMAINS {
        assert!(msg.contains(d), "{msg}");
    }
}

#[test]
fn jsonl_round_trips_through_the_reader() {
    let dir = std::env::temp_dir().join(format!("bs-gen-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for d in DOMAINS {
        let ex = generate(d, 60, 5).unwrap();
        let path = dir.join(format!("{d}.jsonl"));
        write_alpaca_jsonl(&path, &ex).unwrap();
        let data = read_jsonl(&path, &ParseOptions::default()).unwrap();
        assert_eq!(data.examples, ex, "{d}");
        assert_eq!((data.counts.alpaca, data.counts.chat, data.counts.truncated), (60, 0, 0));
        let first = std::fs::read_to_string(&path).unwrap().lines().next().unwrap().to_string();
        assert!(first.starts_with("{\"instruction\":") && first.contains(",\"input\":") && first.contains(",\"output\":"), "{first}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn print_samples() {
    // `cargo test -p brainstacks-train demo::generators::tests::print_samples -- --nocapture`
    for d in DOMAINS {
        for (i, e) in generate(d, 20, 0).unwrap().into_iter().enumerate() {
            println!("=== {d} #{i}\n### Instruction:\n{}", e.instruction);
            if let Some(i) = &e.input {
                println!("### Input:\n{i}");
            }
            println!("### Response:\n{}\n", e.response);
        }
    }
}

#[test]
fn the_module_doc_samples_are_current() {
    let at = |d: &str, i: usize| generate(d, i + 1, 0).unwrap().swap_remove(i);
    assert_eq!(at("chat", 3).instruction, "Can you tell me how to write a short letter?");
    let code = at("code", 7);
    assert_eq!(code.input.as_deref(), Some("n = 5\ns = 9\nfor i in range(3):\n    n = n - 3\nprint(s)\nprint(n)"));
    assert_eq!(
        code.response,
        "n = 5\ns = 9\ni=0: n = 5 - 3 = 2\ni=1: n = 2 - 3 = -1\ni=2: n = -1 - 3 = -4\nprint 9\nprint -4\nOutput: 9 -4"
    );
    assert_eq!(at("math", 4).response, "Step 1: 35 x 5 = 175\nStep 2: 20 x 4 = 80\nStep 3: 175 + 80 = 255\nAnswer: 255 parts");
    assert_eq!(
        at("medical", 16).response,
        "Let us work it out.\nStep 1: 231 / 2.2 = 105\nStep 2: 1.76 x 1.76 = 3.1\nStep 3: 105 / 3.1 = 33.87\nAnswer: 33.9 (obese)\n\
         - A BMI of 30 or more is obese.\nI hope this helps!"
    );
}
