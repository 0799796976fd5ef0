//! One file's volatile cache: pages written or punched since the last fsync, in memory.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

pub const PAGE: u64 = 4096;

enum Page {
    Data(Box<[u8]>),
    Hole,
}

/// A backing file and what is cached of it.
pub struct CachedFile {
    file: File,
    size: u64,
    pages: HashMap<u64, Page>,
    /// Pages in the order they were first cached (entries may be stale after a write-back).
    order: VecDeque<u64>,
}

impl CachedFile {
    pub fn new(file: File) -> io::Result<Self> {
        let size = file.metadata()?.len();
        Ok(CachedFile {
            file,
            size,
            pages: HashMap::new(),
            order: VecDeque::new(),
        })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn cached_pages(&self) -> usize {
        self.pages.len()
    }

    /// The current content of page `index`, cached or from the backing file.
    fn page(&self, index: u64) -> io::Result<Box<[u8]>> {
        match self.pages.get(&index) {
            Some(Page::Data(d)) => Ok(d.clone()),
            Some(Page::Hole) => Ok(vec![0; PAGE as usize].into_boxed_slice()),
            None => {
                let mut buf = vec![0; PAGE as usize];
                let mut got = 0;
                while got < buf.len() {
                    let n = self
                        .file
                        .read_at(&mut buf[got..], index * PAGE + got as u64)?;
                    if n == 0 {
                        break;
                    }
                    got += n;
                }
                Ok(buf.into_boxed_slice())
            }
        }
    }

    fn cache(&mut self, index: u64, page: Page) {
        if self.pages.insert(index, page).is_none() {
            self.order.push_back(index);
        }
    }

    pub fn read(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let end = (offset + len as u64).min(self.size);
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        let mut at = offset;
        while at < end {
            let index = at / PAGE;
            let from = (at % PAGE) as usize;
            let to = ((end - index * PAGE).min(PAGE)) as usize;
            out.extend_from_slice(&self.page(index)?[from..to]);
            at = index * PAGE + to as u64;
        }
        Ok(out)
    }

    pub fn write(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut at = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let index = at / PAGE;
            let from = (at % PAGE) as usize;
            let n = rest.len().min(PAGE as usize - from);
            let mut page = if from == 0 && n == PAGE as usize {
                vec![0; PAGE as usize].into_boxed_slice()
            } else {
                self.page(index)?
            };
            page[from..from + n].copy_from_slice(&rest[..n]);
            self.cache(index, Page::Data(page));
            rest = &rest[n..];
            at += n as u64;
        }
        self.size = self.size.max(offset + data.len() as u64);
        Ok(())
    }

    /// Punches a hole: whole pages become holes, partial pages are zeroed.
    pub fn punch(&mut self, offset: u64, len: u64) -> io::Result<()> {
        let end = (offset + len).min(self.size);
        let mut at = offset;
        while at < end {
            let index = at / PAGE;
            let from = at % PAGE;
            let to = (end - index * PAGE).min(PAGE);
            if from == 0 && to == PAGE {
                self.cache(index, Page::Hole);
            } else {
                let mut page = self.page(index)?;
                page[from as usize..to as usize].fill(0);
                self.cache(index, Page::Data(page));
            }
            at = index * PAGE + to;
        }
        Ok(())
    }

    fn write_back(&mut self, index: u64) -> io::Result<bool> {
        let Some(page) = self.pages.remove(&index) else {
            return Ok(false);
        };
        let offset = index * PAGE;
        let len = (self.size - offset).min(PAGE) as usize;
        match page {
            Page::Data(d) => self.file.write_all_at(&d[..len], offset)?,
            Page::Hole => {
                // SAFETY: fallocate on a descriptor this struct owns.
                let r = unsafe {
                    libc::fallocate(
                        self.file.as_raw_fd(),
                        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                        offset as libc::off_t,
                        len as libc::off_t,
                    )
                };
                if r != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        Ok(true)
    }

    /// Writes back up to `n` of the oldest cached pages; returns how many.
    pub fn write_back_oldest(&mut self, n: usize) -> io::Result<usize> {
        let mut done = 0;
        while done < n {
            let Some(index) = self.order.pop_front() else {
                break;
            };
            if self.write_back(index)? {
                done += 1;
            }
        }
        Ok(done)
    }

    /// fsync: every cached page goes to the backing file, which is then synced.
    pub fn sync(&mut self) -> io::Result<()> {
        let mut indexes: Vec<u64> = self.pages.keys().copied().collect();
        indexes.sort_unstable();
        for index in indexes {
            self.write_back(index)?;
        }
        self.order.clear();
        if self.file.metadata()?.len() < self.size {
            self.file.set_len(self.size)?;
        }
        self.file.sync_data()
    }

    /// Sets the size (a metadata change, applied at once); cached pages past it go.
    pub fn truncate(&mut self, size: u64) -> io::Result<()> {
        self.pages.retain(|&i, _| i * PAGE < size);
        self.file.set_len(size)?;
        self.size = size;
        Ok(())
    }

    /// Forgets every cached page (a power cut, or a failed writeback); returns how many.
    pub fn drop_cache(&mut self) -> usize {
        let n = self.pages.len();
        self.pages.clear();
        self.order.clear();
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(len: u64) -> (tempfile::NamedTempFile, CachedFile) {
        let t = tempfile::NamedTempFile::new().unwrap();
        t.as_file().set_len(len).unwrap();
        let f = CachedFile::new(t.reopen().unwrap()).unwrap();
        (t, f)
    }

    #[test]
    fn unsynced_data_is_read_back_but_lost_without_fsync() {
        let (t, mut f) = file(16384);
        f.write(100, &[7; 5000]).unwrap();
        assert_eq!(f.read(100, 5000).unwrap(), vec![7; 5000]);
        assert_eq!(
            std::fs::read(t.path()).unwrap(),
            vec![0; 16384],
            "nothing on disk yet"
        );
        assert_eq!(f.drop_cache(), 2);
        assert_eq!(
            f.read(100, 10).unwrap(),
            vec![0; 10],
            "a power cut loses it"
        );
    }

    #[test]
    fn fsync_writes_data_and_holes_back() {
        let (t, mut f) = file(16384);
        std::fs::write(t.path(), vec![1; 16384]).unwrap();
        f.write(0, &[9; 10]).unwrap();
        f.punch(4096, 8192).unwrap();
        assert_eq!(
            f.read(4090, 12).unwrap(),
            [1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
        );
        f.sync().unwrap();
        let disk = std::fs::read(t.path()).unwrap();
        assert_eq!(&disk[..10], &[9; 10]);
        assert_eq!(&disk[10..4096], &vec![1u8; 4086][..]);
        assert!(disk[4096..12288].iter().all(|&b| b == 0));
        assert!(disk[12288..].iter().all(|&b| b == 1));
        assert_eq!(f.cached_pages(), 0);
    }

    #[test]
    fn the_oldest_pages_are_written_back_first() {
        let (t, mut f) = file(3 * PAGE);
        f.write(0, &[1; 4096]).unwrap();
        f.write(2 * PAGE, &[3; 4096]).unwrap();
        assert_eq!(f.write_back_oldest(1).unwrap(), 1);
        let disk = std::fs::read(t.path()).unwrap();
        assert_eq!(disk[0], 1);
        assert_eq!(disk[2 * PAGE as usize], 0);
        assert_eq!(f.cached_pages(), 1);
    }
}
