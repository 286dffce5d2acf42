//! The one rule every file Strata writes obeys: it may create a file or replace a
//! regular file (or a symbolic link to one), and nothing else.
//!
//! An output path that names a directory, a FIFO, a socket or a device node (`-o
//! /dev/sda`), directly or through a symbolic link, is refused with an error that says
//! what is there, before anything is written: renaming a finished file over such a path
//! would destroy it, and writing into it would block or scribble on a device.

use std::io;
use std::path::Path;

/// Checks that `path` may be written: it does not exist (a dangling symbolic link
/// counts as absent) or it is a regular file. The error says what the path is instead.
pub fn check_output_path(path: &Path) -> io::Result<()> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => Ok(()),
        Ok(meta) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "it is {}, not a regular file; refusing to replace it",
                describe(&meta.file_type())
            ),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// What a non-regular file is, with its article: `a directory`, `a FIFO`.
fn describe(kind: &std::fs::FileType) -> &'static str {
    if kind.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_fifo() {
            return "a FIFO";
        }
        if kind.is_socket() {
            return "a socket";
        }
        if kind.is_block_device() {
            return "a block device";
        }
        if kind.is_char_device() {
            return "a character device";
        }
    }
    "not a file"
}

#[cfg(test)]
mod tests {
    use super::check_output_path;

    #[test]
    fn absent_paths_and_regular_files_may_be_written() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("out.npy");
        check_output_path(&file).unwrap();
        std::fs::write(&file, b"x").unwrap();
        check_output_path(&file).unwrap();
    }

    #[test]
    fn a_directory_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let err = check_output_path(dir.path()).unwrap_err().to_string();
        assert_eq!(
            err,
            "it is a directory, not a regular file; refusing to replace it"
        );
    }

    #[cfg(unix)]
    #[test]
    fn devices_and_links_to_directories_are_refused() {
        let err = check_output_path(std::path::Path::new("/dev/null"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("it is a character device"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path(), &link).unwrap();
        let err = check_output_path(&link).unwrap_err().to_string();
        assert!(err.contains("is a directory"), "{err}");

        let to_file = dir.path().join("to_file");
        std::fs::write(dir.path().join("f"), b"x").unwrap();
        std::os::unix::fs::symlink(dir.path().join("f"), &to_file).unwrap();
        check_output_path(&to_file).unwrap();
    }
}
