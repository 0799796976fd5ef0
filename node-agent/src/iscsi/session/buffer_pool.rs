//! A small pool of Data-Out buffers, so a write does not allocate a fresh buffer (nor grow one
//! PDU by PDU) when an earlier command's buffer can be reused.

/// Buffers kept for reuse: at most `keep` of them, with at most `max_bytes` of capacity
/// together.
#[derive(Debug)]
pub(crate) struct BufferPool {
    free: Vec<Vec<u8>>,
    keep: usize,
    max_bytes: usize,
    bytes: usize,
}

impl BufferPool {
    pub(crate) fn new(keep: usize, max_bytes: usize) -> Self {
        Self {
            free: Vec::new(),
            keep,
            max_bytes,
            bytes: 0,
        }
    }

    /// An empty buffer with room for `len` bytes: the smallest pooled one that fits, else the
    /// largest pooled one (grown once), else a new one.
    pub(crate) fn take(&mut self, len: usize) -> Vec<u8> {
        let fit = self
            .free
            .iter()
            .enumerate()
            .filter(|(_, b)| b.capacity() >= len)
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, _)| i);
        let pick = fit.or_else(|| {
            self.free
                .iter()
                .enumerate()
                .max_by_key(|(_, b)| b.capacity())
                .map(|(i, _)| i)
        });
        let mut buf = match pick {
            Some(i) => self.free.swap_remove(i),
            None => Vec::new(),
        };
        self.bytes -= buf.capacity();
        buf.clear();
        buf.reserve_exact(len);
        buf
    }

    /// Returns a buffer for reuse; when the pool is full the smallest buffer is dropped, and
    /// a buffer that would take the pool past its byte limit is not kept.
    pub(crate) fn give(&mut self, buf: Vec<u8>) {
        let cap = buf.capacity();
        if self.keep == 0 || cap == 0 {
            return;
        }
        if self.free.len() < self.keep {
            if self.bytes + cap <= self.max_bytes {
                self.bytes += cap;
                self.free.push(buf);
            }
            return;
        }
        if let Some((i, smallest)) = self
            .free
            .iter()
            .enumerate()
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, b)| (i, b.capacity()))
            && smallest < cap
            && self.bytes - smallest + cap <= self.max_bytes
            && let Some(slot) = self.free.get_mut(i)
        {
            self.bytes = self.bytes - smallest + cap;
            *slot = buf;
        }
    }

    /// Number of buffers waiting for reuse.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_the_smallest_fitting_buffer() {
        let mut pool = BufferPool::new(2, 1 << 20);
        pool.give(Vec::with_capacity(100));
        pool.give(Vec::with_capacity(1000));
        let b = pool.take(50);
        assert!(
            b.capacity() >= 100 && b.capacity() < 1000,
            "took the 100-byte buffer"
        );
        assert!(b.is_empty());
        assert_eq!(pool.len(), 1);
    }

    #[test]
    fn keeps_at_most_keep_buffers_preferring_large_ones() {
        let mut pool = BufferPool::new(1, 1 << 20);
        pool.give(Vec::with_capacity(10));
        pool.give(Vec::with_capacity(500));
        pool.give(Vec::with_capacity(20));
        assert_eq!(pool.len(), 1);
        assert!(pool.take(0).capacity() >= 500);
        assert_eq!(pool.len(), 0);
        assert!(
            pool.take(64).capacity() >= 64,
            "a new buffer when the pool is empty"
        );
    }

    #[test]
    fn never_holds_more_than_its_byte_limit() {
        let mut pool = BufferPool::new(8, 1000);
        for cap in [400, 400, 400, 2000] {
            pool.give(Vec::with_capacity(cap));
        }
        assert_eq!(
            pool.len(),
            2,
            "the third 400 and the 2000 would pass 1000 bytes"
        );
        assert!(pool.bytes <= 1000);
        let b = pool.take(300);
        assert!(b.capacity() >= 300);
        assert_eq!(pool.len(), 1);
        pool.give(b);
        assert_eq!(pool.len(), 2);
        assert!(pool.bytes <= 1000);
    }
}
