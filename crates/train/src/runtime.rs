//! Process settings for CPU training, applied once at the start of `main`.
//!
//! Two defaults of the platform cost more than the arithmetic on a 2-core machine (both
//! measured with `cargo xtask bench`):
//! - glibc serves blocks above 128 KiB with `mmap` and unmaps them when freed, so every step's
//!   activations fault in fresh zeroed pages, and with two threads the page-table lock makes
//!   that most of the time (LeNet-5 4 -> 18 steps/s, ResNet-20 0.18 -> 2.7, before forja's
//!   kernels). Freed blocks up to 32 MiB (glibc's largest threshold) now stay in the heap; peak
//!   memory stays what is in use at once.
//! - candle's element-wise thread pool spins 25,000 times waiting for work before it sleeps.
//!   While forja's kernels ran on rayon's pool, that took a core from them (LeNet-5 70 -> 89
//!   steps/s); they now run on candle's pool (`forja_layers::kernels::threads`), where the
//!   two limits measured within the noise of each other, so the lower one is kept: it spins
//!   1,000 times, unless `CANDLE_BARRIER_POOL_SPIN_LIMIT` is set.

/// Applies both settings; call it before any tensor work (a no-op for the allocator on other
/// C libraries than glibc).
pub fn tune_for_training() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before other threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
    const SPIN: &str = "CANDLE_BARRIER_POOL_SPIN_LIMIT";
    if std::env::var_os(SPIN).is_none() {
        // Read by candle when its pool starts, on the first element-wise op.
        std::env::set_var(SPIN, "1000");
    }
}
