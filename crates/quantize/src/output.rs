//! Writing an output so that a failed or interrupted run never leaves something that looks
//! finished: everything goes to `<output>.partial`, renamed into place once complete.

use std::path::{Path, PathBuf};

use crate::{QuantizeError, Summary};

/// `out.gguf` is written as `out.gguf.partial` first (a directory `out` as `out.partial`).
pub(crate) fn partial_path(output: &Path) -> PathBuf {
    let mut name = output.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    output.with_file_name(name)
}

/// Moves a complete `partial` to `output`, or removes it when writing failed. An existing
/// `output` directory is replaced only if empty (callers check that before writing).
pub(crate) fn finish(
    partial: &Path,
    output: &Path,
    written: Result<Summary, QuantizeError>,
) -> Result<Summary, QuantizeError> {
    let summary = match written {
        Ok(summary) => summary,
        Err(e) => {
            let _ = if partial.is_dir() { std::fs::remove_dir_all(partial) } else { std::fs::remove_file(partial) };
            return Err(e);
        }
    };
    let io = |source| QuantizeError::Io { path: output.to_path_buf(), source };
    if output.is_dir() {
        std::fs::remove_dir(output).map_err(io)?;
    }
    std::fs::rename(partial, output).map_err(io)?;
    Ok(Summary { output: output.to_path_buf(), ..summary })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_partial_output_sits_beside_the_output() {
        assert_eq!(partial_path(Path::new("/a/b/m.gguf")), Path::new("/a/b/m.gguf.partial"));
        assert_eq!(partial_path(Path::new("m.gguf")), Path::new("m.gguf.partial"));
        assert_eq!(partial_path(Path::new("/a/out")), Path::new("/a/out.partial"));
    }

    #[test]
    fn a_failed_write_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let (partial, output) = (dir.path().join("o.partial"), dir.path().join("o"));
        std::fs::create_dir(&partial).unwrap();
        std::fs::write(partial.join("model.safetensors"), b"half").unwrap();
        let failed = finish(&partial, &output, Err(QuantizeError::Invalid("stopped".into())));
        assert!(failed.unwrap_err().to_string().contains("stopped"));
        assert!(!partial.exists() && !output.exists());
    }
}
