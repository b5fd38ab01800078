//! Process-wide heap settings for long runs of tensor work.
//!
//! A training step frees and reallocates the same large buffers (activations, gradients, packed
//! operands) every step. glibc's malloc serves each allocation above its mmap threshold (128 KiB
//! at first, adapting upwards) with fresh pages from the system and gives them back on free, so
//! every step paid thousands of page faults, each zeroing a page under the process's memory lock,
//! which also serialised the threads. [`retain_freed_memory`] makes malloc keep such memory for
//! reuse instead. Measured on the training-step bench (2 threads): about 8,000 page faults a step
//! before, about 1,500 after.

/// Serves allocations up to 32 MiB (glibc's ceiling for this setting on 64-bit systems) from
/// malloc's own heaps and stops it from returning freed memory at the top of a heap to the system
/// (up to 1 GiB). The memory a run has peaked at stays with the process until it exits, which is
/// what a training or evaluation run wants.
///
/// Call it once, early, from a program (the `brainstacks` CLI and the benches do); a library
/// should leave the choice to its program. Returns whether the settings were applied: only on
/// Linux with glibc; elsewhere it does nothing and returns false.
pub fn retain_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // glibc's <malloc.h> parameter numbers.
        const M_TRIM_THRESHOLD: i32 = -1;
        const M_MMAP_THRESHOLD: i32 = -3;
        unsafe extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        // SAFETY: mallopt only changes malloc's tuning parameters; glibc allows it at any time.
        // It returns 1 on success and 0 for a value it rejects.
        unsafe { mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1 && mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    false
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn settings_are_accepted_by_glibc() {
        assert!(super::retain_freed_memory());
        // A large allocation and free still work afterwards.
        let v = vec![1u8; 8 << 20];
        assert_eq!(v.iter().map(|&x| usize::from(x)).sum::<usize>(), 8 << 20);
    }
}
