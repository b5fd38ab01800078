//! Every PTX file of the kernels crate parses and decodes: an instruction the simulator does not
//! know shows up here, not in the middle of a GPU test run under the simulator.

use std::path::{Path, PathBuf};

fn ptx_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("kernels/src is readable") {
        let p = e.expect("dir entry").path();
        if p.is_dir() {
            ptx_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "ptx") {
            out.push(p);
        }
    }
}

#[test]
fn every_kernel_module_parses() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernels/src");
    let mut files = Vec::new();
    ptx_files(&root, &mut files);
    assert!(files.len() >= 15, "found only {} PTX files under {}", files.len(), root.display());
    let mut failures = Vec::new();
    for f in &files {
        let src = std::fs::read_to_string(f).expect("PTX is UTF-8");
        if let Err(e) = ptxsim::Module::parse(&src) {
            failures.push(format!("{}: {e}", f.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
