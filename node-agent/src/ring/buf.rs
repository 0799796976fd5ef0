//! Page-aligned read buffers, recycled per thread.
//!
//! A READ's data goes from the kernel into one of these and then, as a [`Bytes`] view of it,
//! straight into the Data-In PDUs: no bounce copy for O_DIRECT and no fresh allocation (with
//! its page faults) per command. When the last view is dropped the memory goes back to the
//! pool of the thread that drops it (the engine thread, which sends the PDUs).

use std::alloc::{self, Layout};
use std::cell::RefCell;
use std::ptr::NonNull;

use bytes::Bytes;

/// Alignment of every buffer: a page, which O_DIRECT accepts on any device.
pub const ALIGN: usize = 4096;

/// Most bytes a thread keeps pooled; buffers freed beyond it go back to the allocator. A
/// full window of 128 KiB reads at queue depth 16 fits.
const POOL_BYTES: usize = 4 << 20;

/// Buffers larger than this are not pooled (rare: the block limits cap transfers lower).
const POOL_MAX_BUF: usize = 1 << 20;

/// Free buffers of one thread, by capacity.
#[derive(Default)]
struct Pool {
    free: Vec<(NonNull<u8>, usize)>,
    bytes: usize,
}

impl Pool {
    fn take(&mut self, cap: usize) -> Option<NonNull<u8>> {
        let i = self.free.iter().position(|&(_, c)| c == cap)?;
        self.bytes -= cap;
        Some(self.free.swap_remove(i).0)
    }

    /// Keeps the buffer if there is room; otherwise hands it back to be freed.
    fn give(&mut self, ptr: NonNull<u8>, cap: usize) -> Option<(NonNull<u8>, usize)> {
        if cap > POOL_MAX_BUF || self.bytes + cap > POOL_BYTES {
            return Some((ptr, cap));
        }
        self.bytes += cap;
        self.free.push((ptr, cap));
        None
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        for (ptr, cap) in self.free.drain(..) {
            dealloc(ptr, cap);
        }
    }
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::default();
}

fn layout(cap: usize) -> Layout {
    // ALIGN is a power of two and `cap` at most isize::MAX rounded to pages: cannot fail for
    // the sizes `capacity_for` produces.
    Layout::from_size_align(cap, ALIGN).expect("page-aligned layout")
}

fn dealloc(ptr: NonNull<u8>, cap: usize) {
    // SAFETY: `ptr` came from `alloc::alloc` with this very layout and is freed once.
    unsafe { alloc::dealloc(ptr.as_ptr(), layout(cap)) }
}

/// Capacity class of a buffer for `len` bytes: a power of two, at least a page, so buffers
/// of similar commands are interchangeable in the pool.
fn capacity_for(len: usize) -> usize {
    len.max(ALIGN).next_power_of_two()
}

/// A page-aligned buffer: `len` initialised bytes of `cap`.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    cap: usize,
    len: usize,
}

// SAFETY: the buffer owns its memory exclusively, like a Vec<u8>.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    /// An empty buffer with room for at least `len` bytes, from this thread's pool if it has
    /// one of the right size.
    pub fn with_capacity(len: usize) -> Self {
        let cap = capacity_for(len);
        let ptr = POOL.with(|p| p.borrow_mut().take(cap)).unwrap_or_else(|| {
            let l = layout(cap);
            // SAFETY: `l` has a non-zero size.
            NonNull::new(unsafe { alloc::alloc(l) }).unwrap_or_else(|| alloc::handle_alloc_error(l))
        });
        AlignedBuf { ptr, cap, len: 0 }
    }

    /// A buffer holding a copy of `data`.
    pub fn copy_of(data: &[u8]) -> Self {
        let mut b = AlignedBuf::with_capacity(data.len());
        // SAFETY: the capacity is at least `data.len()` and the regions are distinct.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), b.ptr.as_ptr(), data.len());
        }
        b.len = data.len();
        b
    }

    /// Bytes that can be read into it.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Where the next byte goes (the first uninitialised one), for the kernel to write to.
    ///
    /// # Safety
    /// Writes through the pointer must stay within the capacity.
    pub(super) unsafe fn spare_ptr(&mut self) -> *mut u8 {
        // SAFETY: `len` is at most the capacity, so the result is within the allocation
        // or one past its end.
        unsafe { self.ptr.as_ptr().add(self.len) }
    }

    /// Marks the first `len` bytes initialised.
    ///
    /// # Safety
    /// Those bytes must have been written, and `len` must not exceed the capacity.
    pub(super) unsafe fn set_len(&mut self, len: usize) {
        debug_assert!(len <= self.cap);
        self.len = len;
    }

    /// The initialised bytes as a [`Bytes`], without copying.
    pub fn into_bytes(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for AlignedBuf {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: the first `len` bytes were written (by `copy_of` or the kernel, see `set_len`).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        let back = POOL
            .try_with(|p| p.borrow_mut().give(self.ptr, self.cap))
            .unwrap_or(Some((self.ptr, self.cap)));
        if let Some((ptr, cap)) = back {
            dealloc(ptr, cap);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_page_aligned_and_sized_in_classes() {
        for len in [1, 512, 4096, 4097, 65536, 131072, 3 << 20] {
            let b = AlignedBuf::with_capacity(len);
            assert_eq!(b.ptr.as_ptr().align_offset(ALIGN), 0);
            assert!(b.capacity() >= len && b.capacity().is_power_of_two());
        }
        let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let b = AlignedBuf::copy_of(&data);
        assert_eq!(b.as_ref(), &data[..]);
        assert_eq!(b.into_bytes(), data);
    }

    #[test]
    fn freed_buffers_are_reused_until_the_pool_is_full() {
        let first = AlignedBuf::with_capacity(8192);
        let ptr = first.ptr;
        drop(first.into_bytes());
        let again = AlignedBuf::with_capacity(5000);
        assert_eq!(again.ptr, ptr, "same class comes back from the pool");
        // Fill the pool past its limit: what does not fit is freed, nothing breaks.
        let many: Vec<AlignedBuf> = (0..(POOL_BYTES / POOL_MAX_BUF + 4))
            .map(|_| AlignedBuf::with_capacity(POOL_MAX_BUF))
            .collect();
        drop(many);
        POOL.with(|p| assert!(p.borrow().bytes <= POOL_BYTES));
        let huge = AlignedBuf::with_capacity(POOL_MAX_BUF * 2);
        drop(huge);
        POOL.with(|p| assert!(p.borrow().bytes <= POOL_BYTES));
    }
}
