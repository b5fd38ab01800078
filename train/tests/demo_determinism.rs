//! The same seed gives the same demo numbers on the CPU: two runs of a shrunken demo into two
//! directories agree on every measured number (everything but wall-clock timings), and a
//! different seed changes them.

use brainstacks_train::demo::{DemoOptions, DemoPlan, DemoResults, Silent, run_demo};

fn micro_plan(seed: u64) -> DemoPlan {
    let mut p = DemoPlan::new(true, seed);
    p.sft_examples = 80;
    p.pretrain_docs = 80;
    p.vocab_size = 320;
    p.pretrain.steps = 6;
    p.pretrain.eval_every = 3;
    p.pretrain.batch = 4;
    p.steps_per_round = 3;
    p.eval_every = 3;
    p.eval_samples = 6;
    p.null_space_samples = 4;
    p.oracle_samples = 4;
    p.label_samples = 12;
    p.router_epochs = 2;
    p.max_new_tokens = 6;
    p
}

fn run(tag: &str, seed: u64) -> DemoResults {
    let out = std::env::temp_dir().join(format!("bs-demo-det-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let r = run_demo(&DemoOptions { out: out.clone(), seed, quick: true, plan: Some(micro_plan(seed)) }, &mut Silent).unwrap();
    std::fs::remove_dir_all(&out).ok();
    r
}

#[test]
fn same_seed_same_numbers_and_another_seed_differs() {
    let (a, b) = (run("a", 5), run("b", 5));
    assert!(!a.timings.is_empty());
    assert_eq!(a.without_timings(), b.without_timings());
    assert!(a.pretrain.final_val_loss.is_finite() && a.modes.len() == 4);
    let c = run("c", 6);
    assert_ne!(a.pretrain.final_val_loss, c.pretrain.final_val_loss);
}
