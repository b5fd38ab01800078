//! Command line of `gpu-bench` (hand-parsed: a handful of flags needs no crate).

use std::path::PathBuf;

pub const USAGE: &str = "\
gpu-bench: GPU kernel benchmarks (CUDA-event timing, median of many samples), with the copy and
cuBLAS ceilings measured in the same run, as JSON lines.

usage:
  gpu-bench run [--filter SUBSTR] [--reps N] [--warmup N] [--warmup-ms MS]
                [--min-sample-us US] [--max-bench-ms MS] [--out FILE] [--targets FILE]
                [--commit SHA]
      Measures every registered benchmark whose id contains SUBSTR (default: all) on device 0.
      The ceilings (copy/d2d, cublas 4096^3 and 8192^3) are always measured, and the cuBLAS
      reference of every selected GEMM or NF4 benchmark. JSON lines go to FILE (default:
      stdout), a table to stderr. Exit 0 if all ran, 1 if any failed (an unavailable cuBLAS is not
      a failure), 2 on usage errors or no usable GPU. --reps: timed samples (default 50);
      --warmup, --warmup-ms: untimed samples first, at least N of them and MS milliseconds of
      GPU time (defaults 10 and 100, so that clocks have ramped up); --min-sample-us: each sample repeats the call
      until it lasts about this long (default 1000); --max-bench-ms: fewer warm-up and timed
      samples (at least 3 and 5) where a benchmark would take longer than this (default 2000);
      --targets: the issue targets and the ratios to cuBLAS (see `targets`) as JSON lines to FILE
      (the table goes to stderr in any case); --commit: recorded as `commit` (default: the
      BRAINSTACKS_COMMIT environment variable, else omitted).
  gpu-bench list
      Prints the registered benchmark ids with their bytes and FLOPs per call.
  gpu-bench compare OLD NEW [--threshold FRACTION]
      Compares two result files by id (median time). Exit 1 if any id present in both is slower in
      NEW by more than FRACTION (default 0.05 = 5 %), else 0; 2 on unreadable input.
  gpu-bench show FILE
      Prints a results file as a table.
  gpu-bench targets FILE [--json]
      Judges the issue targets (GEMM vs cuBLAS, NF4 bandwidth and speedups) on the records of
      one results file, PASS/FAIL each, and lists every kernel's ratio to cuBLAS at its shape;
      --json prints JSON lines instead. Exit 0 whatever the verdicts; 2 on unreadable input.
";

/// Options of `run`.
#[derive(Clone, Debug, PartialEq)]
pub struct RunOptions {
    pub filter: Option<String>,
    pub reps: usize,
    pub warmup: usize,
    pub warmup_ms: f64,
    pub min_sample_us: f64,
    pub max_bench_ms: f64,
    pub out: Option<PathBuf>,
    pub targets: Option<PathBuf>,
    pub commit: Option<String>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            filter: None,
            reps: 50,
            warmup: 10,
            warmup_ms: 100.0,
            min_sample_us: 1000.0,
            max_bench_ms: 2000.0,
            out: None,
            targets: None,
            commit: None,
        }
    }
}

impl RunOptions {
    /// `(warm-up samples, warm-up ms, timed samples)` for a benchmark whose sample lasts
    /// `sample_us`: the options as given when warm-up and timed samples together fit in
    /// `max_bench_ms`, else fewer of each (30 % of the budget for the warm-up, 70 % for the
    /// timing, at least 3 warm-up and 5 timed samples, never more than asked for).
    pub fn sample_plan(&self, sample_us: f64) -> (usize, f64, usize) {
        let budget_us = self.max_bench_ms * 1e3;
        let cost_us = (self.warmup as f64 * sample_us).max(self.warmup_ms * 1e3)
            + self.reps as f64 * sample_us;
        if cost_us <= budget_us || sample_us <= 0.0 || !sample_us.is_finite() {
            return (self.warmup, self.warmup_ms, self.reps);
        }
        let fit = |share: f64, floor: usize| ((share * budget_us / sample_us) as usize).max(floor);
        (
            self.warmup.min(fit(0.3, 3)),
            self.warmup_ms.min(0.3 * self.max_bench_ms),
            self.reps.min(fit(0.7, 5)),
        )
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    Run(RunOptions),
    List,
    Compare {
        old: PathBuf,
        new: PathBuf,
        threshold: f64,
    },
    Show(PathBuf),
    Targets {
        file: PathBuf,
        json: bool,
    },
    Help,
}

fn value<'a>(flag: &str, it: &mut impl Iterator<Item = &'a String>) -> Result<&'a String, String> {
    it.next().ok_or_else(|| format!("{flag} needs a value"))
}

