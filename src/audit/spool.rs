//! A sink's spool: records that could not be delivered, in order, in append-only segment files
//! (`seg-<n>.jsonl`) under the spool directory, each batch fsync'd before it counts as stored.
//! A `cursor` file remembers how far delivery got, so a restarted sentinel resumes there
//! (at worst one batch is delivered twice; record ids make that harmless where the sink can
//! tell). Blocking I/O: callers run it off the async threads.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::record::Line;

/// A segment is closed past this size and a new one started.
const SEGMENT_BYTES: u64 = 8 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool full ({0} bytes)")]
    Full(u64),
    #[error("spool I/O: {0}")]
    Io(#[from] io::Error),
}

pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    /// Segment numbers on disk, oldest first.
    segments: VecDeque<u64>,
    /// Read position in the oldest segment.
    offset: u64,
    /// The segment being appended to, and its length.
    writer: Option<(u64, File, u64)>,
    bytes: u64,
    records: u64,
    /// The number of the next segment: never reused, so the cursor never points back.
    next: u64,
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("seg-{n:012}.jsonl"))
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, finding what an earlier run left undelivered.
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let mut segments: Vec<u64> = fs::read_dir(dir)?
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                name.strip_prefix("seg-")?
                    .strip_suffix(".jsonl")?
                    .parse()
                    .ok()
            })
            .collect();
        segments.sort_unstable();
        let (cur_seg, mut offset) = fs::read_to_string(dir.join("cursor"))
            .ok()
            .and_then(|t| {
                let (a, b) = t.trim().split_once(' ')?;
                Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?))
            })
            .unwrap_or((0, 0));
        // Segments before the cursor's were delivered.
        for n in segments.iter().filter(|n| **n < cur_seg) {
            let _ = fs::remove_file(segment_path(dir, *n));
        }
        segments.retain(|n| *n >= cur_seg);
        if segments.first() != Some(&cur_seg) {
            offset = 0;
        }
        let next = segments.last().map_or(1, |n| n + 1).max(cur_seg).max(1);
        let mut spool = Self {
            next,
            dir: dir.to_path_buf(),
            max_bytes,
            segments: segments.into(),
            offset,
            writer: None,
            bytes: 0,
            records: 0,
        };
        for (i, n) in spool.segments.iter().enumerate() {
            let path = segment_path(dir, *n);
            let mut data = Vec::new();
            File::open(&path)?.read_to_end(&mut data)?;
            // A batch cut short by a crash: its records were never acknowledged as stored.
            let whole = data.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
            if whole < data.len() {
                OpenOptions::new()
                    .write(true)
                    .open(&path)?
                    .set_len(whole as u64)?;
            }
            let from = if i == 0 {
                (spool.offset as usize).min(whole)
            } else {
                0
            };
            spool.bytes += (whole - from) as u64;
            spool.records += data[from..whole].iter().filter(|b| **b == b'\n').count() as u64;
        }
        Ok(spool)
    }

    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn records(&self) -> u64 {
        self.records
    }

    /// Room for `n` more bytes.
    pub fn has_room(&self, n: u64) -> bool {
        self.bytes + n <= self.max_bytes
    }

    /// Appends a batch and fsyncs it; all or nothing.
    pub fn append(&mut self, lines: &[Line]) -> Result<(), SpoolError> {
        let mut buf = Vec::with_capacity(lines.iter().map(|l| l.text.len() + 1).sum());
        for l in lines {
            buf.extend_from_slice(l.text.as_bytes());
            buf.push(b'\n');
        }
        let n = buf.len() as u64;
        if !self.has_room(n) {
            return Err(SpoolError::Full(self.max_bytes));
        }
        if self.writer.as_ref().is_none_or(|w| w.2 >= SEGMENT_BYTES) {
            let next = self.next;
            self.next += 1;
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(segment_path(&self.dir, next))?;
            // The new file's name must survive a crash too.
            File::open(&self.dir)?.sync_all()?;
            self.segments.push_back(next);
            self.writer = Some((next, file, 0));
        }
        let Some((_, file, len)) = &mut self.writer else {
            unreachable!("a writer was just opened")
        };
        let before = *len;
        let written = file.write_all(&buf).and_then(|()| file.sync_data());
        if let Err(e) = written {
            // Leave no partial batch behind to be delivered later.
            let _ = file.set_len(before);
            return Err(e.into());
        }
        *len += n;
        self.bytes += n;
        self.records += lines.len() as u64;
        Ok(())
    }

    /// Up to `max` of the oldest records, without removing them; with the bytes and lines they
    /// take (unreadable lines are skipped but counted, so `advance` moves past them).
    pub fn peek(&mut self, max: usize) -> io::Result<(Vec<Line>, u64, u64)> {
        let mut out = Vec::new();
        let mut used = 0u64;
        let mut lines = 0u64;
        let Some(&first) = self.segments.front() else {
            // Nothing on disk: whatever the counters say, the spool is empty.
            self.bytes = 0;
            self.records = 0;
            return Ok((out, 0, 0));
        };
        let mut file = File::open(segment_path(&self.dir, first))?;
        file.seek(SeekFrom::Start(self.offset))?;
        let mut reader = BufReader::new(file);
        let mut text = String::new();
        while out.len() < max {
            text.clear();
            let n = reader.read_line(&mut text)?;
            if n == 0 || !text.ends_with('\n') {
                break;
            }
            used += n as u64;
            lines += 1;
            match Line::parse(text.trim_end()) {
                Some(l) => out.push(l),
                // Not a record (a damaged file): skipped, counted as consumed.
                None => {
                    tracing::warn!(spool = %self.dir.display(), "unreadable spooled line skipped")
                }
            }
        }
        if used == 0 {
            // Nothing left in this segment: move past it.
            self.advance(0, 0)?;
        }
        Ok((out, used, lines))
    }

    /// Forgets the records `peek` returned: they were delivered.
    pub fn advance(&mut self, records: u64, bytes: u64) -> io::Result<()> {
        self.offset += bytes;
        self.bytes = self.bytes.saturating_sub(bytes);
        self.records = self.records.saturating_sub(records);
        let Some(&first) = self.segments.front() else {
            return Ok(());
        };
        let path = segment_path(&self.dir, first);
        let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let writing = self.writer.as_ref().is_some_and(|w| w.0 == first);
        if self.offset >= size && (!writing || self.records == 0) {
            if writing {
                self.writer = None;
            }
            fs::remove_file(&path)?;
            self.segments.pop_front();
            self.offset = 0;
        }
        let cursor = match self.segments.front() {
            Some(n) => format!("{n} {}\n", self.offset),
            None => format!("{} 0\n", self.next),
        };
        let tmp = self.dir.join("cursor.tmp");
        fs::write(&tmp, cursor)?;
        fs::rename(tmp, self.dir.join("cursor"))
    }

    /// Unix ms of the oldest record, when any.
    pub fn oldest_ms(&mut self) -> Option<u64> {
        if self.is_empty() {
            return None;
        }
        self.peek(1).ok()?.0.first().map(|l| l.at_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::Draft;
    use crate::audit::seal::ChainHead;

    fn lines(head: &mut ChainHead, n: usize) -> Vec<Line> {
        (0..n).map(|_| head.seal(&Draft::default())).collect()
    }

    #[test]
    fn order_survives_reopen_and_partial_batches() {
        let dir = std::env::temp_dir().join(format!("spool-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let mut head = ChainHead::new("t");
        let mut s = Spool::open(&dir, 1 << 20).unwrap();
        s.append(&lines(&mut head, 3)).unwrap();
        s.append(&lines(&mut head, 2)).unwrap();
        assert_eq!(s.records(), 5);
        let (got, bytes, n) = s.peek(2).unwrap();
        assert_eq!(got.iter().map(|l| l.seq).collect::<Vec<_>>(), [1, 2]);
        s.advance(n, bytes).unwrap();
        drop(s);
        // A crash mid-append leaves half a line: it is cut off at reopen.
        let seg = segment_path(&dir, 1);
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(b"{\"v\":1,\"inst").unwrap();
        let mut s = Spool::open(&dir, 1 << 20).unwrap();
        assert_eq!(s.records(), 3);
        let (got, bytes, n) = s.peek(10).unwrap();
        assert_eq!(got.iter().map(|l| l.seq).collect::<Vec<_>>(), [3, 4, 5]);
        s.advance(n, bytes).unwrap();
        assert!(s.is_empty());
        assert_eq!(s.bytes(), 0);
        s.append(&lines(&mut head, 1)).unwrap();
        let (got, _, _) = s.peek(10).unwrap();
        assert_eq!(got[0].seq, 6);
        // A damaged line is skipped, and counted as consumed.
        drop(s);
        let seg = segment_path(&dir, 2);
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(b"garbage\n").unwrap();
        let mut s = Spool::open(&dir, 1 << 20).unwrap();
        assert_eq!(s.records(), 2);
        let (got, bytes, n) = s.peek(10).unwrap();
        assert_eq!((got.len(), n), (1, 2));
        s.advance(n, bytes).unwrap();
        assert!(s.is_empty());
        // Full: refused whole.
        let mut small = Spool::open(&dir.join("small"), 10).unwrap();
        assert!(matches!(
            small.append(&lines(&mut head, 1)),
            Err(SpoolError::Full(10))
        ));
        assert!(small.is_empty());
        let _ = fs::remove_dir_all(&dir);
    }
}
