//! The configuration file given with `--config` (or to `config check`) is untrusted: a path
//! that is a directory, a device, a huge file or not UTF-8 is refused at once with a sentence
//! saying which and exit 3 — never a hang on a device, and never a whole disk image read into
//! memory. A FIFO (a shell's process substitution) is read within the same bound.

mod common;

use std::path::Path;
use std::time::Duration;

/// Well under [`common::HANG`]: each refusal is immediate.
const PROMPT: Duration = Duration::from_secs(30);

/// Runs `polymongo -c PATH ping` and `polymongo config check PATH`; both must exit 3 promptly
/// with `says` on stderr or stdout.
async fn refused(path: &Path, says: &str) {
    let path = path.to_str().expect("a UTF-8 temporary path");
    for args in [
        vec!["-c", path, "ping"],
        vec!["config", "check", path],
        vec!["config", "check", "--json", path],
    ] {
        // Spawned killed-on-drop, so that a hang ends with the test.
        let out = tokio::time::timeout(PROMPT, common::spawn(&args).wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("{args:?} hung"))
            .expect("the binary runs");
        let code = out.status.code().unwrap_or(-1);
        let (out, err) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert_eq!(code, 3, "{args:?}: {out}{err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!err.contains("S3cr3tPw"), "{args:?}: {err}");
    }
}

#[tokio::test]
async fn a_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    refused(dir.path(), "is a directory").await;
}

#[tokio::test]
async fn a_missing_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    refused(&dir.path().join("absent.toml"), "cannot read").await;
}

#[cfg(unix)]
#[tokio::test]
async fn a_device_is_refused_without_reading_it() {
    // Endless: read whole, it would fill memory; read to the bound, it is still no file.
    refused(Path::new("/dev/zero"), "not a regular file").await;
}

/// `-c <(vault read …)`: a shell's process substitution is a FIFO, and is read.
#[cfg(unix)]
#[tokio::test]
async fn a_fifo_with_a_writer_is_read_as_process_substitution_gives_it() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("poly.toml");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    let writer = {
        let fifo = fifo.clone();
        // Opening a FIFO to write waits for its reader: the command under test.
        std::thread::spawn(move || {
            std::fs::write(&fifo, "uri = \"mongodb://ops:S3cr3tPw@127.0.0.1:27017\"\n")
        })
    };
    let path = fifo.to_str().expect("a UTF-8 temporary path");
    let out = tokio::time::timeout(
        PROMPT,
        common::spawn(&["config", "check", path]).wait_with_output(),
    )
    .await
    .expect("config check of a FIFO hung")
    .expect("the binary runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(!stdout.contains("S3cr3tPw") && !stderr.contains("S3cr3tPw"));
    writer
        .join()
        .expect("the writer ends")
        .expect("the writer wrote");
}

#[tokio::test]
async fn a_huge_file_is_refused_without_reading_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("poly.toml");
    // Sparse: 100 MB that take no disk.
    std::fs::File::create(&path)
        .and_then(|f| f.set_len(100 * 1024 * 1024))
        .unwrap();
    refused(&path, "a configuration file is at most").await;
}

#[tokio::test]
async fn a_file_that_is_not_utf8_is_refused_naming_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("poly.toml");
    std::fs::write(
        &path,
        b"uri = \"mongodb://ops:S3cr3tPw@h\"\napp_name = \"caf\xe9\"\n",
    )
    .unwrap();
    refused(&path, "poly.toml:2: not UTF-8").await;
}
