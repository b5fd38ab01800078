//! Crash safety of `brainstacks train`: the binary is killed with SIGKILL at seeded random moments
//! again and again, restarted each time on the same directory, until it finishes. After every
//! kill each file on disk must be whole (the manifest and `run.json` parse, every safetensors file
//! loads, every complete metrics line parses), and the finished run must equal an uninterrupted
//! one: the same manifest (apart from wall-clock times) and byte-identical stack and null-space
//! files.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use brainstacks_tensor::io::SafeTensors;
use brainstacks_train::boost::manifest::Manifest;
use common::{files_under, timeless};

mod common;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_brainstacks"))
}

/// A deterministic stream of uniform numbers in [0, 1) (splitmix64), so a failure replays.
struct Uniform(u64);
impl Uniform {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn write_domain(path: &Path, n: usize, answer: impl Fn(usize) -> String) {
    let lines: Vec<String> =
        (0..n).map(|i| serde_json::json!({"instruction": format!("task {i}"), "input": "", "output": answer(i)}).to_string()).collect();
    std::fs::write(path, lines.join("\n")).unwrap();
}

/// Writes `root/<name>.json`, a two-domain run of two rounds each into `root/<name>`.
fn write_config(root: &Path, name: &str) -> PathBuf {
    let config = serde_json::json!({
        "out_dir": name, "model": {"toy": [16, 32, 1, 2, 1], "toy_seed": 3},
        "domains": [{"name": "count", "train": "count.jsonl"}, {"name": "spell", "train": "spell.jsonl"}],
        "rank": 2, "alpha": 2.0, "micro_batch": 2, "grad_accum": 1, "seq_len": 128, "steps_per_round": 40,
        "max_rounds": 2, "min_delta": -1.0, "eval_every": 10, "eval_samples": 4, "val_fraction": 0.2,
        "warmup_steps": 1, "null_space": {"k": 2, "samples": 4}
    });
    let path = root.join(format!("{name}.json"));
    std::fs::write(&path, config.to_string()).unwrap();
    path
}

/// How far a run directory got: the number of rounds its manifest records (`None`: no manifest).
fn progress(dir: &Path) -> Option<usize> {
    let m = Manifest::load(&dir.join("manifest.json")).ok()?;
    Some(m.domains.iter().map(|d| d.rounds.len()).sum())
}

/// Checks that every file a killed run left is whole; returns how many files it checked and how
/// many of them were temporaries of interrupted writes.
fn assert_whole(dir: &Path, after_kill: usize) -> (usize, usize) {
    let files = files_under(dir);
    for rel in &files {
        let path = dir.join(rel);
        let name = rel.file_name().unwrap().to_string_lossy().into_owned();
        let ctx = format!("after kill {after_kill}: {}", path.display());
        if name.starts_with('.') {
            // A temporary of an interrupted atomic write: allowed, cleared on resume.
            assert!(name.contains(".tmp."), "{ctx}: unexpected hidden file");
        } else if name == "manifest.json" {
            let m = Manifest::load(&path).unwrap_or_else(|e| panic!("{ctx}: {e}"));
            for d in &m.domains {
                for r in d.rounds.iter().filter_map(|r| r.file.as_ref()) {
                    assert!(dir.join(r).is_file(), "{ctx}: lists {r}, which is missing");
                }
            }
        } else if name == "run.json" {
            let text = std::fs::read_to_string(&path).unwrap();
            serde_json::from_str::<serde_json::Value>(&text).unwrap_or_else(|e| panic!("{ctx}: {e}"));
        } else if name.ends_with(".safetensors") {
            let st = SafeTensors::open(&path).unwrap_or_else(|e| panic!("{ctx}: {e}"));
            for key in st.entries().keys() {
                st.tensor(key).unwrap_or_else(|e| panic!("{ctx}: tensor {key}: {e}"));
            }
        } else if name == "metrics.jsonl" {
            let text = std::fs::read_to_string(&path).unwrap();
            // Only the last line may be torn (the next resume cuts it).
            let complete = text.rsplit_once('\n').map_or("", |(head, _)| head);
            for line in complete.lines() {
                serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("{ctx}: line {line:?}: {e}"));
            }
        } else {
            panic!("{ctx}: a file the run is not expected to write");
        }
    }
    let temporaries = files.iter().filter(|f| f.to_string_lossy().contains(".tmp.")).count();
    (files.len(), temporaries)
}