fn number<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("{flag}: not a valid number: {v:?}"))
}

/// Parses the arguments after the program name.
pub fn parse(args: &[String]) -> Result<Command, String> {
    let mut it = args.iter();
    let Some(cmd) = it.next() else {
        return Err("no command given".into());
    };
    match cmd.as_str() {
        "help" | "--help" | "-h" => Ok(Command::Help),
        "list" => match it.next() {
            None => Ok(Command::List),
            Some(a) => Err(format!("list: unexpected argument {a:?}")),
        },
        "run" => {
            let mut o = RunOptions::default();
            while let Some(a) = it.next() {
                match a.as_str() {
                    "--filter" => o.filter = Some(value(a, &mut it)?.clone()),
                    "--reps" => o.reps = number(a, value(a, &mut it)?)?,
                    "--warmup" => o.warmup = number(a, value(a, &mut it)?)?,
                    "--warmup-ms" => o.warmup_ms = number(a, value(a, &mut it)?)?,
                    "--min-sample-us" => o.min_sample_us = number(a, value(a, &mut it)?)?,
                    "--max-bench-ms" => o.max_bench_ms = number(a, value(a, &mut it)?)?,
                    "--out" => o.out = Some(PathBuf::from(value(a, &mut it)?)),
                    "--targets" => o.targets = Some(PathBuf::from(value(a, &mut it)?)),
                    "--commit" => o.commit = Some(value(a, &mut it)?.clone()),
                    _ => return Err(format!("run: unknown argument {a:?}")),
                }
            }
            if o.reps == 0 {
                return Err("--reps must be at least 1".into());
            }
            for (flag, v) in [
                ("--min-sample-us", o.min_sample_us),
                ("--warmup-ms", o.warmup_ms),
                ("--max-bench-ms", o.max_bench_ms),
            ] {
                if !(v.is_finite() && v >= 0.0) {
                    return Err(format!("{flag} must be a number >= 0"));
                }
            }
            Ok(Command::Run(o))
        }
        "compare" => {
            let mut files = Vec::new();
            let mut threshold: f64 = 0.05;
            while let Some(a) = it.next() {
                match a.as_str() {
                    "--threshold" => threshold = number(a, value(a, &mut it)?)?,
                    s if s.starts_with("--") => return Err(format!("compare: unknown flag {a:?}")),
                    _ => files.push(PathBuf::from(a)),
                }
            }
            if !(threshold.is_finite() && threshold >= 0.0) {
                return Err("--threshold must be a fraction >= 0 (0.05 = 5 %)".into());
            }
            let [old, new]: [PathBuf; 2] = files.try_into().map_err(|f: Vec<PathBuf>| {
                format!("compare needs OLD and NEW, got {} file(s)", f.len())
            })?;
            Ok(Command::Compare {
                old,
                new,
                threshold,
            })
        }
        "show" => match (it.next(), it.next()) {
            (Some(f), None) => Ok(Command::Show(PathBuf::from(f))),
            _ => Err("show needs exactly one FILE".into()),
        },
        "targets" => {
            let (mut file, mut json) = (None, false);
            for a in it {
                match a.as_str() {
                    "--json" => json = true,
                    s if s.starts_with("--") => return Err(format!("targets: unknown flag {a:?}")),
                    _ if file.is_none() => file = Some(PathBuf::from(a)),
                    _ => return Err("targets needs exactly one FILE".into()),
                }
            }
            let file = file.ok_or("targets needs exactly one FILE")?;
            Ok(Command::Targets { file, json })
        }
        other => Err(format!("unknown command {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Command, String> {
        let v: Vec<String> = s.split_whitespace().map(String::from).collect();
        parse(&v)
    }

    #[test]
    fn run_flags() {
        assert_eq!(p("run"), Ok(Command::Run(RunOptions::default())));
        let Ok(Command::Run(o)) = p(
            "run --filter cast --reps 7 --warmup 0 --warmup-ms 5 --min-sample-us 250 --out r.jsonl \
             --commit abc",
        ) else {
            panic!()
        };
        assert_eq!(o.filter.as_deref(), Some("cast"));
        assert_eq!(
            (o.reps, o.warmup, o.warmup_ms, o.min_sample_us),
            (7, 0, 5.0, 250.0)
        );
        assert!(p("run --warmup-ms -1").is_err());
        assert!(p("run --max-bench-ms -1").is_err());
        let Ok(Command::Run(o2)) = p("run --max-bench-ms 500 --targets t.jsonl") else {
            panic!()
        };
        assert_eq!(o2.max_bench_ms, 500.0);
        assert_eq!(o2.targets, Some(PathBuf::from("t.jsonl")));
        assert_eq!(o.out, Some(PathBuf::from("r.jsonl")));
        assert_eq!(o.commit.as_deref(), Some("abc"));
        assert!(p("run --reps 0").is_err());
        assert!(p("run --reps x").is_err());
        assert!(p("run --reps").is_err());
        assert!(p("run --bogus").is_err());
    }

    #[test]
    fn sample_plan_caps_slow_benchmarks() {
        let o = RunOptions::default();
        // 1 ms samples: 100 ms of warm-up (more than 10 samples) + 50 ms fits in 2 s.
        assert_eq!(o.sample_plan(1000.0), (10, 100.0, 50));
        // 30 ms samples: 300 + 1500 ms fits.
        assert_eq!(o.sample_plan(30_000.0), (10, 100.0, 50));
        // 100 ms samples: 1000 + 5000 ms does not: 6 warm-up (600 ms) and 14 timed (1400 ms).
        assert_eq!(o.sample_plan(100_000.0), (6, 100.0, 14));
        // A second per sample: the floors, 3 and 5.
        assert_eq!(o.sample_plan(1e6), (3, 100.0, 5));
        let slow_warm = RunOptions {
            warmup: 0,
            warmup_ms: 5000.0,
            ..RunOptions::default()
        };
        assert_eq!(slow_warm.sample_plan(1000.0), (0, 600.0, 50));
        assert_eq!(o.sample_plan(0.0), (10, 100.0, 50));
    }

    #[test]
    fn other_commands() {
        assert_eq!(
            p("compare a.jsonl b.jsonl"),
            Ok(Command::Compare {
                old: "a.jsonl".into(),
                new: "b.jsonl".into(),
                threshold: 0.05
            })
        );
        let Ok(Command::Compare { threshold, .. }) = p("compare --threshold 0.1 a b") else {
            panic!()
        };
        assert_eq!(threshold, 0.1);
        assert!(p("compare a").is_err());
        assert!(p("compare a b c").is_err());
        assert!(p("compare a b --threshold -1").is_err());
        assert_eq!(p("show f"), Ok(Command::Show("f".into())));
        assert!(p("show").is_err());
        assert_eq!(
            p("targets r.jsonl"),
            Ok(Command::Targets {
                file: "r.jsonl".into(),
                json: false
            })
        );
        assert_eq!(
            p("targets --json r.jsonl"),
            Ok(Command::Targets {
                file: "r.jsonl".into(),
                json: true
            })
        );
        assert!(p("targets").is_err());
        assert!(p("targets a b").is_err());
        assert!(p("targets a --bogus").is_err());
        assert_eq!(p("list"), Ok(Command::List));
        assert_eq!(p("--help"), Ok(Command::Help));
        assert!(p("").is_err());
        assert!(p("frobnicate").is_err());
    }
}
