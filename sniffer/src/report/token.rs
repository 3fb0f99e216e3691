//! The projected ServiceAccount token, read again whenever the kubelet may have rotated it.
//!
//! The kubelet replaces the file (a symlink swap) well before the token expires. The file is
//! read again when its modification time, size or inode changes, when the copy held is older
//! than [`TOKEN_MAX_AGE`], and after the operator answered 401.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use thiserror::Error;

/// Longest a token read from the file is used without reading the file again.
pub const TOKEN_MAX_AGE: Duration = Duration::from_secs(60);

/// Why no token is available.
#[derive(Debug, Error)]
pub enum TokenError {
    /// The file could not be read.
    #[error("cannot read token file {path}: {source}")]
    Read {
        /// The token file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The file holds only whitespace.
    #[error("token file {0} is empty")]
    Empty(PathBuf),
}

/// What identifies one version of a file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

impl FileStamp {
    fn of(path: &Path) -> io::Result<Self> {
        let meta = fs::metadata(path)?;
        Ok(FileStamp {
            modified: meta.modified().ok(),
            len: meta.len(),
            inode: meta.ino(),
        })
    }
}

#[derive(Debug)]
struct HeldToken {
    token: String,
    stamp: FileStamp,
    read_at: Instant,
}

/// The token file and the token last read from it.
#[derive(Debug)]
pub struct TokenFile {
    path: PathBuf,
    held: Option<HeldToken>,
}

impl TokenFile {
    /// Reads nothing yet; the first [`TokenFile::current`] does.
    pub fn new(path: PathBuf) -> Self {
        TokenFile { path, held: None }
    }

    /// The token file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current token, read again from the file when it may have changed.
    pub fn current(&mut self) -> Result<&str, TokenError> {
        let read_error = |source| TokenError::Read {
            path: self.path.clone(),
            source,
        };
        let stamp = FileStamp::of(&self.path).map_err(read_error)?;
        let fresh = self
            .held
            .as_ref()
            .is_some_and(|held| held.stamp == stamp && held.read_at.elapsed() < TOKEN_MAX_AGE);
        if !fresh {
            let text = fs::read_to_string(&self.path).map_err(read_error)?;
            let token = text.trim();
            if token.is_empty() {
                self.held = None;
                return Err(TokenError::Empty(self.path.clone()));
            }
            if self.held.is_some() {
                tracing::debug!(path = %self.path.display(), "token read again");
            }
            self.held = Some(HeldToken {
                token: token.to_owned(),
                stamp,
                read_at: Instant::now(),
            });
        }
        match &self.held {
            Some(held) => Ok(&held.token),
            None => Err(TokenError::Empty(self.path.clone())),
        }
    }

    /// Forgets the token held, so the next [`TokenFile::current`] reads the file (after a 401).
    pub fn invalidate(&mut self) {
        self.held = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "trafficmap-token-{}-{name}-{}",
            std::process::id(),
            crate::now_ms()
        ));
        fs::create_dir_all(&dir).expect("temp dir");
        dir.join("token")
    }

    #[test]
    fn the_token_is_trimmed_and_a_changed_file_is_read_again() {
        let path = temp_file("changed");
        fs::write(&path, "first\n").expect("write");
        let mut file = TokenFile::new(path.clone());
        assert_eq!(file.current().expect("token"), "first");
        fs::write(&path, "second-token\n").expect("write");
        assert_eq!(file.current().expect("token"), "second-token");
        // Replaced the way the kubelet does it: a new file renamed over the old one.
        let next = path.with_extension("new");
        fs::write(&next, "third-token!").expect("write");
        fs::rename(&next, &path).expect("rename");
        assert_eq!(file.current().expect("token"), "third-token!");
    }

    #[test]
    fn an_unchanged_file_is_not_read_again_until_invalidated() {
        let path = temp_file("unchanged");
        fs::write(&path, "aaaa").expect("write");
        let mut file = TokenFile::new(path.clone());
        assert_eq!(file.current().expect("token"), "aaaa");
        // Same size and modification time: only an invalidation makes it read again.
        let stamp = FileStamp::of(&path).expect("stamp");
        fs::write(&path, "bbbb").expect("write");
        let times = fs::FileTimes::new().set_modified(stamp.modified.expect("mtime"));
        fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_times(times))
            .expect("set mtime");
        assert_eq!(file.current().expect("token"), "aaaa");
        file.invalidate();
        assert_eq!(file.current().expect("token"), "bbbb");
    }

    #[test]
    fn a_missing_or_empty_file_is_an_error() {
        let path = temp_file("missing");
        let mut file = TokenFile::new(path.clone());
        assert!(matches!(file.current(), Err(TokenError::Read { .. })));
        fs::write(&path, " \n").expect("write");
        assert!(matches!(file.current(), Err(TokenError::Empty(_))));
    }
}