/// What one kill campaign saw.
struct Killed {
    kills: usize,
    /// [`progress`] right after each kill.
    progress_at_kills: Vec<Option<usize>>,
}

/// Runs `root/<name>.json` again and again, killing it at a random moment within the first 5-60%
/// of an uninterrupted run's time `full` (measured from each restart: early kills land in model
/// loading, later ones mid-round or mid-write) until an attempt finishes; checks the files after
/// every kill and, at the end, that the result equals the uninterrupted run in `root/reference`.
fn kill_until_done(root: &Path, name: &str, seed: u64, full: Duration) -> Killed {
    let config = write_config(root, name);
    let dir = root.join(name);
    let mut rng = Uniform(seed);
    let (mut kills, mut checked, mut temporaries_seen) = (0, 0, 0);
    let mut progress_at_kills = Vec::new();
    let max_attempts = 60;
    let mut finished = false;
    for attempt in 0..max_attempts {
        let mut child = bin()
            .args(["train", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The last attempts run to the end, so the loop finishes however the kills fell.
        let deadline = if attempt + 3 >= max_attempts { Duration::MAX } else { full.mul_f64(0.05 + 0.55 * rng.next()) };
        let begun = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if begun.elapsed() >= deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        match status {
            Some(status) => {
                let stderr = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
                assert!(status.success(), "{name} attempt {attempt}: {stderr}");
                finished = true;
                break;
            }
            None => {
                child.kill().unwrap(); // SIGKILL on Unix
                child.wait().unwrap();
                kills += 1;
                let (files, temporaries) = assert_whole(&dir, kills);
                checked += files;
                temporaries_seen += temporaries;
                progress_at_kills.push(progress(&dir));
            }
        }
    }
    assert!(finished, "{name}: the run did not finish in {max_attempts} attempts");

    // The finished run equals the uninterrupted one, and left no temporaries.
    let reference = root.join("reference");
    let want = files_under(&reference);
    assert_eq!(files_under(&dir), want, "{name}: the same files");
    let load = |d: &Path| timeless(&Manifest::load(&d.join("manifest.json")).unwrap());
    assert_eq!(load(&dir), load(&reference), "{name}");
    let mut compared = 0;
    for rel in want.iter().filter(|p| p.extension().is_some_and(|e| e == "safetensors")) {
        let (a, b) = (std::fs::read(reference.join(rel)).unwrap(), std::fs::read(dir.join(rel)).unwrap());
        assert!(a == b, "{name}: {} differs from the uninterrupted run's", rel.display());
        compared += 1;
    }
    // Four stacks and the second domain's null-space projector.
    assert_eq!(compared, 5, "{want:?}");
    assert_whole(&dir, kills);
    eprintln!(
        "crash_resume {name}: {kills} kills (rounds recorded at each: {progress_at_kills:?}), {checked} files checked \
         after them, {temporaries_seen} temporaries of interrupted writes seen; uninterrupted run {full:?}"
    );
    Killed { kills, progress_at_kills }
}

#[test]
fn a_run_killed_many_times_resumes_to_the_uninterrupted_result() {
    let root = std::env::temp_dir().join(format!("bs-crash-resume-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    write_domain(&root.join("count.jsonl"), 40, |i| (0..=i % 6).map(|k| k.to_string()).collect::<Vec<_>>().join(" "));
    write_domain(&root.join("spell.jsonl"), 40, |i| {
        ["one", "two", "three", "four", "five"][i % 5].chars().map(|c| format!("{c} ")).collect()
    });

    let reference = write_config(&root, "reference");
    let start = Instant::now();
    let out = bin().args(["train", "--config"]).arg(&reference).stdin(Stdio::null()).output().unwrap();
    let full = start.elapsed();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let (mut kills, mut stages) = (0, Vec::new());
    for (i, seed) in [0x5eed, 0xbeef, 0xf00d].into_iter().enumerate() {
        let k = kill_until_done(&root, &format!("killed{i}"), seed, full);
        kills += k.kills;
        stages.extend(k.progress_at_kills);
    }
    // "Many times", and at several stages: before the first manifest, and after 0, 1, 2... rounds.
    assert!(kills >= 9, "only {kills} kills landed before the runs finished (run time {full:?})");
    stages.sort();
    stages.dedup();
    assert!(stages.len() >= 3, "kills landed at too few stages: {stages:?}");
    std::fs::remove_dir_all(&root).unwrap();
}
