//! Where records go: stdout and files (JSON lines), Redis Streams and PostgreSQL. A sink only
//! delivers a batch or says it could not; retries, spooling and ordering are the worker's.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::record::{Cols, Line};
use crate::config::audit::SinkKind;

/// Why a sink could not take a batch (or be set up); the worker logs it and retries or spools.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{}: {source}", .path.display())]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("rotating: {0}")]
    Rotate(std::io::Error),
    #[error("file sink busy")]
    Busy,
    #[error("{0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("{0}")]
    Redis(#[from] redis::RedisError),
    #[error("{0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// What timed out, e.g. `connect timed out`.
    #[error("{0}")]
    TimedOut(&'static str),
}

/// The records as JSON lines, appended to `buf`.
fn lines_into(buf: &mut Vec<u8>, batch: &[Line]) {
    buf.reserve(batch.iter().map(|l| l.text.len() + 1).sum());
    for l in batch {
        buf.extend_from_slice(l.text.as_bytes());
        buf.push(b'\n');
    }
}

/// What a batch buffer may keep between batches; a larger one (huge records) is let go.
const KEPT_BUFFER: usize = 1024 * 1024;

/// stdout or stderr: each batch written as JSON lines, in one write, from a buffer the sink
/// keeps, on a blocking thread (a slow reader must not stall the audit thread). Until the
/// write returns, the batch is not delivered.
pub struct StdSink {
    stderr: bool,
    buf: Vec<u8>,
}

impl StdSink {
    async fn deliver(&mut self, batch: &[Line]) -> Result<(), SinkError> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        lines_into(&mut buf, batch);
        let stderr = self.stderr;
        let (mut buf, r) = tokio::task::spawn_blocking(move || {
            let r = if stderr {
                write_flushed(&mut std::io::stderr().lock(), &buf)
            } else {
                write_flushed(&mut std::io::stdout().lock(), &buf)
            };
            (buf, r)
        })
        .await?;
        if buf.capacity() <= KEPT_BUFFER {
            buf.clear();
            self.buf = buf;
        }
        Ok(r?)
    }
}

fn write_flushed(out: &mut impl Write, buf: &[u8]) -> std::io::Result<()> {
    out.write_all(buf)?;
    out.flush()
}

pub enum Sink {
    Std(StdSink),
    File(Option<FileSink>),
    Redis(RedisSink),
    Postgres(PgSink),
}

impl Sink {
    pub fn new(kind: &SinkKind) -> Result<Self, SinkError> {
        Ok(match kind {
            SinkKind::Stdout | SinkKind::Stderr => Sink::Std(StdSink {
                stderr: matches!(kind, SinkKind::Stderr),
                buf: Vec::new(),
            }),
            SinkKind::File {
                path,
                max_bytes,
                max_files,
            } => Sink::File(Some(FileSink {
                path: path.clone(),
                max_bytes: *max_bytes,
                max_files: *max_files,
                file: None,
                len: 0,
            })),
            SinkKind::Redis {
                url,
                stream,
                max_len,
                timeout,
            } => Sink::Redis(RedisSink {
                client: redis::Client::open(url.as_str())?,
                conn: None,
                stream: stream.clone(),
                seen: format!("{stream}:delivered"),
                max_len: *max_len,
                timeout: *timeout,
                script: redis::Script::new(XADD_ONCE),
            }),
            SinkKind::Postgres {
                url,
                table,
                timeout,
            } => Sink::Postgres(PgSink {
                url: url.clone(),
                table: table.clone(),
                timeout: *timeout,
                client: None,
            }),
        })
    }

    /// Connects ahead of the first delivery (network sinks), creating the table.
    pub async fn connect(&mut self) -> Result<(), SinkError> {
        match self {
            Sink::Redis(r) => r.connection().await.map(drop),
            Sink::Postgres(p) => p.connection().await.map(drop),
            _ => Ok(()),
        }
    }

