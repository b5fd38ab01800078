//! Helpers the train crate's run tests share: listing a run directory, comparing manifests
//! without their wall-clock times, and the demo shrunk to seconds.

use std::path::{Path, PathBuf};

use brainstacks_train::boost::manifest::Manifest;
use brainstacks_train::demo::DemoPlan;

/// Every file under `dir` (temporaries included, so they show up), relative and sorted; a
/// missing directory (a run killed before it made one) lists nothing.
#[allow(dead_code)] // not every test file uses every helper
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                pending.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

/// `m` with every wall-clock time zeroed: what two runs of the same config must agree on.
#[allow(dead_code)] // not every test file uses every helper
pub fn timeless(m: &Manifest) -> Manifest {
    let mut m = m.clone();
    for d in &mut m.domains {
        d.seconds = 0.0;
        for r in &mut d.rounds {
            r.seconds = 0.0;
        }
    }
    m
}

/// The demo's quick plan shrunk to seconds: every phase runs, on tiny sizes.
#[allow(dead_code)] // not every test file uses every helper
pub fn micro_plan(seed: u64) -> DemoPlan {
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
