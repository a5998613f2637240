//! Where a fleet keeps its finished namespaces' packed reports until the run's report is rendered: in an
//! unlinked file in the report directory rather than in memory. At 1,000 namespaces of 5 Deployments the
//! packed reports are about 12 MB (BENCHMARKS.md §2b), a fifth of the runner's memory goal, and they are
//! read once, at the end. The file is removed from the directory as soon as it is opened, so nothing is
//! left behind whatever way the process ends; its pages are the kernel's page cache, not the process's
//! memory. The report directory is the place the run must be able to write anyway (the shipped CronJob's
//! root filesystem is read-only); where no file can be made there, the reports stay in memory.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{NamespaceReport, PackedReport};

/// An append-only store of packed reports shared by a fleet's namespace tasks.
#[derive(Debug)]
pub struct Spool {
    file: Option<File>,
    /// Offset of the next report in `file`.
    end: AtomicU64,
}

/// Where a packed report's bytes are.
#[derive(Debug)]
pub(crate) enum Stored {
    /// In memory.
    Memory(Box<[u8]>),
    /// In a spool's file.
    File { spool: Arc<Spool>, at: u64, len: usize },
}

impl Stored {
    /// The bytes (read back from the file for a spooled report).
    pub(crate) fn read(&self) -> std::borrow::Cow<'_, [u8]> {
        match self {
            Stored::Memory(b) => std::borrow::Cow::Borrowed(b),
            Stored::File { spool, at, len } => {
                let mut buf = vec![0; *len];
                let file = spool.file.as_ref().expect("a spooled report has a file");
                read_at(file, &mut buf, *at).expect("the report spool reads back what was written to it");
                std::borrow::Cow::Owned(buf)
            }
        }
    }
}

impl Spool {
    /// A spool in an unlinked file in `dir` (created if missing), or in memory when no file can be made.
    pub fn in_dir(dir: &Path) -> Arc<Spool> {
        let file = open_unlinked(dir)
            .inspect_err(|e| {
                tracing::debug!(dir = %dir.display(), error = %e, "finished namespaces' reports kept in memory")
            })
            .ok();
        Arc::new(Spool {
            file,
            end: AtomicU64::new(0),
        })
    }

    /// Packs `r` and stores it in the file; kept in memory when there is no file or the write fails.
    pub fn pack(self: &Arc<Self>, r: &NamespaceReport) -> PackedReport {
        let mut packed = PackedReport::pack(r);
        if let Stored::Memory(bytes) = &packed.bytes
            && let Some(at) = self.store(bytes)
        {
            packed.bytes = Stored::File {
                spool: self.clone(),
                at,
                len: bytes.len(),
            };
        }
        packed
    }

    fn store(&self, bytes: &[u8]) -> Option<u64> {
        let file = self.file.as_ref()?;
        let at = self.end.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        write_at(file, bytes, at)
            .inspect_err(|e| tracing::debug!(error = %e, "a finished namespace's report kept in memory"))
            .ok()?;
        Some(at)
    }
}

fn open_unlinked(dir: &Path) -> std::io::Result<File> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!(".ambient-migrate-spool-{}", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(file)
}

#[cfg(unix)]
fn write_at(file: &File, bytes: &[u8], at: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, bytes, at)
}

#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], at: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, at)
}

// Elsewhere (the runner is built for Linux) nothing is spooled.
#[cfg(not(unix))]
fn write_at(_: &File, _: &[u8], _: u64) -> std::io::Result<()> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}

#[cfg(not(unix))]
fn read_at(_: &File, _: &mut [u8], _: u64) -> std::io::Result<()> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::NamespaceOutcome;

    fn report(name: &str, outcome: NamespaceOutcome) -> NamespaceReport {
        let mut r = NamespaceReport::new(name, false, 1);
        r.outcome = outcome;
        r.reason = Some(format!("{name}: a reason with a float {}", 0.1 + 0.2));
        r
    }

    #[test]
    fn spooled_reports_read_back_equal_and_leave_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::in_dir(&dir.path().join("reports"));
        let a = report("a", NamespaceOutcome::Migrated);
        let b = report("b", NamespaceOutcome::RolledBack);
        let (pa, pb) = (spool.pack(&a), spool.pack(&b));
        assert!(matches!(pa.bytes, Stored::File { .. }) && matches!(pb.bytes, Stored::File { .. }));
        assert_eq!((pb.unpack(), pa.unpack()), (b, a));
        assert_eq!(pb.outcome(), NamespaceOutcome::RolledBack);
        let left: Vec<_> = std::fs::read_dir(dir.path().join("reports")).unwrap().collect();
        assert!(left.is_empty(), "the spool file is unlinked: {left:?}");
    }

    #[test]
    fn without_a_writable_directory_reports_stay_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let not_a_dir = dir.path().join("file");
        std::fs::write(&not_a_dir, "x").unwrap();
        let spool = Spool::in_dir(&not_a_dir.join("reports"));
        let a = report("a", NamespaceOutcome::Held);
        let p = spool.pack(&a);
        assert!(matches!(p.bytes, Stored::Memory(_)));
        assert_eq!(p.unpack(), a);
        assert_eq!(p.outcome(), NamespaceOutcome::Held);
    }
}
