//! The embedded event log: append-only segment files with checksummed frames and group commit.
//!
//! Layout: `DIR/{base:020}.seg`, where `base` is the offset of the segment's first record. A
//! segment starts with a 16-byte header (magic, format version) followed by frames:
//!
//! ```text
//! frame := len:u32 crc32c(body):u32 body
//! body  := base_offset:u64 count:u32 (varint(record_len) record)*
//! ```
//!
//! One frame holds one append batch, so a batch is durable whole or not at all: recovery keeps the
//! longest prefix of valid frames of the last segment and truncates the rest (a torn tail can only
//! be a write that was never acknowledged). Offsets are dense and monotone: record `n` of a frame
//! with base `b` has offset `b + n`.
//!
//! One writer thread owns the active segment. Appenders hand it encoded batches through a channel
//! and wait for their acknowledgement; the writer drains everything queued, writes it with one
//! `write` and, under [`FsyncPolicy::Always`], one `fdatasync` — concurrent appenders share the
//! cost of a sync (group commit).

use crate::codec;
use crate::config::{FsyncPolicy, LogConfig};
use crate::error::{Error, Result};
use crate::quarantine::Quarantine;
use cascade_core::Record;
use parking_lot::{Mutex, RwLock};
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

const MAGIC: &[u8; 8] = b"CASCLOG\0";
const FORMAT_VERSION: u32 = 1;
const HEADER_LEN: u64 = 16;
const FRAME_HEADER_LEN: usize = 8;
/// A frame larger than this is treated as corruption during recovery.
const MAX_FRAME_BYTES: u32 = 1 << 30;
/// The writer stops draining its queue past this many bytes, bounding one write's latency.
const MAX_GROUP_BYTES: usize = 8 << 20;

/// How the log writes and syncs.
#[derive(Debug, Clone)]
pub struct LogOptions {
    pub segment_bytes: u64,
    pub fsync: FsyncPolicy,
    pub fsync_interval: Duration,
}

impl From<&LogConfig> for LogOptions {
    fn from(c: &LogConfig) -> Self {
        LogOptions {
            segment_bytes: c.segment_bytes,
            fsync: c.fsync,
            fsync_interval: Duration::from_millis(c.fsync_interval_ms.max(1)),
        }
    }
}

impl Default for LogOptions {
    fn default() -> Self {
        (&LogConfig::default()).into()
    }
}

/// Records encoded for appending: each is `varint(len) bytes`.
#[derive(Debug, Default)]
pub struct EncodedBatch {
    bytes: Vec<u8>,
    count: u32,
    scratch: Vec<u8>,
}

impl EncodedBatch {
    pub fn push(&mut self, record: &Record) {
        self.scratch.clear();
        codec::encode(record, &mut self.scratch);
        codec::varint(&mut self.bytes, self.scratch.len() as u64);
        self.bytes.extend_from_slice(&self.scratch);
        self.count += 1;
    }

    pub fn len(&self) -> u32 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// A batch of the records whose `keep` flag is set, in order.
    pub fn retain(self, keep: &[bool]) -> EncodedBatch {
        let mut out = EncodedBatch::default();
        for ((bytes, _), _) in framed_records(&self.bytes).zip(keep).filter(|(_, k)| **k) {
            out.bytes.extend_from_slice(bytes);
            out.count += 1;
        }
        out
    }
}

struct Group {
    base: u64,
    count: u32,
    records: Vec<u8>,
    done: tokio::sync::oneshot::Sender<Result<()>>,
}

struct Shared {
    dir: PathBuf,
    /// The next offset to assign. Held while a batch is queued so that queue order is offset order.
    next: Mutex<u64>,
    /// Every offset below this is written (and synced under `Always`); readers stop here.
    committed: AtomicU64,
    /// Base offsets of the segments on disk, ascending; the last one is active.
    segments: RwLock<Vec<u64>>,
    /// Set when a write failed: the log refuses further appends until reopened.
    failed: Mutex<Option<String>>,
    /// Where frames start: frame base offset → (segment base, byte position), recorded by
    /// readers about every [`HINT_EVERY`] bytes. A reader from offset N seeks to the nearest
    /// frame at or before N instead of scanning its segment from the start, so a tail that
    /// polls the log costs what is new, not the segment's size.
    hints: Mutex<std::collections::BTreeMap<u64, (u64, u64)>>,
}

