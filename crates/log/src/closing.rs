//! Opening a directory this process closed a moment ago. sled lets go of a database's lock file only
//! once its I/O threads are done with it, a moment after the last handle is dropped, so opening the same
//! directory again at once (an embedded engine started again on its data, a restart in place) could fail
//! as if another process held it. [`open`] waits for that, for directories whose [`crate::EventLog`]
//! this process dropped (or said it is closing, [`crate::EventLog::closing`]) lately; a lock held by
//! anyone else still fails at once.

use crate::LogError;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long after closing a directory opening it again waits for its lock.
const WAIT: Duration = Duration::from_secs(5);

/// Directories whose log this process dropped within [`WAIT`], with when.
static CLOSED: Mutex<Vec<(PathBuf, Instant)>> = Mutex::new(Vec::new());

fn key(dir: &Path) -> PathBuf {
    std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf())
}

/// Notes that this process closed (or is closing) the log in `dir`.
pub(crate) fn closed(dir: &Path) {
    let dir = key(dir);
    let now = Instant::now();
    let mut closed = CLOSED.lock().unwrap_or_else(PoisonError::into_inner);
    closed.retain(|(d, at)| *d != dir && now.duration_since(*at) < WAIT);
    closed.push((dir, now));
}

/// Until when opening `dir` may wait for its lock: `None` unless this process closed it lately.
fn wait_until(dir: &Path) -> Option<Instant> {
    let dir = key(dir);
    let closed = CLOSED.lock().unwrap_or_else(PoisonError::into_inner);
    closed
        .iter()
        .find(|(d, _)| *d == dir)
        .map(|(_, at)| *at + WAIT)
}

/// Opens `config`'s database, which belongs to the log in `log_dir`; while its lock is still held and this
/// process closed that log lately, tries again every 10 ms until [`WAIT`] after the close.
pub(crate) fn open(config: &sled::Config, log_dir: &Path) -> Result<sled::Db, LogError> {
    let mut deadline = None;
    loop {
        match config.open() {
            Ok(db) => return Ok(db),
            Err(e) => {
                let e = LogError::from(e);
                if !e.is_locked() {
                    return Err(e);
                }
                let until = *deadline.get_or_insert_with(|| wait_until(log_dir));
                match until {
                    Some(until) if Instant::now() < until => {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    _ => return Err(e),
                }
            }
        }
    }
}
