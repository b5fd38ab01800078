//! The same seed gives the same demo numbers on the CPU: two runs of a shrunken demo into two
//! directories agree on every measured number (everything but wall-clock timings), and a
//! different seed changes them.

use brainstacks_tensor::Device;
use brainstacks_train::demo::{DemoOptions, DemoResults, Silent, run_demo};

mod common;

use common::micro_plan;

fn run(tag: &str, seed: u64) -> DemoResults {
    let out = std::env::temp_dir().join(format!("bs-demo-det-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let r = run_demo(&DemoOptions { out: out.clone(), seed, quick: true, plan: Some(micro_plan(seed)), device: Device::Cpu }, &mut Silent)
        .unwrap();
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
