//! The global allocator: mimalloc for small blocks, the C library's malloc (straight from and
//! back to the OS) for large ones.
//!
//! Under load most of kefu's allocations are made on one thread and freed on another: a frame
//! decoded on an async thread is stored by the writer thread and its event dropped by the
//! dispatcher. glibc malloc serves that pattern with locked arenas and consolidation work, over
//! a quarter of the server's CPU time at full ingest (docs/bench-log/2026-11-27.md, "Tables kept
//! open per batch, and the allocator"); mimalloc frees into per-thread pages without a lock.
//! Transparent huge pages are off for the process ([`configure`]): they would back mimalloc's
//! regions with 2 MiB pages, which raised the memory of an idle connection from 4.8 to 7.8 KiB.
//!
//! Blocks of [`LARGE_BYTES`] or more bypass mimalloc. The biggest are argon2's 19 MiB
//! password-hash buffers, made on blocking-pool threads that then sleep: mimalloc would keep
//! their memory in those threads' caches. glibc with a fixed mmap threshold in practice maps each
//! such block on its own and unmaps it when freed. (glibc's default threshold rises after the
//! first large free, after which 48 logins took a server from 26 MiB to 650 MiB: "Memory after
//! logins".)

use std::alloc::{GlobalAlloc, Layout, System};

use mimalloc::MiMalloc;

/// The size from which a block comes from the C library instead of mimalloc.
const LARGE_BYTES: usize = 256 * 1024;

#[global_allocator]
static GLOBAL: KefuAllocator = KefuAllocator;

/// Routes each block by its size, which is the same when it is freed.
pub struct KefuAllocator;

fn is_large(size: usize) -> bool {
    size >= LARGE_BYTES
}

// SAFETY: each block is allocated and freed by the same allocator, chosen by its size; a
// `realloc` across the boundary moves the block from one to the other.
unsafe impl GlobalAlloc for KefuAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is passed on.
        unsafe { if is_large(layout.size()) { System.alloc(layout) } else { MiMalloc.alloc(layout) } }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is passed on.
        unsafe { if is_large(layout.size()) { System.alloc_zeroed(layout) } else { MiMalloc.alloc_zeroed(layout) } }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from the allocator its size selects.
        unsafe { if is_large(layout.size()) { System.dealloc(ptr, layout) } else { MiMalloc.dealloc(ptr, layout) } }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        match (is_large(layout.size()), is_large(new_size)) {
            // SAFETY: `ptr` came from the allocator both sizes select.
            (true, true) => unsafe { System.realloc(ptr, layout, new_size) },
            (false, false) => unsafe { MiMalloc.realloc(ptr, layout, new_size) },
            _ => {
                // SAFETY: `new_size` is non-zero and fits the alignment (the caller's contract).
                let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
                // SAFETY: the new block is as large as the bytes copied; the old one is freed by
                // the allocator it came from.
                unsafe {
                    let moved = self.alloc(new_layout);
                    if !moved.is_null() {
                        std::ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                    moved
                }
            }
        }
    }
}

/// Sets up the process for [`KefuAllocator`]: glibc's mmap threshold is fixed at
/// [`LARGE_BYTES`], so the blocks it serves are mapped on their own and returned to the OS when
/// freed, and transparent huge pages are turned off, whatever the host's setting. Call once at
/// start. Other targets need nothing.
pub fn configure() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters and takes glibc's arena lock; prctl
    // with PR_SET_THP_DISABLE only changes how this process's memory is backed.
    unsafe {
        let threshold_set = libc::mallopt(libc::M_MMAP_THRESHOLD, LARGE_BYTES as libc::c_int);
        debug_assert_eq!(threshold_set, 1, "glibc refused the mmap threshold");
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_keeps_its_bytes_when_it_grows_or_shrinks_across_the_boundary() {
        let mut bytes: Vec<u8> = (0..1000u32).map(|n| n as u8).collect();
        bytes.reserve_exact(LARGE_BYTES * 2);
        assert!(bytes.capacity() >= LARGE_BYTES);
        bytes.shrink_to_fit();
        assert!(bytes.capacity() < LARGE_BYTES);
        assert!(bytes.iter().enumerate().all(|(n, byte)| *byte == n as u8));
        let zeroed = vec![0u8; LARGE_BYTES + 1];
        assert!(zeroed.iter().all(|byte| *byte == 0));
    }

    #[test]
    fn blocks_at_the_boundary_and_over_aligned_ones_move_between_the_allocators_intact() {
        let sizes = [LARGE_BYTES - 1, LARGE_BYTES, LARGE_BYTES + 1, 300_000, 64];
        for align in [8, 16, 4096] {
            for &from in &sizes {
                for &to in &sizes {
                    let layout = Layout::from_size_align(from, align).unwrap();
                    // SAFETY: each block is used within its size and freed with its layout.
                    unsafe {
                        let block = KefuAllocator.alloc(layout);
                        assert!(!block.is_null());
                        assert_eq!(block as usize % align, 0);
                        for offset in 0..from.min(to) {
                            *block.add(offset) = offset as u8;
                        }
                        let moved = KefuAllocator.realloc(block, layout, to);
                        assert!(!moved.is_null());
                        assert_eq!(moved as usize % align, 0, "{from} → {to} at {align}");
                        assert!((0..from.min(to)).all(|offset| *moved.add(offset) == offset as u8));
                        KefuAllocator.dealloc(moved, Layout::from_size_align(to, align).unwrap());
                    }
                }
            }
        }
    }
}
