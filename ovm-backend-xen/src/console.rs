//! Guest consoles as xenconsoled logs them (`xenconsoled --log=guest`): one file per
//! domain name, `<log dir>/guest-<name>.log`, appended across the domain's lifetimes.
//! ovm remembers the file's length when it starts a VM, so a VM's console buffer holds
//! what the current run printed.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// Most bytes `console_buffer` returns: the newest ones.
pub const CONSOLE_BUFFER_MAX: u64 = 1 << 20;

/// Largest chunk a console stream reads at once.
const STREAM_CHUNK: u64 = 64 * 1024;

/// The log file of a domain name.
pub fn log_path(log_dir: &Path, domain_name: &str) -> PathBuf {
    log_dir.join(format!("guest-{domain_name}.log"))
}

/// The log's length now (0 when xenconsoled has not created it yet).
pub async fn log_len(path: &Path) -> std::io::Result<u64> {
    match tokio::fs::metadata(path).await {
        Ok(m) => Ok(m.len()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

/// Bytes of the log from `from` on, at most `max` (the newest). A log shorter than `from`
/// was truncated or replaced: then it is read from its start.
pub async fn read_from(path: &Path, from: u64, max: u64) -> std::io::Result<Vec<u8>> {
    let mut file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let len = file.metadata().await?.len();
    let from = if from > len { 0 } else { from };
    let start = from.max(len.saturating_sub(max));
    file.seek(SeekFrom::Start(start)).await?;
    let mut buf = Vec::with_capacity(usize::try_from(len - start).unwrap_or(0));
    file.take(len - start).read_to_end(&mut buf).await?;
    Ok(buf)
}

/// The next chunk of the log after `offset`, if it grew; moves `offset` past it.
pub async fn read_new(path: &Path, offset: &mut u64) -> std::io::Result<Option<Vec<u8>>> {
    let len = log_len(path).await?;
    if len < *offset {
        // Truncated or replaced: follow the new file from its start.
        *offset = 0;
    }
    if len == *offset {
        return Ok(None);
    }
    // Oldest unread bytes first (unlike `read_from`, which keeps the newest).
    let mut file = tokio::fs::File::open(path).await?;
    file.seek(SeekFrom::Start(*offset)).await?;
    let want = (len - *offset).min(STREAM_CHUNK);
    let mut buf = Vec::with_capacity(usize::try_from(want).unwrap_or(0));
    file.take(want).read_to_end(&mut buf).await?;
    *offset += buf.len() as u64;
    Ok(Some(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn buffers_start_at_the_offset_and_keep_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let p = log_path(dir.path(), "g");
        assert_eq!(log_len(&p).await.unwrap(), 0);
        assert!(read_from(&p, 0, 100).await.unwrap().is_empty());
        std::fs::write(&p, b"old run\nnew run\n").unwrap();
        assert_eq!(read_from(&p, 8, 100).await.unwrap(), b"new run\n");
        assert_eq!(read_from(&p, 0, 4).await.unwrap(), b"run\n");
        // Truncated below the offset: read from the start.
        std::fs::write(&p, b"x\n").unwrap();
        assert_eq!(read_from(&p, 8, 100).await.unwrap(), b"x\n");
    }

    #[tokio::test]
    async fn new_bytes_are_read_once_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let p = log_path(dir.path(), "g");
        let mut off = 0;
        assert_eq!(read_new(&p, &mut off).await.unwrap(), None);
        std::fs::write(&p, b"a").unwrap();
        assert_eq!(read_new(&p, &mut off).await.unwrap(), Some(b"a".to_vec()));
        assert_eq!(read_new(&p, &mut off).await.unwrap(), None);
        let big = vec![b'z'; (STREAM_CHUNK + 10) as usize];
        let mut all = b"a".to_vec();
        all.extend_from_slice(&big);
        std::fs::write(&p, &all).unwrap();
        let first = read_new(&p, &mut off).await.unwrap().unwrap();
        assert_eq!(first.len() as u64, STREAM_CHUNK);
        let second = read_new(&p, &mut off).await.unwrap().unwrap();
        assert_eq!(second.len(), 10);
        assert_eq!(off, all.len() as u64);
    }
}
