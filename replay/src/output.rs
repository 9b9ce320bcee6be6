//! Files the tool writes: under `FILE.partial`, renamed to `FILE` once complete, so a file
//! with the final name is always whole.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::Result;

/// Where `path` is written before it is complete.
pub fn partial_path(path: &Path) -> PathBuf {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    PathBuf::from(partial)
}

/// Writes `bytes` to `path` through its partial file.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let partial = partial_path(path);
    let written = (|| {
        let mut file = BufWriter::new(File::create(&partial)?);
        file.write_all(bytes)?;
        file.flush()
    })();
    match written {
        Ok(()) => Ok(std::fs::rename(&partial, path)?),
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(e.into())
        }
    }
}
