//! `spindle-faultfs`: a FUSE filesystem for Spindle's fault tests, in the spirit of LazyFS.
//!
//! It shows the regular files of a backing folder. Writes and hole punches stay in this
//! process's memory (the "volatile cache") until the file is fsynced, or until too much is
//! cached and the oldest pages are written back, as a disk cache would; the backing file is
//! the "disk". Commands written to the control file `.faultfs` at the mount's root:
//!
//! - `powercut`: drop every cached page (lost, as in a power failure) and fail every later
//!   operation with EIO, until the process is restarted;
//! - `fail-fsync`: the next fsync fails with EIO and, like Linux after a writeback error,
//!   drops the file's cached pages and reports success to the fsync after it;
//! - `fail-writes` / `ok-writes`: writes fail with EIO (or work again);
//! - `hang-fsync`: the next fsync never returns (nor does anything after it: a dead disk).
//!
//! Reading `.faultfs` tells the cached pages, fsyncs and injected failures so far.

mod cache;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Parser;
use fuser::{
    BsdFileFlags, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, LockOwner, MountOption, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use cache::CachedFile;

/// A FUSE filesystem that keeps unsynced data in memory and fails on command.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Folder whose regular files are shown (the "disk").
    #[arg(long, value_name = "DIR")]
    backing: PathBuf,
    /// Where to mount.
    mountpoint: PathBuf,
    /// Most data kept in memory before the oldest pages are written back.
    #[arg(long, value_name = "MIB", default_value_t = 256)]
    cache_mib: usize,
}

const CONTROL: &str = ".faultfs";
const CONTROL_INO: u64 = 2;
const FIRST_FILE_INO: u64 = 3;
const TTL: Duration = Duration::from_secs(0);

/// Everything behind one lock (the session runs one thread).
struct State {
    backing: PathBuf,
    by_name: HashMap<String, u64>,
    files: HashMap<u64, CachedFile>,
    next_ino: u64,
    cache_pages: usize,
    dead: bool,
    fail_writes: bool,
    fail_next_fsync: bool,
    hang_fsync: bool,
    fsyncs: u64,
    injected: u64,
    lost_pages: u64,
}

struct FaultFs(Mutex<State>);

fn attr(ino: u64, kind: FileType, size: u64, perm: u16) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: size.div_ceil(512),
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind,
        perm,
        nlink: 1,
        uid: 0,
        gid: 0,
        rdev: 0,
        flags: 0,
        blksize: 4096,
    }
}