    pub async fn deliver(&mut self, batch: &[Line]) -> Result<(), SinkError> {
        match self {
            Sink::Std(out) => out.deliver(batch).await,
            Sink::File(slot) => {
                let Some(mut f) = slot.take() else {
                    return Err(SinkError::Busy);
                };
                let batch = batch.to_vec();
                let (f, r) = tokio::task::spawn_blocking(move || {
                    let r = f.write(&batch);
                    (f, r)
                })
                .await?;
                *slot = Some(f);
                r
            }
            Sink::Redis(r) => r.deliver(batch).await,
            Sink::Postgres(p) => p.deliver(batch).await,
        }
    }
}

/// JSON lines appended to a file, fsync'd per batch, rotated by size.
pub struct FileSink {
    path: PathBuf,
    max_bytes: u64,
    max_files: u32,
    file: Option<std::fs::File>,
    len: u64,
}

impl FileSink {
    fn write(&mut self, batch: &[Line]) -> Result<(), SinkError> {
        let mut buf = Vec::new();
        lines_into(&mut buf, batch);
        if self.file.is_some() && self.len > 0 && self.len + buf.len() as u64 > self.max_bytes {
            self.rotate().map_err(SinkError::Rotate)?;
        }
        if self.file.is_none() {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .map_err(|source| SinkError::Open {
                    path: self.path.clone(),
                    source,
                })?;
            self.len = f.metadata().map(|m| m.len()).unwrap_or(0);
            self.file = Some(f);
        }
        let Some(f) = &mut self.file else {
            unreachable!("opened above")
        };
        let r = f.write_all(&buf).and_then(|()| f.sync_data());
        if let Err(e) = r {
            self.file = None;
            return Err(e.into());
        }
        self.len += buf.len() as u64;
        Ok(())
    }

    /// `path.<n-1>` → `path.<n>` … `path` → `path.1`; the oldest falls off.
    fn rotate(&mut self) -> std::io::Result<()> {
        self.file = None;
        let name = |i: u32| {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{i}"));
            PathBuf::from(p)
        };
        for i in (1..self.max_files).rev() {
            if name(i).exists() {
                std::fs::rename(name(i), name(i + 1))?;
            }
        }
        std::fs::rename(&self.path, name(1))?;
        self.len = 0;
        Ok(())
    }
}

/// Appends each record to the stream once: a hash `<stream>:delivered` keeps, per chain
/// (instance), the highest sequence number already added, and the script skips anything at or
/// below it — so a batch retried after a lost reply, or redelivered from the spool after a
/// restart, is never added twice. Atomic: a Lua script runs alone.
const XADD_ONCE: &str = r"
local added = 0
for i = 2, #ARGV, 3 do
  local last = tonumber(redis.call('HGET', KEYS[2], ARGV[i]) or '0')
  if tonumber(ARGV[i + 1]) > last then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'record', ARGV[i + 2])
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
    added = added + 1
  end
end
return added
";

pub struct RedisSink {
    client: redis::Client,
    conn: Option<redis::aio::MultiplexedConnection>,
    stream: String,
    seen: String,
    max_len: u64,
    timeout: Duration,
    script: redis::Script,
}

impl RedisSink {
    async fn connection(&mut self) -> Result<redis::aio::MultiplexedConnection, SinkError> {
        if let Some(c) = &self.conn {
            return Ok(c.clone());
        }
        let c = tokio::time::timeout(self.timeout, self.client.get_multiplexed_async_connection())
            .await
            .map_err(|_| SinkError::TimedOut("connect timed out"))??;
        self.conn = Some(c.clone());
        Ok(c)
    }

