//! The cached Python virtual environment that holds nx-27017.
//!
//! Layout, under the cache root (see [`cache_root`]):
//!
//! ```text
//! venv-<hash>.lock        lock file (exclusive lock while installing)
//! venv-<hash>/venv/       the virtual environment (python3 -m venv + pip install)
//! venv-<hash>/nx_launcher.py
//! venv-<hash>/READY       written last: its presence means the install is complete
//! ```
//!
//! `<hash>` covers the pinned packages, the launcher's text and the base
//! interpreter (path and version), so changing any of them installs afresh.
//!
//! Many test processes start at once (cargo-nextest runs one process per test),
//! so installation is race-free: a process that does not see `READY` takes an
//! exclusive lock on the lock file (`File::lock`, i.e. `flock`), checks again,
//! removes any half-finished directory, installs, verifies the launcher's
//! patches, and writes `READY` (via a rename) last. A process that sees `READY`
//! never takes the lock and never touches the directory.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::error::{tail, TestKitError};

/// The exact packages installed into the environment. nx-27017 and its whole
/// dependency closure are pinned, so every machine runs the same server.
pub(crate) const PINS: &[&str] = &[
    "nx-27017==0.8.1",
    "neosqlite==1.17.2",
    "pymongo==4.20.1",
    "dnspython==2.9.2",
];

/// The launcher script (patches nx-27017's change streams, then runs it).
pub(crate) const LAUNCHER: &str = include_str!("nx_launcher.py");

const READY_MARKER: &str = "READY";

/// A usable nx-27017 installation.
#[derive(Debug, Clone)]
pub(crate) struct NxInstall {
    /// The environment's interpreter.
    pub(crate) python: PathBuf,
    /// The launcher script.
    pub(crate) launcher: PathBuf,
}

/// Where cached environments live.
///
/// In order: `explicit` (from `ServerOptions::cache_dir`), env
/// `POLYMONGO_TESTKIT_CACHE`, `$CARGO_TARGET_DIR/polymongo-testkit` (when
/// absolute), `<the "target" ancestor of the running executable>/polymongo-testkit`,
/// else `<system temp dir>/polymongo-testkit`.
pub(crate) fn cache_root(explicit: Option<&Path>) -> PathBuf {
    if let Some(dir) = explicit {
        return dir.to_path_buf();
    }
    if let Some(dir) = std::env::var_os("POLYMONGO_TESTKIT_CACHE").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from) {
        // A relative CARGO_TARGET_DIR is relative to where cargo ran, which a
        // test binary cannot know (its cwd is the package root); skip it.
        if dir.is_absolute() {
            return dir.join("polymongo-testkit");
        }
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(target) = exe
            .ancestors()
            .find(|p| p.file_name().is_some_and(|n| n == "target"))
        {
            return target.join("polymongo-testkit");
        }
    }
    std::env::temp_dir().join("polymongo-testkit")
}

/// Finds the base interpreter: `explicit`, env `POLYMONGO_TEST_PYTHON`, then
/// `python3` and `python` on PATH.
pub(crate) fn find_python(explicit: Option<&Path>) -> Result<PathBuf, TestKitError> {
    if let Some(path) = explicit {
        return check_executable(path, "ServerOptions::python");
    }
    if let Some(path) = std::env::var_os("POLYMONGO_TEST_PYTHON").filter(|v| !v.is_empty()) {
        return check_executable(Path::new(&path), "POLYMONGO_TEST_PYTHON");
    }
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    for name in ["python3", "python"] {
        if let Some(found) = find_on_path(name, &path_var) {
            return Ok(found);
        }
    }
    Err(TestKitError::NoPython {
        detail: format!(
            "neither python3 nor python is on PATH={:?}",
            path_var.to_string_lossy()
        ),
    })
}

fn check_executable(path: &Path, source: &str) -> Result<PathBuf, TestKitError> {
    if is_executable(path) {
        Ok(path.to_path_buf())
    } else {
        Err(TestKitError::NoPython {
            detail: format!(
                "{} (from {source}) is not an executable file",
                path.display()
            ),
        })
    }
}

/// Looks `name` up in a PATH-style list of directories.
pub(crate) fn find_on_path(name: &str, path_var: &std::ffi::OsStr) -> Option<PathBuf> {
    std::env::split_paths(path_var)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    let Ok(meta) = fs::metadata(path) else {
        return false;
    };
    if !meta.is_file() {
        return false;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        meta.permissions().mode() & 0o111 != 0
    }
    #[cfg(not(unix))]
    {
        true
    }
}

/// The base interpreter's real executable and version.
struct PythonInfo {
    executable: String,
    version: String,
}

fn python_info(python: &Path) -> Result<PythonInfo, TestKitError> {
    let output = Command::new(python)
        .args([
            "-I",
            "-c",
            "import sys; print(sys.executable); print('%d.%d.%d' % sys.version_info[:3])",
        ])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| TestKitError::NoPython {
            detail: format!("running {} failed: {e}", python.display()),
        })?;
    if !output.status.success() {
        return Err(TestKitError::NoPython {
            detail: format!(
                "{} exited with {}: {}",
                python.display(),
                output.status,
                tail(&String::from_utf8_lossy(&output.stderr), 5)
            ),
        });
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut lines = stdout.lines();
    let executable = lines.next().unwrap_or_default().trim().to_owned();
    let version = lines.next().unwrap_or_default().trim().to_owned();
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    let (major, minor) = (parts.next().flatten(), parts.next().flatten());
    match (major, minor) {
        (Some(3), Some(minor)) if (11..=14).contains(&minor) => Ok(PythonInfo {
            executable,
            version,
        }),
        _ => Err(TestKitError::PythonUnsupported {
            python: python.to_path_buf(),
            version,
        }),
    }
}