impl State {
    fn file_ino(&mut self, name: &str) -> Option<u64> {
        if let Some(&ino) = self.by_name.get(name) {
            return Some(ino);
        }
        let path = self.backing.join(name);
        if name.contains('/') || !path.metadata().ok()?.is_file() {
            return None;
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .ok()?;
        let ino = self.next_ino;
        self.next_ino += 1;
        self.by_name.insert(name.to_string(), ino);
        self.files.insert(ino, CachedFile::new(file).ok()?);
        Some(ino)
    }

    fn status(&self) -> String {
        let cached: usize = self.files.values().map(|f| f.cached_pages()).sum();
        format!(
            "cached_pages {cached}\nfsyncs {}\ninjected_failures {}\nlost_pages {}\ndead {}\n",
            self.fsyncs, self.injected, self.lost_pages, self.dead
        )
    }

    fn command(&mut self, text: &str) -> Result<(), Errno> {
        for cmd in text.split_whitespace() {
            match cmd {
                "powercut" => {
                    for f in self.files.values_mut() {
                        self.lost_pages += f.drop_cache() as u64;
                    }
                    self.dead = true;
                }
                "fail-fsync" => self.fail_next_fsync = true,
                "hang-fsync" => self.hang_fsync = true,
                "fail-writes" => self.fail_writes = true,
                "ok-writes" => self.fail_writes = false,
                _ => return Err(Errno::EINVAL),
            }
        }
        Ok(())
    }

    /// Writes back the oldest pages of every file while more than the cache holds.
    fn evict(&mut self) -> std::io::Result<()> {
        let mut total: usize = self.files.values().map(|f| f.cached_pages()).sum();
        for f in self.files.values_mut() {
            if total <= self.cache_pages {
                break;
            }
            total -= f.write_back_oldest(total - self.cache_pages)?;
        }
        Ok(())
    }
}

fn io_errno(e: std::io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}

impl Filesystem for FaultFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let Some(name) = name.to_str().filter(|_| u64::from(parent) == 1) else {
            return reply.error(Errno::ENOENT);
        };
        if name == CONTROL {
            return reply.entry(
                &TTL,
                &attr(CONTROL_INO, FileType::RegularFile, 0, 0o600),
                Generation(0),
            );
        }
        match s.file_ino(name) {
            Some(ino) => {
                let size = s.files[&ino].size();
                reply.entry(
                    &TTL,
                    &attr(ino, FileType::RegularFile, size, 0o644),
                    Generation(0),
                )
            }
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match u64::from(ino) {
            1 => reply.attr(&TTL, &attr(1, FileType::Directory, 0, 0o755)),
            CONTROL_INO => reply.attr(&TTL, &attr(CONTROL_INO, FileType::RegularFile, 0, 0o600)),
            n => match s.files.get(&n) {
                Some(f) => reply.attr(&TTL, &attr(n, FileType::RegularFile, f.size(), 0o644)),
                None => reply.error(Errno::ENOENT),
            },
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = u64::from(ino);
        if n == CONTROL_INO {
            // `echo cmd > .faultfs` truncates first: nothing to do.
            return reply.attr(&TTL, &attr(CONTROL_INO, FileType::RegularFile, 0, 0o600));
        }
        if s.dead {
            return reply.error(Errno::EIO);
        }
        let Some(f) = s.files.get_mut(&n) else {
            return reply.error(Errno::ENOENT);
        };
        if let Some(size) = size
            && let Err(e) = f.truncate(size)
        {
            return reply.error(io_errno(e));
        }
        reply.attr(&TTL, &attr(n, FileType::RegularFile, f.size(), 0o644));
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = u64::from(ino);
        if n != CONTROL_INO && !s.files.contains_key(&n) {
            return reply.error(Errno::ENOENT);
        }
        // Direct I/O: the kernel keeps no page cache of its own for these files, so every
        // read and write comes here and the only volatile cache is ours.
        reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO);
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = u64::from(ino);
        if n == CONTROL_INO {
            let text = s.status().into_bytes();
            let start = (offset as usize).min(text.len());
            return reply.data(&text[start..]);
        }
        if s.dead {
            return reply.error(Errno::EIO);
        }
        match s.files.get_mut(&n).map(|f| f.read(offset, size as usize)) {
            Some(Ok(data)) => reply.data(&data),
            Some(Err(e)) => reply.error(io_errno(e)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = u64::from(ino);
        if n == CONTROL_INO {
            return match s.command(&String::from_utf8_lossy(data)) {
                Ok(()) => reply.written(data.len() as u32),
                Err(e) => reply.error(e),
            };
        }
        if s.dead {
            return reply.error(Errno::EIO);
        }
        if s.fail_writes {
            s.injected += 1;
            return reply.error(Errno::EIO);
        }
        let r = match s.files.get_mut(&n) {
            Some(f) => f.write(offset, data),
            None => return reply.error(Errno::ENOENT),
        };
        match r.and_then(|()| s.evict()) {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(io_errno(e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close() is not a sync: nothing is written back here.
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if s.dead {
            return reply.error(Errno::EIO);
        }
        let n = u64::from(ino);
        s.fsyncs += 1;
        if s.hang_fsync {
            // A disk that stopped answering: this request, and the filesystem, hang.
            loop {
                std::thread::park();
            }
        }
        if s.fail_next_fsync {
            // Like Linux after a writeback error: the error is reported once, the pages
            // that could not be written are gone, and the next fsync succeeds.
            s.fail_next_fsync = false;
            s.injected += 1;
            if let Some(f) = s.files.get_mut(&n) {
                let lost = f.drop_cache() as u64;
                s.lost_pages += lost;
            }
            return reply.error(Errno::EIO);
        }
        match s.files.get_mut(&n).map(|f| f.sync()) {
            Some(Ok(())) | None => reply.ok(),
            Some(Err(e)) => reply.error(io_errno(e)),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if s.dead {
            return reply.error(Errno::EIO);
        }
        if mode != libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE {
            return reply.error(Errno::EOPNOTSUPP);
        }
        match s
            .files
            .get_mut(&u64::from(ino))
            .map(|f| f.punch(offset, length))
        {
            Some(Ok(())) => reply.ok(),
            Some(Err(e)) => reply.error(io_errno(e)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if u64::from(ino) != 1 {
            return reply.error(Errno::ENOENT);
        }
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let names: Vec<String> = std::fs::read_dir(&s.backing)
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        for name in names {
            let _ = s.file_ino(&name);
        }
        let mut entries = vec![
            (1, FileType::Directory, ".".to_string()),
            (1, FileType::Directory, "..".to_string()),
            (CONTROL_INO, FileType::RegularFile, CONTROL.to_string()),
        ];
        entries.extend(
            s.by_name
                .iter()
                .map(|(name, &ino)| (ino, FileType::RegularFile, name.clone())),
        );
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(ino), (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let backing = cli
        .backing
        .canonicalize()
        .with_context(|| format!("backing folder {}", cli.backing.display()))?;
    check_dir(&backing)?;
    let state = State {
        backing,
        by_name: HashMap::new(),
        files: HashMap::new(),
        next_ino: FIRST_FILE_INO,
        cache_pages: cli.cache_mib.max(1) * 256,
        dead: false,
        fail_writes: false,
        fail_next_fsync: false,
        hang_fsync: false,
        fsyncs: 0,
        injected: 0,
        lost_pages: 0,
    };
    let mut config = Config::default();
    config.mount_options.extend([
        MountOption::FSName("spindle-faultfs".into()),
        MountOption::DefaultPermissions,
    ]);
    fuser::mount(FaultFs(Mutex::new(state)), &cli.mountpoint, &config)
        .with_context(|| format!("mounting on {}", cli.mountpoint.display()))?;
    Ok(())
}

fn check_dir(p: &Path) -> anyhow::Result<()> {
    let md = std::fs::metadata(p)?;
    anyhow::ensure!(md.is_dir(), "{} is not a folder", p.display());
    Ok(())
}
