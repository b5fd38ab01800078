//! Benchmark helpers shared by the criterion suites, and the GPU benchmark harness.

pub mod harness;

/// The thread count of a CPU suite from `BENCH_THREADS` (a number, or `all` for every core;
/// default 1), installed as the size of rayon's global pool (which the engine's CPU kernels run on).
/// Call it once, first thing in the suite, before anything starts a thread.
pub fn install_bench_threads() -> usize {
    let threads = match std::env::var("BENCH_THREADS").as_deref() {
        Err(_) | Ok("") => 1,
        Ok("all") => std::thread::available_parallelism().map_or(1, |n| n.get()),
        Ok(s) => s.parse().unwrap_or_else(|_| panic!("BENCH_THREADS={s:?}: expected a number or `all`")),
    };
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .expect("the suite's first call, before rayon's pool exists");
    threads
}