/// Bytes between two recorded frame positions.
const HINT_EVERY: u64 = 256 << 10;

/// An append in flight; resolves once the batch is durable.
#[derive(Debug)]
pub struct Ticket {
    pub base: u64,
    pub count: u32,
    rx: tokio::sync::oneshot::Receiver<Result<()>>,
}

impl Ticket {
    /// Waits for the acknowledgement from async code.
    pub async fn wait(self) -> Result<()> {
        self.rx.await.unwrap_or(Err(Error::Closed))
    }

    /// Waits for the acknowledgement from a plain thread (never from inside an async runtime).
    pub fn wait_blocking(self) -> Result<()> {
        self.rx.blocking_recv().unwrap_or(Err(Error::Closed))
    }
}

/// Sizes and positions, for metrics and `cascade` status output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogStats {
    pub first_offset: u64,
    pub next_offset: u64,
    pub segments: usize,
    pub bytes: u64,
}

/// Called by the writer thread after a frame is written and before it is acknowledged, with the
/// frame's base offset, record count and encoded records (see [`records_of`]). It runs in offset
/// order, so state it maintains is exactly "everything committed".
pub type CommitHook = Box<dyn FnMut(u64, u32, &[u8]) + Send>;

/// Splits a frame's encoded records into one slice per record.
pub fn records_of(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    framed_records(bytes).map(|(_, record)| record)
}

/// Splits `varint(len) record` sequences into (the whole entry with its prefix, the record).
fn framed_records(bytes: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let mut pos = 0;
    std::iter::from_fn(move || {
        if pos >= bytes.len() {
            return None;
        }
        let mut r = codec::Reader { buf: bytes, pos };
        let len = r.varint().ok()? as usize;
        let record = bytes.get(r.pos..r.pos + len)?;
        let entry = &bytes[pos..r.pos + len];
        pos = r.pos + len;
        Some((entry, record))
    })
}

pub struct Log {
    shared: Arc<Shared>,
    tx: Mutex<Option<mpsc::Sender<Group>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log").field("dir", &self.shared.dir).finish_non_exhaustive()
    }
}

fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.seg"))
}

