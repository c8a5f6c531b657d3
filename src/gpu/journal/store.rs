//! The journal's files: `<dir>/journal` (current), `<dir>/journal.1` … `journal.<keep>`
//! (older, rotated), all serialised by an exclusive `flock` on `<dir>/journal.lock`.
//!
//! One record is one line: `<length> <checksum> <json>\n`, where length is the JSON's
//! byte count and checksum the first 16 hex digits of its SHA-256. A writer appends the
//! whole line with one `write(2)` on an `O_APPEND` descriptor while holding the lock. A
//! line that does not check (cut short by a kill or a full disk) is skipped by readers,
//! and the next writer cuts a torn tail off before it appends, so a later record never
//! follows a torn one in the same line.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use sha2::{Digest, Sha256};

use super::JournalError;

const CURRENT: &str = "journal";
const LOCK: &str = "journal.lock";
/// A writer that cannot take the lock in this time gives up (with a warning): a stopped
/// gpurun holding it must not hold up every container operation on the node.
const LOCK_WAIT: Duration = Duration::from_secs(3);

/// Where the journal lives and how large it may grow.
#[derive(Clone, Debug)]
pub struct Store {
    pub dir: PathBuf,
    pub max_size: u64,
    pub keep: u32,
}

/// What reading the journal found.
#[derive(Debug, Default)]
pub struct Lines {
    /// Every record's JSON that checked, oldest first.
    pub records: Vec<Vec<u8>>,
    /// Lines that did not check: torn by a killed writer or a full disk.
    pub skipped: usize,
}

fn io<'p>(step: &'static str, path: &'p Path) -> impl FnOnce(std::io::Error) -> JournalError + 'p {
    move |source| JournalError::Io {
        step,
        path: path.to_path_buf(),
        source,
    }
}

/// `<length> <checksum> <json>\n`.
pub fn frame(json: &[u8]) -> Vec<u8> {
    let mut line = format!("{} {} ", json.len(), checksum(json)).into_bytes();
    line.extend_from_slice(json);
    line.push(b'\n');
    line
}

fn checksum(json: &[u8]) -> String {
    Sha256::digest(json)
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The JSON of one line, if the line is whole and checks.
pub fn unframe(line: &[u8]) -> Option<&[u8]> {
    let mut parts = line.splitn(3, |&b| b == b' ');
    let len: usize = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let sum = std::str::from_utf8(parts.next()?).ok()?;
    let json = parts.next()?;
    (json.len() == len && checksum(json) == sum).then_some(json)
}

impl Store {
    fn current(&self) -> PathBuf {
        self.dir.join(CURRENT)
    }

    fn rotated(&self, n: u32) -> PathBuf {
        self.dir.join(format!("{CURRENT}.{n}"))
    }

    /// Appends one record, rotating first when it would take the current file past
    /// `max_size`.
    pub fn append(&self, json: &[u8]) -> Result<(), JournalError> {
        let line = frame(json);
        make_private_dir(&self.dir)?;
        let _lock = self.lock(FlockArg::LockExclusiveNonblock)?;
        let mut file = self.open_current()?;
        let mut size = repair_tail(&mut file, &self.current())?;
        if size > 0 && size + line.len() as u64 > self.max_size {
            drop(file);
            self.rotate()?;
            file = self.open_current()?;
            size = 0;
        }
        write_line(&mut file, &line, size, &self.current())
    }

    /// Every record of the rotated files and the current one, oldest first. A journal
    /// never written reads as empty and nothing is created.
    pub fn read(&self) -> Result<Lines, JournalError> {
        let mut out = Lines::default();
        if !self.dir.join(LOCK).exists() {
            return Ok(out);
        }
        let _lock = self.lock(FlockArg::LockSharedNonblock)?;
        let mut paths: Vec<PathBuf> = (1..=self.keep).rev().map(|n| self.rotated(n)).collect();
        paths.push(self.current());
        for path in paths {
            let data = match std::fs::read(&path) {
                Ok(d) => d,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io("reading the GPU journal", &path)(e)),
            };
            for line in data.split_inclusive(|&b| b == b'\n') {
                match line.strip_suffix(b"\n").and_then(unframe) {
                    Some(json) => out.records.push(json.to_vec()),
                    None => out.skipped += 1,
                }
            }
        }
        Ok(out)
    }

    /// Takes the lock, retrying a non-blocking `flock` for [`LOCK_WAIT`].
    fn lock(&self, how: FlockArg) -> Result<Flock<File>, JournalError> {
        let path = self.dir.join(LOCK);
        let deadline = Instant::now() + LOCK_WAIT;
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
            .map_err(io("opening the GPU journal lock", &path))?;
        loop {
            match Flock::lock(f, how) {
                Ok(l) => return Ok(l),
                Err((back, nix::errno::Errno::EWOULDBLOCK)) if Instant::now() < deadline => {
                    f = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((_, errno)) => {
                    return Err(io("flock on the GPU journal lock", &path)(errno.into()))
                }
            }
        }
    }

    fn open_current(&self) -> Result<File, JournalError> {
        let path = self.current();
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&path)
            .map_err(io("opening the GPU journal", &path))?;
        // It holds other users' command lines: root's alone, whatever made it.
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io("chmod 0600 on the GPU journal", &path))?;
        Ok(f)
    }

    /// `journal` becomes `journal.1`, each `journal.<n>` becomes `journal.<n+1>`, and the
    /// one past `keep` is removed.
    fn rotate(&self) -> Result<(), JournalError> {
        let oldest = self.rotated(self.keep + 1);
        for n in (1..=self.keep).rev() {
            rename_if_present(&self.rotated(n), &self.rotated(n + 1))?;
        }
        rename_if_present(&self.current(), &self.rotated(1))?;
        match std::fs::remove_file(&oldest) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("removing the oldest GPU journal", &oldest)(e)),
        }
    }
}

