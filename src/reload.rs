//! The one file reloader: a value built from files (API keys, TLS certificates, the policy),
//! polled and rebuilt when their bytes change. A set of files that cannot be used keeps the
//! running value and is reported once per distinct error, until the files change again.
//!
//! Files are compared by content (a SHA-256 of every file), not by mtime or inotify: a mounted
//! Secret or ConfigMap changes by Kubernetes swapping a `..data` symlink, which reading follows
//! and an event or a timestamp can hide.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What a reloaded value is, how it is built from its files, and what is counted and logged.
pub trait Source: Send + Sync + 'static {
    type Value: Send + Sync + 'static;
    type Error: fmt::Display + Send + 'static;

    /// Names the value in the log (`"TLS"`, `"policy"`).
    const WHAT: &'static str;

    /// A file could not be read.
    fn read_error(&self, path: &Path, error: io::Error) -> Self::Error;

    /// The value of the files' contents (in the order they were given).
    fn build(&self, contents: &[Vec<u8>]) -> Result<Self::Value, Self::Error>;

    /// `new` replaced `old` (gauges that describe the running value).
    fn swapped(&self, _old: &Self::Value, _new: &Self::Value) {}

    /// The poller swapped in a new value (its log line, its counter).
    fn reloaded(&self, new: &Self::Value);

    /// The files changed but cannot be used: reported once per distinct error.
    fn rejected(&self, error: &Self::Error);
}

/// A value kept in step with its files.
pub struct Reloading<S: Source> {
    source: S,
    files: Vec<PathBuf>,
    /// How long changed files must stay the same before they are used (files written in place
    /// may be caught half-written); zero: used at once.
    settle: Duration,
    current: RwLock<Arc<S::Value>>,
    /// The fingerprint of the contents `current` was built from; `None`: unknown.
    loaded: Mutex<Option<Fingerprint>>,
}

type Fingerprint = [u8; 32];

