//! The process's memory between bursts: glibc's malloc keeps the pages of freed memory inside its heap
//! resident until they are reused; at the points where a run has just freed a burst, and before it allocates
//! what the heap's holes cannot serve, they are given back to the kernel (`src/main.rs` sets the
//! allocator's other parameters).

/// Gives the heap's whole free pages back to the kernel: `malloc_trim(0)` (glibc 2.8 and later release free
/// pages anywhere in the heap, not only at its top; `malloc_trim(3)`). It walks the free lists under the
/// allocator's lock, a few milliseconds for the runner's heap at 1,000 namespaces, so it is called at chosen
/// points of a run (after the first lists, every `concurrency` finished namespaces, before the reports), not
/// per allocation. Elsewhere than glibc it does nothing.
pub fn release_free_pages() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let t0 = std::time::Instant::now();
        // SAFETY: malloc_trim takes no pointer and only changes the allocator's own state, under its lock.
        let released = unsafe { libc::malloc_trim(0) } == 1;
        tracing::debug!(
            released,
            elapsed_us = t0.elapsed().as_micros() as u64,
            "malloc_trim: free heap pages given back"
        );
    }
}