fn rename_if_present(from: &Path, to: &Path) -> Result<(), JournalError> {
    match std::fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("rotating the GPU journal", from)(e)),
    }
}

fn make_private_dir(dir: &Path) -> Result<(), JournalError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io("creating the GPU journal directory", dir))
}

/// Cuts off a last line without its newline (a writer killed mid-record, or a write cut
/// short by a full disk); returns the file's size after.
fn repair_tail(file: &mut File, path: &Path) -> Result<u64, JournalError> {
    let size = file
        .metadata()
        .map_err(io("stat on the GPU journal", path))?
        .len();
    if size == 0 || last_byte(file, size, path)? == b'\n' {
        return Ok(size);
    }
    let keep = end_of_last_line(file, size, path)?;
    file.set_len(keep)
        .map_err(io("cutting a torn record off the GPU journal", path))?;
    Ok(keep)
}

fn last_byte(file: &mut File, size: u64, path: &Path) -> Result<u8, JournalError> {
    let mut b = [0u8; 1];
    file.seek(SeekFrom::Start(size - 1))
        .and_then(|_| file.read_exact(&mut b))
        .map_err(io("reading the end of the GPU journal", path))?;
    Ok(b[0])
}

/// The offset just past the last newline (0 when there is none), read backwards.
fn end_of_last_line(file: &mut File, size: u64, path: &Path) -> Result<u64, JournalError> {
    let mut end = size;
    let mut buf = vec![0u8; 4096];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))
            .and_then(|_| file.read_exact(chunk))
            .map_err(io("reading the end of the GPU journal", path))?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// The whole line in one `write(2)`. Should the file system take only part of it (a
/// full disk), the rest is tried once more to learn the error, and the part is cut back
/// off at once so the file ends with a whole record again.
fn write_line(file: &mut File, line: &[u8], size: u64, path: &Path) -> Result<(), JournalError> {
    #[cfg(feature = "failpoints")]
    stop_mid_record(file, line);
    let result = match file.write(line) {
        Ok(n) if n < line.len() => file.write_all(&line[n..]),
        Ok(_) => Ok(()),
        Err(e) => Err(e),
    };
    result.map_err(|e| {
        let _ = file.set_len(size);
        io("appending to the GPU journal", path)(e)
    })
}

/// `GPURUN_FAILPOINT=journal-mid-record`: write half the record and die the way a killed
/// gpurun would, lock held, no cleanup.
#[cfg(feature = "failpoints")]
fn stop_mid_record(file: &mut File, line: &[u8]) {
    if std::env::var("GPURUN_FAILPOINT").is_ok_and(|f| f == "journal-mid-record") {
        let _ = file.write(&line[..line.len() / 2]);
        let _ = nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_checks_only_whole_and_unchanged() {
        let line = frame(br#"{"a":1}"#);
        let body = line
            .strip_suffix(b"\n")
            .expect("a line ends with a newline");
        assert_eq!(unframe(body), Some(&br#"{"a":1}"#[..]));
        assert_eq!(unframe(&body[..body.len() - 1]), None, "cut short");
        let mut changed = body.to_vec();
        let last = changed.len() - 2;
        changed[last] = b'2';
        assert_eq!(unframe(&changed), None, "one byte changed");
        assert_eq!(unframe(b"garbage"), None);
    }

    #[test]
    fn a_torn_tail_is_cut_off_before_the_next_record() {
        let t = tempfile::tempdir().expect("tempdir");
        let store = Store {
            dir: t.path().to_path_buf(),
            max_size: 1 << 20,
            keep: 1,
        };
        store.append(b"{\"n\":1}").expect("first record");
        let path = t.path().join(CURRENT);
        let whole = std::fs::read(&path).expect("read the journal");
        let torn = frame(b"{\"n\":2}");
        let mut f = OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open the journal");
        f.write_all(&torn[..5]).expect("write half a record");
        let read = store.read().expect("read with a torn tail");
        assert_eq!((read.records.len(), read.skipped), (1, 1));
        store.append(b"{\"n\":3}").expect("third record");
        let after = std::fs::read(&path).expect("read the journal");
        assert!(after.starts_with(&whole), "the first record is untouched");
        let read = store.read().expect("read after the repair");
        assert_eq!(read.records, [b"{\"n\":1}".to_vec(), b"{\"n\":3}".to_vec()]);
        assert_eq!(read.skipped, 0);
    }
}
