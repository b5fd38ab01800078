//! `gpu-bench`: GPU kernel benchmarks as JSON lines, and a regression check between two result
//! files. `gpu-bench --help` for usage; `benches/README.md` for the method.
//!
//! `run` and `list` need a build with `--features cuda` (without it they exit 2 with a message);
//! `compare` and `show` work in every build, on any machine.

use std::process::ExitCode;

use brainstacks_benches::harness::cli::{self, Command};
use brainstacks_benches::harness::{compare, record, targets};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cmd = match cli::parse(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gpu-bench: {e}\n\n{}", cli::USAGE);
            return ExitCode::from(2);
        }
    };
    match cmd {
        Command::Help => {
            print!("{}", cli::USAGE);
            ExitCode::SUCCESS
        }
        Command::Show(path) => match record::read_jsonl(&path) {
            Ok(recs) => {
                print!("{}", record::table(&recs));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("gpu-bench: {e}");
                ExitCode::from(2)
            }
        },
        Command::Compare {
            old,
            new,
            threshold,
        } => {
            let (o, n) = match (record::read_jsonl(&old), record::read_jsonl(&new)) {
                (Ok(o), Ok(n)) => (o, n),
                (Err(e), _) | (_, Err(e)) => {
                    eprintln!("gpu-bench: {e}");
                    return ExitCode::from(2);
                }
            };
            // An empty file (a run that never reached the GPU) must not pass as "no regression".
            for (path, recs) in [(&old, &o), (&new, &n)] {
                if recs.is_empty() {
                    eprintln!("gpu-bench: {}: no results in the file", path.display());
                    return ExitCode::from(2);
                }
            }
            let rep = compare::compare(&o, &n, threshold);
            print!("{}", rep.render());
            if rep.regressed() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Command::Targets { file, json } => match record::read_jsonl(&file) {
            Ok(recs) => {
                let (t, r) = (targets::evaluate(&recs), targets::ratios(&recs));
                if json {
                    for j in t.iter().chain(&r) {
                        println!("{}", j.to_json());
                    }
                } else {
                    print!("{}", targets::render(&t, &r));
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("gpu-bench: {e}");
                ExitCode::from(2)
            }
        },
        Command::List => gpu::list(),
        Command::Run(o) => gpu::run(&o),
    }
}

#[cfg(feature = "cuda")]
mod gpu {
    use std::io::Write;
    use std::process::ExitCode;

    use brainstacks_benches::harness::cli::RunOptions;
    use brainstacks_benches::harness::gpu;
    use brainstacks_benches::harness::{record, targets};

    pub fn list() -> ExitCode {
        for b in gpu::registry() {
            let s = &b.spec;
            println!(
                "{:<40} bytes {:>12}  flops {:>16}  {:?}",
                s.id(),
                s.bytes,
                s.flops,
                s.role
            );
        }
        ExitCode::SUCCESS
    }

    pub fn run(o: &RunOptions) -> ExitCode {
        // Checked up front (a typo should not cost a whole run), but written only once there is a
        // result: a run that never reaches the GPU leaves no empty results file behind.
        if let Some(p) = &o.out
            && let Err(e) = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(p)
        {
            eprintln!("gpu-bench: cannot create {}: {e}", p.display());
            return ExitCode::from(2);
        }
        let mut sink: Option<Box<dyn Write>> = None;
        let mut write_failed = None;
        let outcome = gpu::run(o, |r| {
            if sink.is_none() {
                sink = Some(match &o.out {
                    Some(p) => match std::fs::File::create(p) {
                        Ok(f) => Box::new(f),
                        Err(e) => {
                            write_failed.get_or_insert(e);
                            Box::new(std::io::sink())
                        }
                    },
                    None => Box::new(std::io::stdout()),
                });
            }
            let Some(w) = sink.as_mut() else { return };
            // Flushed per line, so a crash later still leaves every finished result behind.
            if let Err(e) = writeln!(w, "{}", r.to_json()).and_then(|_| w.flush()) {
                write_failed.get_or_insert(e);
            }
        });
        if outcome.is_err()
            && let Some(p) = &o.out
            && std::fs::metadata(p).is_ok_and(|m| m.len() == 0)
        {
            // Only the up-front check created it.
            let _ = std::fs::remove_file(p);
        }
        let outcome = match outcome {
            Ok(x) => x,
            Err(e) => {
                eprintln!("gpu-bench: no usable GPU: {e}");
                return ExitCode::from(2);
            }
        };
        eprint!("\n{}", record::table(&outcome.records));
        // The issue targets, judged on this run's records only.
        let (t, r) = (
            targets::evaluate(&outcome.records),
            targets::ratios(&outcome.records),
        );
        eprint!("\n{}", targets::render(&t, &r));
        if let Some(p) = &o.targets {
            let text: String = t.iter().chain(&r).map(|j| j.to_json() + "\n").collect();
            if let Err(e) = brainstacks_tensor::io::write_atomic_bytes(p, text.as_bytes()) {
                write_failed.get_or_insert(std::io::Error::other(e.to_string()));
            }
        }
        if let Some(e) = write_failed {
            eprintln!("gpu-bench: writing the results failed: {e}");
            return ExitCode::from(2);
        }
        if outcome.failures > 0 {
            eprintln!("gpu-bench: {} failure(s)", outcome.failures);
            return ExitCode::from(1);
        }
        ExitCode::SUCCESS
    }
}

#[cfg(not(feature = "cuda"))]
mod gpu {
    use std::process::ExitCode;

    use brainstacks_benches::harness::cli::RunOptions;

    fn no_cuda() -> ExitCode {
        eprintln!(
            "gpu-bench: built without CUDA; rebuild with \
             `cargo build --release -p brainstacks-benches --features cuda --bin gpu-bench` \
             (compare and show work in this build)"
        );
        ExitCode::from(2)
    }

    pub fn list() -> ExitCode {
        no_cuda()
    }

    pub fn run(_: &RunOptions) -> ExitCode {
        no_cuda()
    }
}