    async fn deliver(&mut self, batch: &[Line]) -> Result<(), SinkError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut conn = self.connection().await?;
        let mut inv = self.script.prepare_invoke();
        inv.key(&self.stream).key(&self.seen).arg(self.max_len);
        for l in batch {
            inv.arg(&*l.instance).arg(l.seq).arg(&*l.text);
        }
        let r = tokio::time::timeout(self.timeout, inv.invoke_async::<i64>(&mut conn)).await;
        match r {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => {
                self.conn = None;
                Err(e.into())
            }
            Err(_) => {
                self.conn = None;
                Err(SinkError::TimedOut("timed out"))
            }
        }
    }
}

pub struct PgSink {
    url: String,
    table: String,
    timeout: Duration,
    /// The connection and its prepared insert: each batch is one round trip, planned once.
    client: Option<(tokio_postgres::Client, tokio_postgres::Statement)>,
}

impl PgSink {
    async fn connection(
        &mut self,
    ) -> Result<&(tokio_postgres::Client, tokio_postgres::Statement), SinkError> {
        if self.client.as_ref().is_some_and(|(c, _)| c.is_closed()) {
            self.client = None;
        }
        if self.client.is_none() {
            let (client, conn) = tokio::time::timeout(
                self.timeout,
                tokio_postgres::connect(&self.url, tokio_postgres::NoTls),
            )
            .await
            .map_err(|_| SinkError::TimedOut("connect timed out"))??;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "audit PostgreSQL connection ended");
                }
            });
            let t = &self.table;
            // `n` keeps arrival order; `id` makes a redelivered record a no-op.
            let ddl = format!(
                "CREATE TABLE IF NOT EXISTS {t} (
                    n BIGSERIAL,
                    id TEXT PRIMARY KEY,
                    instance TEXT NOT NULL,
                    seq BIGINT NOT NULL,
                    ts TIMESTAMPTZ NOT NULL,
                    subject TEXT,
                    method TEXT,
                    target TEXT,
                    outcome TEXT NOT NULL,
                    status INT NOT NULL,
                    line TEXT NOT NULL);
                 CREATE INDEX IF NOT EXISTS {t}_ts ON {t} (ts);
                 CREATE INDEX IF NOT EXISTS {t}_subject_ts ON {t} (subject, ts);
                 CREATE INDEX IF NOT EXISTS {t}_chain ON {t} (instance, seq);"
            );
            tokio::time::timeout(self.timeout, client.batch_execute(&ddl))
                .await
                .map_err(|_| SinkError::TimedOut("creating the table timed out"))??;
            // Columns as arrays, one statement per batch; the server never parses the JSON.
            let insert = format!(
                "INSERT INTO {t} (id, instance, seq, ts, subject, method, target, outcome, status, line)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::timestamptz[],
                                      $5::text[], $6::text[], $7::text[], $8::text[], $9::int4[], $10::text[])
                 ON CONFLICT (id) DO NOTHING"
            );
            let insert = tokio::time::timeout(self.timeout, client.prepare(&insert))
                .await
                .map_err(|_| SinkError::TimedOut("preparing the insert timed out"))??;
            self.client = Some((client, insert));
        }
        Ok(self.client.as_ref().expect("connected above"))
    }

    async fn deliver(&mut self, batch: &[Line]) -> Result<(), SinkError> {
        let timeout = self.timeout;
        // Made when sealing; a line without them (never, while this sink is configured) is
        // read for them, and one that cannot be read is skipped rather than stored wrongly.
        let cols: Vec<Option<Arc<Cols>>> = batch.iter().map(Line::cols).collect();
        if cols.iter().any(Option::is_none) {
            tracing::error!("audit records without their columns: not sent to PostgreSQL");
        }
        let rows = || {
            batch
                .iter()
                .zip(&cols)
                .filter_map(|(l, c)| Some((l, c.as_deref()?)))
        };
        let ids: Vec<&str> = rows().map(|(_, c)| c.id.as_str()).collect();
        let instances: Vec<&str> = rows().map(|(l, _)| &*l.instance).collect();
        let seqs: Vec<i64> = rows().map(|(l, _)| l.seq as i64).collect();
        let ts: Vec<std::time::SystemTime> = rows()
            .map(|(l, _)| std::time::UNIX_EPOCH + Duration::from_millis(l.at_ms))
            .collect();
        let subjects: Vec<Option<&str>> = rows().map(|(_, c)| c.subject.as_deref()).collect();
        let methods: Vec<Option<&str>> = rows().map(|(_, c)| c.method.as_deref()).collect();
        let targets: Vec<Option<&str>> = rows().map(|(_, c)| c.target.as_deref()).collect();
        let outcomes: Vec<&str> = rows().map(|(_, c)| c.outcome.as_str()).collect();
        let statuses: Vec<i32> = rows().map(|(_, c)| c.status).collect();
        let lines: Vec<&str> = rows().map(|(l, _)| &*l.text).collect();
        let (client, insert) = self.connection().await?;
        let r = tokio::time::timeout(
            timeout,
            client.execute(
                insert,
                &[
                    &ids, &instances, &seqs, &ts, &subjects, &methods, &targets, &outcomes,
                    &statuses, &lines,
                ],
            ),
        )
        .await;
        match r {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => {
                self.client = None;
                Err(e.into())
            }
            Err(_) => {
                self.client = None;
                Err(SinkError::TimedOut("timed out"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::Draft;
    use crate::audit::seal::ChainHead;

    /// Counts the writes it is given.
    #[derive(Default)]
    struct Counted {
        out: Vec<u8>,
        writes: usize,
    }

    impl Write for Counted {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.writes += 1;
            self.out.extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_batch_is_one_write_of_its_records_in_order_and_verifies() {
        use crate::audit::verify;
        let mut head = ChainHead::new("t");
        let mut out = Counted::default();
        let mut sealed = Vec::new();
        for batch in [1usize, 300, 7] {
            let lines: Vec<Line> = (0..batch)
                .map(|i| {
                    head.link(
                        &Draft {
                            request_id: i as u64,
                            ..Draft::default()
                        },
                        false,
                    )
                })
                .collect();
            sealed.extend(lines.iter().map(|l| l.text.to_string()));
            let mut buf = b"stale".to_vec();
            buf.clear();
            lines_into(&mut buf, &lines);
            write_flushed(&mut out, &buf).unwrap();
        }
        assert_eq!(out.writes, 3, "one write per batch");
        let text = String::from_utf8(out.out).unwrap();
        let written: Vec<String> = text.lines().map(str::to_string).collect();
        assert_eq!(written, sealed, "every record, in order, as sealed");
        let report = verify::verify_lines(written, false);
        assert!(report.broken.is_none(), "{:?}", report.broken);
        assert_eq!(report.records, 308);
    }

    #[test]
    fn files_rotate_by_size_and_keep_max_files() {
        let dir = std::env::temp_dir().join(format!("audit-file-sink-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.jsonl");
        let mut sink = FileSink {
            path: path.clone(),
            max_bytes: 1500,
            max_files: 2,
            file: None,
            len: 0,
        };
        let mut head = ChainHead::new("t");
        let mut all = Vec::new();
        for _ in 0..12 {
            let batch = vec![head.seal(&Draft::default())];
            sink.write(&batch).unwrap();
            all.push(batch[0].text.to_string());
        }
        let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
        let rotated = |i: u32| PathBuf::from(format!("{}.{i}", path.display()));
        assert!(rotated(1).exists() && rotated(2).exists() && !rotated(3).exists());
        // Oldest first across the kept files, nothing out of order, each file under the limit
        // (a batch never straddles two files).
        let kept = read(&rotated(2)) + &read(&rotated(1)) + &read(&path);
        let lines: Vec<&str> = kept.lines().collect();
        assert_eq!(lines, all[all.len() - lines.len()..].to_vec());
        for p in [rotated(2), rotated(1), path.clone()] {
            assert!(read(&p).len() <= 1500, "{}", p.display());
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
