//! Tuning of the C allocator (glibc malloc) so that large short-lived buffers go back to the OS.
//!
//! Each argon2 password hash (a login, a new agent, a password change) allocates a 19 MiB
//! buffer on a blocking-pool thread. glibc serves an allocation that large with `mmap`, but after
//! freeing one it raises its mmap threshold to that size, so later ones come from the per-thread
//! arenas, which keep the freed memory: 48 logins took a server from 26 MiB to 650 MiB of RSS
//! (BENCHMARKS.md, "Memory after logins"). A fixed threshold turns that adjustment off, and every
//! buffer above it is unmapped when freed. musl and other targets need nothing.

/// Allocations at or above this size get their own mapping, returned to the OS when freed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD_BYTES: libc::c_int = 256 * 1024;

/// Fixes glibc's mmap threshold (see the module documentation). Call once, before threads start.
pub fn return_large_allocations_to_the_os() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
    }
}
