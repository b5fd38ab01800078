//! Helpers the train crate's run tests share: listing a run directory and comparing manifests
//! without their wall-clock times.

use std::path::{Path, PathBuf};

use brainstacks_train::boost::manifest::Manifest;

/// Every file under `dir` (temporaries included, so they show up), relative and sorted; a
/// missing directory (a run killed before it made one) lists nothing.
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