fn list_segments(dir: &Path) -> Result<Vec<u64>> {
    let mut bases = Vec::new();
    for entry in fs::read_dir(dir).map_err(Error::io(dir))? {
        let name = entry.map_err(Error::io(dir))?.file_name();
        let name = name.to_string_lossy();
        if let Some(base) = name.strip_suffix(".seg").and_then(|s| s.parse::<u64>().ok()) {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(Error::io(dir))
}

fn create_segment(dir: &Path, base: u64) -> Result<File> {
    let path = segment_path(dir, base);
    let mut file =
        OpenOptions::new().create(true).truncate(true).read(true).write(true).open(&path).map_err(Error::io(&path))?;
    let mut header = [0u8; HEADER_LEN as usize];
    header[..8].copy_from_slice(MAGIC);
    header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    file.write_all(&header).and_then(|()| file.sync_all()).map_err(Error::io(&path))?;
    sync_dir(dir)?;
    Ok(file)
}

fn check_header(path: &Path, header: &[u8]) -> Result<()> {
    if &header[..8] != MAGIC {
        return Err(Error::corrupt(path, 0, "not a Cascade log segment (bad magic)"));
    }
    let version = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    if version != FORMAT_VERSION {
        return Err(Error::corrupt(
            path,
            0,
            format!("segment format version {version}, this build reads {FORMAT_VERSION}"),
        ));
    }
    Ok(())
}

/// Outcome of reading one frame from a segment.
enum Frame {
    Ok {
        base: u64,
        count: u32,
    },
    /// End of file exactly at a frame boundary.
    End,
    /// A partial or corrupt frame: the reason.
    Bad(String),
}

fn read_frame(r: &mut impl Read, body: &mut Vec<u8>) -> std::io::Result<Frame> {
    let mut head = [0u8; FRAME_HEADER_LEN];
    let mut got = 0;
    while got < head.len() {
        match r.read(&mut head[got..]) {
            Ok(0) if got == 0 => return Ok(Frame::End),
            Ok(0) => return Ok(Frame::Bad("torn frame header".into())),
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes"));
    let crc = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
    if !(12..=MAX_FRAME_BYTES).contains(&len) {
        return Ok(Frame::Bad(format!("implausible frame length {len}")));
    }
    body.clear();
    let read = r.take(u64::from(len)).read_to_end(body)?;
    if read < len as usize {
        return Ok(Frame::Bad("torn frame body".into()));
    }
    if crc32c::crc32c(body) != crc {
        return Ok(Frame::Bad("checksum mismatch".into()));
    }
    let base = u64::from_le_bytes(body[..8].try_into().expect("8 bytes"));
    let count = u32::from_le_bytes(body[8..12].try_into().expect("4 bytes"));
    Ok(Frame::Ok { base, count })
}

/// Finds the end of the valid frames of a segment: (byte position, next offset, file length).
/// Reads only; a torn or corrupt tail simply ends the scan.
fn scan_segment(path: &Path, base: u64) -> Result<(u64, u64, u64)> {
    let file_len = fs::metadata(path).map_err(Error::io(path))?.len();
    if file_len < HEADER_LEN {
        return Ok((0, base, file_len));
    }
    let mut reader = BufReader::with_capacity(1 << 20, File::open(path).map_err(Error::io(path))?);
    let mut header = [0u8; HEADER_LEN as usize];
    reader.read_exact(&mut header).map_err(Error::io(path))?;
    check_header(path, &header)?;
    let (mut pos, mut next) = (HEADER_LEN, base);
    let mut body = Vec::new();
    loop {
        match read_frame(&mut reader, &mut body).map_err(Error::io(path))? {
            Frame::End => break,
            Frame::Ok { base: frame_base, count } if frame_base == next => {
                pos += (FRAME_HEADER_LEN + body.len()) as u64;
                next += u64::from(count);
            }
            Frame::Ok { base: frame_base, .. } => {
                return Err(Error::corrupt(path, pos, format!("frame offset {frame_base}, expected {next}")));
            }
            Frame::Bad(reason) => {
                tracing::debug!(path = %path.display(), position = pos, %reason, "end of valid frames");
                break;
            }
        }
    }
    Ok((pos, next, file_len))
}

/// Scans the active segment, truncating any torn or corrupt tail. Returns (file, next offset).
fn recover_segment(dir: &Path, base: u64) -> Result<(File, u64)> {
    let path = segment_path(dir, base);
    let (pos, next, file_len) = scan_segment(&path, base)?;
    if file_len < HEADER_LEN {
        // Crashed while creating the segment: nothing in it was ever acknowledged.
        tracing::warn!(path = %path.display(), "rewriting a segment with a torn header");
        return Ok((create_segment(dir, base)?, base));
    }
    let mut file = OpenOptions::new().read(true).write(true).open(&path).map_err(Error::io(&path))?;
    if pos < file_len {
        tracing::warn!(path = %path.display(), position = pos, dropped_bytes = file_len - pos,
            "truncating the unacknowledged tail of the log");
        file.set_len(pos).and_then(|()| file.sync_all()).map_err(Error::io(&path))?;
    }
    file.seek(SeekFrom::Start(pos)).map_err(Error::io(&path))?;
    Ok((file, next))
}

impl Log {
    /// Opens (or creates) the log in `dir`, recovering from any crash.
    pub fn open(dir: impl Into<PathBuf>, options: LogOptions) -> Result<Log> {
        Self::open_with_hook(dir, options, None)
    }

    /// Opens the log with a hook that sees every committed frame (see [`CommitHook`]).
    pub fn open_with_hook(dir: impl Into<PathBuf>, options: LogOptions, on_commit: Option<CommitHook>) -> Result<Log> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
        let mut segments = list_segments(&dir)?;
        if segments.is_empty() {
            create_segment(&dir, 0)?;
            segments.push(0);
        }
        let active = *segments.last().expect("at least one segment");
        let (file, next) = recover_segment(&dir, active)?;
        let size = file.metadata().map_err(Error::io(&dir))?.len();
        let shared = Arc::new(Shared {
            dir,
            next: Mutex::new(next),
            committed: AtomicU64::new(next),
            segments: RwLock::new(segments),
            failed: Mutex::new(None),
            hints: Mutex::default(),
        });
        let (tx, rx) = mpsc::channel();
        let writer = Writer { shared: shared.clone(), options, file, base: active, size, on_commit };
        let handle = std::thread::Builder::new()
            .name("cascade-log-writer".into())
            .spawn(move || writer.run(&rx))
            .map_err(Error::io(&shared.dir))?;
        Ok(Log { shared, tx: Mutex::new(Some(tx)), writer: Mutex::new(Some(handle)) })
    }

    /// Opens the log for reading only, as it stands now: no writer, no recovery, no lock, so it
    /// can run beside the process that owns the log. Records appended later are not seen; an
    /// unfinished tail frame (a write in flight) ends the log. Appends fail with [`Error::Closed`].
    pub fn open_read_only(dir: impl Into<PathBuf>) -> Result<Log> {
        let dir = dir.into();
        let segments = list_segments(&dir)?;
        let Some(&active) = segments.last() else {
            return Err(Error::Io { path: dir, source: ErrorKind::NotFound.into() });
        };
        let (_, next, _) = scan_segment(&segment_path(&dir, active), active)?;
        let shared = Arc::new(Shared {
            dir,
            next: Mutex::new(next),
            committed: AtomicU64::new(next),
            segments: RwLock::new(segments),
            failed: Mutex::new(None),
            hints: Mutex::default(),
        });
        Ok(Log { shared, tx: Mutex::new(None), writer: Mutex::new(None) })
    }

    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Queues a batch; its records get offsets `ticket.base ..ticket.base + count`, in queue order.
    pub fn enqueue(&self, batch: EncodedBatch) -> Result<Ticket> {
        if let Some(reason) = self.shared.failed.lock().clone() {
            return Err(Error::Failed(reason));
        }
        let (done, rx) = tokio::sync::oneshot::channel();
        let mut next = self.shared.next.lock();
        let tx = self.tx.lock();
        let tx = tx.as_ref().ok_or(Error::Closed)?;
        let base = *next;
        let count = batch.count;
        tx.send(Group { base, count, records: batch.bytes, done }).map_err(|_| Error::Closed)?;
        *next += u64::from(count);
        Ok(Ticket { base, count, rx })
    }

    /// Encodes, appends and waits. Convenience for tools and tests.
    pub fn append_blocking(&self, records: &[Record]) -> Result<u64> {
        let mut batch = EncodedBatch::default();
        records.iter().for_each(|r| batch.push(r));
        let ticket = self.enqueue(batch)?;
        let base = ticket.base;
        ticket.wait_blocking()?;
        Ok(base)
    }

    /// The offset the next enqueued record will get.
    pub fn next_offset(&self) -> u64 {
        *self.shared.next.lock()
    }

    /// The offset after the last acknowledged record.
    pub fn committed(&self) -> u64 {
        self.shared.committed.load(Ordering::Acquire)
    }

    /// The offset of the oldest retained record.
    pub fn first_offset(&self) -> u64 {
        self.shared.segments.read()[0]
    }

    /// `None` while healthy; the reason after a write failed.
    pub fn failure(&self) -> Option<String> {
        self.shared.failed.lock().clone()
    }

    /// Reads acknowledged records from `offset` up to the end as of now.
    pub fn read_from(&self, offset: u64) -> LogReader {
        LogReader {
            shared: self.shared.clone(),
            next: offset,
            end: self.committed(),
            file: None,
            body: Vec::new(),
            body_pos: 0,
            body_offset: 0,
            body_end: 0,
            pos: 0,
            hinted: 0,
            hide: None,
        }
    }

    pub fn stats(&self) -> Result<LogStats> {
        let segments = self.shared.segments.read().clone();
        let mut bytes = 0;
        for &base in &segments {
            let path = segment_path(&self.shared.dir, base);
            bytes += fs::metadata(&path).map_err(Error::io(&path))?.len();
        }
        Ok(LogStats { first_offset: segments[0], next_offset: self.committed(), segments: segments.len(), bytes })
    }

    /// Deletes closed segments, oldest first, that end at or below `floor` and are older than
    /// `max_age` (if non-zero) or while the log exceeds `max_bytes` (if non-zero).
    /// Returns how many segments were deleted.
    pub fn apply_retention(&self, floor: u64, max_age: Duration, max_bytes: u64) -> Result<usize> {
        if max_age.is_zero() && max_bytes == 0 {
            return Ok(0);
        }
        let mut segments = self.shared.segments.write();
        let mut sizes = Vec::with_capacity(segments.len());
        for &base in segments.iter() {
            let path = segment_path(&self.shared.dir, base);
            let meta = fs::metadata(&path).map_err(Error::io(&path))?;
            sizes.push((meta.len(), meta.modified().unwrap_or(SystemTime::UNIX_EPOCH)));
        }
        let mut total: u64 = sizes.iter().map(|(len, _)| len).sum();
        let now = SystemTime::now();
        let mut deleted = 0;
        while deleted + 1 < segments.len() {
            let end = segments[deleted + 1];
            let (len, modified) = sizes[deleted];
            let expired = !max_age.is_zero() && now.duration_since(modified).unwrap_or_default() > max_age;
            let oversize = max_bytes > 0 && total > max_bytes;
            if end > floor || !(expired || oversize) {
                break;
            }
            let path = segment_path(&self.shared.dir, segments[deleted]);
            fs::remove_file(&path).map_err(Error::io(&path))?;
            total -= len;
            deleted += 1;
        }
        if deleted > 0 {
            segments.drain(..deleted);
            sync_dir(&self.shared.dir)?;
            tracing::info!(deleted, first_offset = segments[0], "log retention deleted segments");
        }
        Ok(deleted)
    }

    /// Stops accepting appends, writes and syncs everything queued, and joins the writer.
    pub fn close(&self) -> Result<()> {
        self.tx.lock().take();
        if let Some(handle) = self.writer.lock().take() {
            handle.join().map_err(|_| Error::Failed("log writer panicked".into()))?;
        }
        match self.failure() {
            Some(reason) => Err(Error::Failed(reason)),
            None => Ok(()),
        }
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

struct Writer {
    shared: Arc<Shared>,
    options: LogOptions,
    file: File,
    base: u64,
    size: u64,
    on_commit: Option<CommitHook>,
}

impl Writer {
    fn run(mut self, rx: &mpsc::Receiver<Group>) {
        let mut groups: Vec<Group> = Vec::new();
        let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
        let mut unsynced = false;
        let mut last_sync = Instant::now();
        loop {
            let first = match self.options.fsync {
                FsyncPolicy::Always => rx.recv().ok(),
                FsyncPolicy::Interval => {
                    let wait = self.options.fsync_interval.saturating_sub(last_sync.elapsed());
                    match rx.recv_timeout(wait) {
                        Ok(g) => Some(g),
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            if unsynced {
                                self.sync_or_fail();
                                unsynced = false;
                            }
                            last_sync = Instant::now();
                            continue;
                        }
                        Err(mpsc::RecvTimeoutError::Disconnected) => None,
                    }
                }
            };
            let Some(first) = first else { break };
            let mut bytes = first.records.len();
            groups.push(first);
            while bytes < MAX_GROUP_BYTES {
                match rx.try_recv() {
                    Ok(g) => {
                        bytes += g.records.len();
                        groups.push(g);
                    }
                    Err(_) => break,
                }
            }
            let failed = self.shared.failed.lock().clone();
            if let Some(reason) = failed {
                for g in groups.drain(..) {
                    let _ = g.done.send(Err(Error::Failed(reason.clone())));
                }
                continue;
            }
            buf.clear();
            for g in &groups {
                let start = buf.len();
                buf.extend_from_slice(&[0u8; FRAME_HEADER_LEN]);
                buf.extend_from_slice(&g.base.to_le_bytes());
                buf.extend_from_slice(&g.count.to_le_bytes());
                buf.extend_from_slice(&g.records);
                let body = &buf[start + FRAME_HEADER_LEN..];
                let (len, crc) = (body.len() as u32, crc32c::crc32c(body));
                buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
                buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
            }
            let started = Instant::now();
            let mut result = self.file.write_all(&buf);
            if result.is_ok() {
                match self.options.fsync {
                    FsyncPolicy::Always => {
                        let t = Instant::now();
                        result = self.file.sync_data();
                        metrics::histogram!("cascade_log_fsync_duration_seconds").record(t.elapsed().as_secs_f64());
                    }
                    FsyncPolicy::Interval if last_sync.elapsed() >= self.options.fsync_interval => {
                        result = self.file.sync_data();
                        last_sync = Instant::now();
                        unsynced = false;
                    }
                    FsyncPolicy::Interval => unsynced = true,
                }
            }
            let last = groups.last().expect("non-empty");
            let end = last.base + u64::from(last.count);
            match result {
                Ok(()) => {
                    self.size += buf.len() as u64;
                    if let Some(hook) = self.on_commit.as_mut() {
                        for g in &groups {
                            hook(g.base, g.count, &g.records);
                        }
                    }
                    self.shared.committed.store(end, Ordering::Release);
                    metrics::histogram!("cascade_log_write_duration_seconds").record(started.elapsed().as_secs_f64());
                    metrics::counter!("cascade_log_records_total").increment(end - groups[0].base);
                    metrics::counter!("cascade_log_written_bytes_total").increment(buf.len() as u64);
                    metrics::gauge!("cascade_log_next_offset").set(end as f64);
                    for g in groups.drain(..) {
                        let _ = g.done.send(Ok(()));
                    }
                    if self.size >= self.options.segment_bytes
                        && let Err(e) = self.rotate(end)
                    {
                        self.fail(&e.to_string());
                    }
                }
                Err(e) => {
                    let reason =
                        format!("write to {} failed: {e}", segment_path(&self.shared.dir, self.base).display());
                    self.fail(&reason);
                    for g in groups.drain(..) {
                        let _ = g.done.send(Err(Error::Failed(reason.clone())));
                    }
                }
            }
        }
        if unsynced {
            self.sync_or_fail();
        }
    }

    fn sync_or_fail(&mut self) {
        if let Err(e) = self.file.sync_data() {
            self.fail(&format!("fsync failed: {e}"));
        }
    }

    fn fail(&self, reason: &str) {
        tracing::error!(reason, "event log failed; refusing appends until restart");
        *self.shared.failed.lock() = Some(reason.to_string());
    }

    fn rotate(&mut self, next: u64) -> Result<()> {
        let dir = self.shared.dir.clone();
        self.file.sync_all().map_err(Error::io(&dir))?;
        self.file = create_segment(&dir, next)?;
        self.base = next;
        self.size = HEADER_LEN;
        self.shared.segments.write().push(next);
        metrics::counter!("cascade_log_segments_rotated_total").increment(1);
        Ok(())
    }
}

/// Iterates acknowledged records in offset order from a starting offset.
pub struct LogReader {
    shared: Arc<Shared>,
    next: u64,
    end: u64,
    file: Option<(BufReader<File>, PathBuf)>,
    body: Vec<u8>,
    body_pos: usize,
    /// Offset of the record at `body_pos`.
    body_offset: u64,
    /// Offset after the current frame.
    body_end: u64,
    /// Byte position of the next frame in the open segment.
    pos: u64,
    /// Byte position of the last hint this reader recorded (or used).
    hinted: u64,
    /// Records this quarantine hides are skipped (their offsets are passed over).
    hide: Option<Arc<Quarantine>>,
}

impl std::fmt::Debug for LogReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogReader").field("next", &self.next).field("end", &self.end).finish_non_exhaustive()
    }
}

impl LogReader {
    /// This reader, skipping the records `quarantine` hides. [`LogReader::position`] still
    /// moves past them, so a consumer that stops at a skipped record resumes after it.
    pub fn hiding(mut self, quarantine: Arc<Quarantine>) -> LogReader {
        self.hide = (!quarantine.is_empty()).then_some(quarantine);
        self
    }

    /// The offset the next record will have.
    pub fn position(&self) -> u64 {
        self.next
    }

    /// Opens the segment holding `self.next` and positions at its first frame.
    fn open_segment(&mut self) -> Result<()> {
        let base = {
            let segments = self.shared.segments.read();
            match segments.partition_point(|&b| b <= self.next) {
                0 => return Err(Error::OffsetNotRetained { offset: self.next, first: segments[0] }),
                i => segments[i - 1],
            }
        };
        let path = segment_path(&self.shared.dir, base);
        let file = File::open(&path).map_err(|e| match e.kind() {
            ErrorKind::NotFound => Error::OffsetNotRetained { offset: self.next, first: base + 1 },
            _ => Error::Io { path: path.clone(), source: e },
        })?;
        let mut reader = BufReader::with_capacity(256 << 10, file);
        let mut header = [0u8; HEADER_LEN as usize];
        reader.read_exact(&mut header).map_err(Error::io(&path))?;
        check_header(&path, &header)?;
        let (mut start, mut pos) = (base, HEADER_LEN);
        let hint = self.shared.hints.lock().range(base..=self.next).next_back().map(|(&o, &h)| (o, h));
        if let Some((offset, (segment, at))) = hint
            && segment == base
        {
            reader.seek(SeekFrom::Start(at)).map_err(Error::io(&path))?;
            (start, pos) = (offset, at);
        }
        self.body_offset = start;
        self.body_end = start;
        self.body_pos = 0;
        self.pos = pos;
        self.hinted = pos;
        self.body.clear();
        self.file = Some((reader, path));
        Ok(())
    }

    /// Records that a frame with base offset `base` starts at byte `at` of the open segment.
    fn hint(&mut self, base: u64, at: u64) {
        if at < self.hinted + HINT_EVERY {
            return;
        }
        self.hinted = at;
        let segments = self.shared.segments.read();
        let Some(&segment) = segments.get(segments.partition_point(|&b| b <= base).wrapping_sub(1)) else { return };
        let first = segments[0];
        drop(segments);
        let mut hints = self.shared.hints.lock();
        hints.insert(base, (segment, at));
        // Segments deleted by retention leave their hints behind; drop them now and then.
        if hints.len().is_multiple_of(1024) {
            hints.retain(|_, (s, _)| *s >= first);
        }
    }

    fn next_record(&mut self) -> Result<Option<(u64, Record)>> {
        loop {
            if self.next >= self.end {
                return Ok(None);
            }
            if self.body_offset < self.body_end {
                let mut r = codec::Reader { buf: &self.body, pos: self.body_pos };
                let len = r.varint().map_err(|e| self.corrupt(e))? as usize;
                let start = r.pos;
                let stop = start
                    .checked_add(len)
                    .filter(|&s| s <= self.body.len())
                    .ok_or_else(|| self.corrupt("record overruns its frame"))?;
                self.body_pos = stop;
                let offset = self.body_offset;
                self.body_offset += 1;
                if offset < self.next {
                    continue;
                }
                let record = codec::decode(&self.body[start..stop]).map_err(|e| self.corrupt(e))?;
                self.next = offset + 1;
                if self.hide.as_ref().is_some_and(|q| q.hides(offset, &record)) {
                    continue;
                }
                return Ok(Some((offset, record)));
            }
            if self.file.is_none() {
                self.open_segment()?;
            }
            let (reader, path) = self.file.as_mut().expect("opened");
            let at = self.pos;
            let mut framed = None;
            match read_frame(reader, &mut self.body).map_err(Error::io(path.as_path()))? {
                Frame::Ok { base, count } => {
                    self.pos = at + FRAME_HEADER_LEN as u64 + self.body.len() as u64;
                    framed = Some(base);
                    if base != self.body_end {
                        return Err(Error::corrupt(
                            path,
                            0,
                            format!("frame offset {base}, expected {}", self.body_end),
                        ));
                    }
                    self.body_end = base + u64::from(count);
                    // A frame wholly before the start position is skipped without decoding.
                    self.body_offset = if self.body_end <= self.next { self.body_end } else { base };
                    self.body_pos = 12;
                }
                // The end of a closed segment: continue in the next one.
                Frame::End => {
                    if self.body_end < self.next {
                        return Err(Error::corrupt(
                            path,
                            0,
                            format!("segment ends at offset {} before {}", self.body_end, self.next),
                        ));
                    }
                    self.file = None;
                    if self.body_end >= self.end {
                        return Ok(None);
                    }
                }
                Frame::Bad(reason) => return Err(Error::corrupt(path, 0, reason)),
            }
            if let Some(base) = framed {
                self.hint(base, at);
            }
        }
    }

    fn corrupt(&self, reason: impl Into<String>) -> Error {
        let path = self.file.as_ref().map(|(_, p)| p.clone()).unwrap_or_default();
        Error::corrupt(&path, 0, format!("at offset {}: {}", self.body_offset, reason.into()))
    }
}

impl Iterator for LogReader {
    type Item = Result<(u64, Record)>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_record().transpose()
    }
}
