//! Unix socket paths of any length. A socket address holds at most 107 bytes of path,
//! and a VM's control socket lives deep in its state directory; a longer path is reached
//! through its directory opened here and named as `/proc/self/fd/<n>/<name>`.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Longest path a Unix socket address can hold (`sun_path` is 108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 107;

/// A path to bind or connect a Unix socket at; keep it alive until that call returns.
#[derive(Debug)]
pub struct SocketPath {
    /// The directory, held open while its `/proc/self/fd` name is in use.
    _dir: Option<File>,
    path: PathBuf,
}

impl SocketPath {
    /// `path` itself when it fits, else a short name for it through its open directory.
    pub fn new(path: &Path) -> io::Result<Self> {
        if path.as_os_str().len() <= MAX_SOCKET_PATH {
            return Ok(SocketPath {
                _dir: None,
                path: path.to_path_buf(),
            });
        }
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a socket file path", path.display()),
            ));
        };
        let dir = File::open(dir)?;
        let short = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name);
        Ok(SocketPath {
            _dir: Some(dir),
            path: short,
        })
    }

    /// The path to hand to `bind` or `connect`.
    pub fn as_path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::{UnixListener, UnixStream};

    use super::*;

    #[test]
    fn sockets_deeper_than_an_address_holds_bind_and_connect() {
        let root = tempfile::tempdir().unwrap();
        let mut dir = root.path().to_path_buf();
        while dir.as_os_str().len() <= MAX_SOCKET_PATH {
            dir.push("a-rather-long-directory-name");
        }
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("api.sock");
        assert!(
            UnixListener::bind(&socket).is_err(),
            "the kernel refuses it as is"
        );
        let listener = UnixListener::bind(SocketPath::new(&socket).unwrap().as_path()).unwrap();
        assert!(socket.exists(), "bound where it was asked");
        let _client = UnixStream::connect(SocketPath::new(&socket).unwrap().as_path()).unwrap();
        listener.accept().unwrap();
        let short = root.path().join("s.sock");
        assert_eq!(SocketPath::new(&short).unwrap().as_path(), short);
    }
}