/// FNV-1a, 64 bit: a stable hash (std's `DefaultHasher` may change between
/// Rust releases, which would needlessly reinstall).
fn fnv1a(parts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.bytes().chain(std::iter::once(0u8)) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

/// The environment's interpreter inside `venv`.
fn venv_python(venv: &Path) -> PathBuf {
    if cfg!(windows) {
        venv.join("Scripts").join("python.exe")
    } else {
        venv.join("bin").join("python")
    }
}

/// Makes sure nx-27017 is installed and returns how to run it. Blocking (runs
/// python and pip); call it from `spawn_blocking`.
pub(crate) fn ensure(
    python: Option<&Path>,
    cache_dir: Option<&Path>,
) -> Result<NxInstall, TestKitError> {
    let base_python = find_python(python)?;
    let info = python_info(&base_python)?;
    let mut key: Vec<&str> = PINS.to_vec();
    key.extend([LAUNCHER, info.executable.as_str(), info.version.as_str()]);
    let hash = fnv1a(&key);

    let root = cache_root(cache_dir);
    let dir = root.join(format!("venv-{hash:016x}"));
    let install = NxInstall {
        python: venv_python(&dir.join("venv")),
        launcher: dir.join("nx_launcher.py"),
    };
    if dir.join(READY_MARKER).is_file() {
        return Ok(install);
    }

    fs::create_dir_all(&root).map_err(|e| {
        TestKitError::io(
            format!("creating the cache directory {}", root.display()),
            e,
        )
    })?;
    let lock_path = root.join(format!("venv-{hash:016x}.lock"));
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| {
            TestKitError::io(format!("opening the lock file {}", lock_path.display()), e)
        })?;
    lock.lock()
        .map_err(|e| TestKitError::io(format!("locking {}", lock_path.display()), e))?;
    // Another process may have finished the install while we waited.
    if dir.join(READY_MARKER).is_file() {
        return Ok(install);
    }
    tracing::info!(
        dir = %dir.display(),
        python = %info.executable,
        "installing nx-27017 into a cached virtual environment (about 6 s, once)"
    );
    let result = install_into(&base_python, &dir, &install);
    drop(lock); // releases the lock
    result.map(|()| install)
}

/// Installs into `dir` (caller holds the lock). Any earlier, unfinished
/// attempt in `dir` is removed first.
fn install_into(base_python: &Path, dir: &Path, install: &NxInstall) -> Result<(), TestKitError> {
    if dir.exists() {
        fs::remove_dir_all(dir).map_err(|e| {
            TestKitError::io(
                format!("removing the unfinished install {}", dir.display()),
                e,
            )
        })?;
    }
    fs::create_dir_all(dir)
        .map_err(|e| TestKitError::io(format!("creating {}", dir.display()), e))?;
    let venv = dir.join("venv");

    let output = run(
        Command::new(base_python)
            .arg("-I")
            .arg("-m")
            .arg("venv")
            .arg(&venv),
        "python -m venv",
    )?;
    if !output.status.success() {
        return Err(TestKitError::VenvFailed {
            path: venv,
            stderr_tail: tail(&combined(&output), 20),
        });
    }

    let output = run(
        Command::new(&install.python)
            .args([
                "-I",
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-input",
                "-q",
            ])
            .args(PINS),
        "pip install",
    )?;
    if !output.status.success() {
        return Err(TestKitError::PipFailed {
            cache: dir.to_path_buf(),
            stderr_tail: tail(&combined(&output), 20),
        });
    }

    fs::write(&install.launcher, LAUNCHER)
        .map_err(|e| TestKitError::io(format!("writing {}", install.launcher.display()), e))?;
    let output = run(
        Command::new(&install.python)
            .args(["-I", "-u"])
            .arg(&install.launcher)
            .arg("--self-test"),
        "the launcher self-test",
    )?;
    if !output.status.success() {
        return Err(TestKitError::PatchFailed {
            output_tail: tail(&combined(&output), 20),
        });
    }

    // The marker goes last, atomically: only a complete install is ever used.
    let tmp = dir.join(format!("{READY_MARKER}.tmp"));
    let mut file = File::create(&tmp)
        .map_err(|e| TestKitError::io(format!("creating {}", tmp.display()), e))?;
    writeln!(file, "{}", PINS.join("\n"))
        .and_then(|()| file.sync_all())
        .map_err(|e| TestKitError::io(format!("writing {}", tmp.display()), e))?;
    fs::rename(&tmp, dir.join(READY_MARKER))
        .map_err(|e| TestKitError::io(format!("renaming {} into place", tmp.display()), e))?;
    Ok(())
}

fn run(command: &mut Command, what: &str) -> Result<Output, TestKitError> {
    command
        .env_remove("PYTHONPATH")
        .env_remove("PYTHONHOME")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| TestKitError::io(format!("running {what}"), e))
}

fn combined(output: &Output) -> String {
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable_and_separates_parts() {
        assert_eq!(fnv1a(&[]), 0xcbf2_9ce4_8422_2325);
        assert_ne!(fnv1a(&["ab", "c"]), fnv1a(&["a", "bc"]));
        assert_eq!(fnv1a(&["x"]), fnv1a(&["x"]));
    }

    #[test]
    fn path_lookup() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(find_on_path("python3", dir.path().as_os_str()).is_none());
        let err = find_python(Some(&dir.path().join("python3"))).expect_err("missing");
        assert!(matches!(err, TestKitError::NoPython { .. }), "{err}");
    }

    #[test]
    fn cache_root_prefers_explicit() {
        assert_eq!(cache_root(Some(Path::new("/x/y"))), PathBuf::from("/x/y"));
    }
}
