//! `no_grad`: run code without recording anything (evaluation, frozen bases, optimizer updates).

use std::cell::Cell;

thread_local! {
    static DEPTH: Cell<usize> = const { Cell::new(0) };
}

/// True while a `no_grad` scope is active on this thread.
pub fn is_active() -> bool {
    DEPTH.with(|d| d.get() > 0)
}

/// While alive, ops on this thread record nothing and return constants. Nestable.
pub struct NoGradGuard(());

impl NoGradGuard {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        DEPTH.with(|d| d.set(d.get() + 1));
        NoGradGuard(())
    }
}

impl Drop for NoGradGuard {
    fn drop(&mut self) {
        DEPTH.with(|d| d.set(d.get() - 1));
    }
}

/// Runs `f` with recording switched off on this thread.
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    let _guard = NoGradGuard::new();
    f()
}
