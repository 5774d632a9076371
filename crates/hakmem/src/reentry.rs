//! Re-entry detection (debug builds): the allocator must never allocate through itself. A
//! thread-local flag is raised for the duration of every public entry point; meeting it raised
//! means the allocator (or a policy's `config`) called back into the allocator, and the process
//! ends with a message instead of recursing or deadlocking. Release builds compile it away.

/// Held for the duration of one public allocator call.
pub(crate) struct Guard(());

#[cfg(debug_assertions)]
std::thread_local! {
    // const-initialised and without a destructor: native TLS, never allocates, always accessible.
    static ACTIVE: core::cell::Cell<bool> = const { core::cell::Cell::new(false) };
}

impl Guard {
    /// Marks this thread as inside the allocator; aborts if it already was.
    #[inline(always)]
    pub(crate) fn enter() -> Guard {
        #[cfg(debug_assertions)]
        if ACTIVE.with(|active| active.replace(true)) {
            crate::diag::fatal(format_args!(
                "re-entrant call: the allocator was called from inside itself \
                 (an allocation in the allocator or in a policy's config)"
            ));
        }
        Guard(())
    }
}

/// Runs `f` with the guard lowered: for the one place where re-entry is expected and safe (the
/// pool hooking thread exit, whose `pthread_setspecific` may `calloc`, which is hakmem when hakmem
/// is `malloc`). The flag is restored afterwards.
#[inline]
pub(crate) fn allow<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(debug_assertions)]
    let was = ACTIVE.with(|active| active.replace(false));
    let r = f();
    #[cfg(debug_assertions)]
    ACTIVE.with(|active| active.set(was));
    r
}

impl Drop for Guard {
    #[inline(always)]
    fn drop(&mut self) {
        #[cfg(debug_assertions)]
        ACTIVE.with(|active| active.set(false));
    }
}