/// One hash of every file, each with its length, so no two different sets hash alike by
/// moving bytes from one file to the next.
fn fingerprint(contents: &[Vec<u8>]) -> Fingerprint {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for c in contents {
        ctx.update(&(c.len() as u64).to_le_bytes());
        ctx.update(c);
    }
    let mut out = [0; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// Every file's content, in order.
fn read<S: Source>(source: &S, files: &[PathBuf]) -> Result<Vec<Vec<u8>>, S::Error> {
    files
        .iter()
        .map(|p| std::fs::read(p).map_err(|e| source.read_error(p, e)))
        .collect()
}

impl<S: Source> Reloading<S> {
    /// Starts from `initial`, built from `loaded_from` (the files' contents then; `None` when
    /// unknown, so the first poll that reads them builds anew).
    pub fn new(
        source: S,
        files: Vec<PathBuf>,
        initial: Arc<S::Value>,
        loaded_from: Option<&[Vec<u8>]>,
    ) -> Self {
        Self {
            source,
            files,
            settle: Duration::ZERO,
            current: RwLock::new(initial),
            loaded: Mutex::new(loaded_from.map(fingerprint)),
        }
    }

    /// Reads the files and builds the first value.
    pub fn load(source: S, files: Vec<PathBuf>) -> Result<Self, S::Error> {
        let contents = read(&source, &files)?;
        let initial = source.build(&contents)?;
        Ok(Self::new(source, files, Arc::new(initial), Some(&contents)))
    }

    /// Changed files are used only once they read the same twice, `settle` apart.
    pub fn with_settle(mut self, settle: Duration) -> Self {
        self.settle = settle;
        self
    }

    pub fn current(&self) -> Arc<S::Value> {
        self.current.read().expect("not poisoned").clone()
    }

    pub fn source(&self) -> &S {
        &self.source
    }

    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Re-reads the files; `Ok(true)` when a new value is in use. Unreadable or unusable
    /// files leave the running value in place. Blocking: call it off the runtime.
    pub fn reload_if_changed(&self) -> Result<bool, S::Error> {
        let contents = read(&self.source, &self.files)?;
        let print = fingerprint(&contents);
        let mut loaded = self.loaded.lock().expect("not poisoned");
        if *loaded == Some(print) {
            return Ok(false);
        }
        if !self.settle.is_zero() {
            std::thread::sleep(self.settle);
            if read(&self.source, &self.files)? != contents {
                return Ok(false);
            }
        }
        let new = Arc::new(self.source.build(&contents)?);
        let old = std::mem::replace(
            &mut *self.current.write().expect("not poisoned"),
            new.clone(),
        );
        *loaded = Some(print);
        self.source.swapped(&old, &new);
        Ok(true)
    }

    /// Polls every `interval` until `stop`. Reading and building run off the threads that
    /// serve traffic.
    pub fn spawn(self: &Arc<Self>, interval: Duration, stop: CancellationToken) -> JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            let mut last_error: Option<String> = None;
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let worker = this.clone();
                match tokio::task::spawn_blocking(move || worker.reload_if_changed()).await {
                    Ok(Ok(true)) => {
                        last_error = None;
                        this.source.reloaded(&this.current());
                    }
                    Ok(Ok(false)) => last_error = None,
                    Ok(Err(e)) => {
                        let text = e.to_string();
                        if last_error.as_deref() != Some(text.as_str()) {
                            this.source.rejected(&e);
                            last_error = Some(text);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "{} reload task failed", S::WHAT),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A number in a file; anything else is an error.
    #[derive(Default)]
    struct Number {
        builds: AtomicUsize,
        reloaded: AtomicUsize,
        rejected: Mutex<Vec<String>>,
    }

    impl Source for Number {
        type Value = u64;
        type Error = String;
        const WHAT: &'static str = "number";

        fn read_error(&self, path: &Path, error: io::Error) -> String {
            format!("{}: {error}", path.display())
        }

        fn build(&self, contents: &[Vec<u8>]) -> Result<u64, String> {
            self.builds.fetch_add(1, Ordering::Relaxed);
            let text = String::from_utf8_lossy(&contents[0]);
            text.trim()
                .parse()
                .map_err(|_| format!("{text:?} is not a number"))
        }

        fn reloaded(&self, _: &u64) {
            self.reloaded.fetch_add(1, Ordering::Relaxed);
        }

        fn rejected(&self, error: &String) {
            self.rejected.lock().unwrap().push(error.clone());
        }
    }

    fn file(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mcp-sentinel-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn changes_are_built_and_a_broken_file_keeps_the_running_value() {
        let path = file("direct", "1");
        let r = Reloading::new(
            Number::default(),
            vec![path.clone()],
            Arc::new(1),
            Some(&[b"1".to_vec()]),
        );
        assert!(!r.reload_if_changed().unwrap(), "unchanged");
        assert_eq!(r.source().builds.load(Ordering::Relaxed), 0, "not rebuilt");

        std::fs::write(&path, "2").unwrap();
        assert!(r.reload_if_changed().unwrap());
        assert_eq!(*r.current(), 2);
        assert!(!r.reload_if_changed().unwrap());
        assert_eq!(r.source().builds.load(Ordering::Relaxed), 1);

        std::fs::write(&path, "two").unwrap();
        assert_eq!(
            r.reload_if_changed().unwrap_err(),
            "\"two\" is not a number"
        );
        assert_eq!(*r.current(), 2, "the running value stays");
        std::fs::remove_file(&path).unwrap();
        assert!(r.reload_if_changed().is_err());
        assert_eq!(*r.current(), 2);

        // Unknown starting contents: the first read builds.
        std::fs::write(&path, "3").unwrap();
        let r = Reloading::new(Number::default(), vec![path], Arc::new(0), None)
            .with_settle(Duration::from_millis(1));
        assert!(r.reload_if_changed().unwrap());
        assert_eq!(*r.current(), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_poller_reports_each_change_and_each_distinct_error_once() {
        let path = file("poller", "1");
        let r = Arc::new(Reloading::new(
            Number::default(),
            vec![path.clone()],
            Arc::new(1),
            Some(&[b"1".to_vec()]),
        ));
        let stop = CancellationToken::new();
        let task = r.spawn(Duration::from_millis(10), stop.clone());
        let wait = |what: &'static str, done: &dyn Fn() -> bool| {
            let start = std::time::Instant::now();
            while !done() {
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "waiting for {what}"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        tokio::task::block_in_place(|| {
            std::fs::write(&path, "bad").unwrap();
            wait("the rejection", &|| {
                !r.source().rejected.lock().unwrap().is_empty()
            });
            // Several more polls of the same broken file: still one report.
            std::thread::sleep(Duration::from_millis(60));
            assert_eq!(r.source().rejected.lock().unwrap().len(), 1);
            assert_eq!(*r.current(), 1);
            std::fs::write(&path, "5").unwrap();
            wait("the reload", &|| *r.current() == 5);
            wait("its report", &|| {
                r.source().reloaded.load(Ordering::Relaxed) == 1
            });
        });
        stop.cancel();
        task.await.unwrap();
        assert_eq!(r.source().reloaded.load(Ordering::Relaxed), 1);
    }
}
