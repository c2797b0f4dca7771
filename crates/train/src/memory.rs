//! Allocator settings for training processes.
//!
//! glibc serves blocks above 128 KiB with `mmap` and gives them back with `munmap` when freed.
//! A training step frees and re-allocates its activations every step, so each step would
//! fault in fresh zeroed pages, and with two threads the page-table lock turns that into
//! most of the time (measured: LeNet-5 4 -> 18 steps/s, ResNet-20 0.18 -> 2.7). Keeping the
//! blocks in the heap reuses them; the process's peak memory stays what it uses at once.

/// Keeps freed blocks up to 32 MiB (glibc's largest mmap threshold) in the heap and never
/// trims it; a no-op on other C libraries. Call it once, early in `main`.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before any threads
    // that allocate concurrently are started.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}
