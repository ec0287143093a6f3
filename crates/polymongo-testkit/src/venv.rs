//! The cached Python virtual environments that hold the emulated servers (nx-27017, mongoeco).
//!
//! Layout, under the cache root (see [`cache_root`]), one set per [`Flavor`]:
//!
//! ```text
//! venv-<hash>.lock            nx-27017: lock file (exclusive lock while installing)
//! venv-<hash>/venv/           the virtual environment (python -m venv + pip install)
//! venv-<hash>/nx_launcher.py
//! venv-<hash>/READY           written last: its presence means the install is complete
//! mongoeco-<hash>.lock        mongoeco: the same, with mongoeco_launcher.py
//! mongoeco-<hash>/...
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
use crate::python::Python;
use crate::server::ServerKind;

/// One kind of emulated server installed from PyPI: what to install and how to run it.
#[derive(Debug)]
pub(crate) struct Flavor {
    /// The server it installs.
    pub(crate) kind: ServerKind,
    /// Prefix of its cache directory and lock file.
    pub(crate) dir_prefix: &'static str,
    /// The exact packages, the whole dependency closure pinned, so every machine runs the
    /// same server.
    pub(crate) pins: &'static [&'static str],
    /// The launcher script (patches, self-test, then serves).
    pub(crate) launcher: &'static str,
    /// The launcher's file name in the cache.
    pub(crate) launcher_file: &'static str,
    /// How long an install takes here, for the log line.
    pub(crate) install_time: &'static str,
}

/// nx-27017 0.8.1 and its dependencies.
pub(crate) const NX: Flavor = Flavor {
    kind: ServerKind::Nx27017,
    dir_prefix: "venv",
    pins: &[
        "nx-27017==0.8.1",
        "neosqlite==1.17.2",
        "pymongo==4.20.1",
        "dnspython==2.9.2",
    ],
    launcher: include_str!("nx_launcher.py"),
    launcher_file: "nx_launcher.py",
    install_time: "about 6 s",
};

/// mongoeco 4.11.0 with its wire extra, and the whole closure `pip` resolves for it
/// (measured with `pip freeze` in a fresh Python 3.13 environment).
pub(crate) const MONGOECO: Flavor = Flavor {
    kind: ServerKind::MongoEco,
    dir_prefix: "mongoeco",
    pins: &[
        "mongoeco[wire]==4.11.0",
        "attrs==26.1.0",
        "cxp==5.0.0",
        "dnspython==2.9.2",
        "jsonschema==4.26.0",
        "jsonschema-specifications==2025.9.1",
        "msgspec==0.23.0",
        "numkong==7.8.6",
        "numpy==2.5.5",
        "pymongo==4.20.1",
        "pyuca==1.2",
        "referencing==0.37.0",
        "rfc8785==0.1.4",
        "rpds-py==2026.9.1",
        "shapely==2.2.0",
        "tqdm==4.70.1",
        "usearch==2.26.6",
    ],
    launcher: include_str!("mongoeco_launcher.py"),
    launcher_file: "mongoeco_launcher.py",
    install_time: "about 16 s",
};

const READY_MARKER: &str = "READY";

/// A usable installation of one flavor.
#[derive(Debug, Clone)]
pub(crate) struct Install {
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

/// Makes sure `flavor` is installed for the base interpreter `base` and returns how to run
/// it. Blocking (runs python and pip); call it from `spawn_blocking`.
pub(crate) fn ensure(
    flavor: &Flavor,
    base: &Python,
    cache_dir: Option<&Path>,
) -> Result<Install, TestKitError> {
    let mut key: Vec<&str> = flavor.pins.to_vec();
    key.extend([
        flavor.launcher,
        base.executable.as_str(),
        base.version.as_str(),
    ]);
    let hash = fnv1a(&key);

    let root = cache_root(cache_dir);
    let name = format!("{}-{hash:016x}", flavor.dir_prefix);
    let dir = root.join(&name);
    let install = Install {
        python: venv_python(&dir.join("venv")),
        launcher: dir.join(flavor.launcher_file),
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
    let lock_path = root.join(format!("{name}.lock"));
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
        server = %flavor.kind,
        dir = %dir.display(),
        python = %base.executable,
        "installing the test server into a cached virtual environment ({}, once)",
        flavor.install_time
    );
    let result = install_into(flavor, &base.path, &dir, &install);
    drop(lock); // releases the lock
    result.map(|()| install)
}

/// Installs into `dir` (caller holds the lock). Any earlier, unfinished
/// attempt in `dir` is removed first.
fn install_into(
    flavor: &Flavor,
    base_python: &Path,
    dir: &Path,
    install: &Install,
) -> Result<(), TestKitError> {
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
            .args(flavor.pins),
        "pip install",
    )?;
    if !output.status.success() {
        return Err(TestKitError::PipFailed {
            server: flavor.kind,
            cache: dir.to_path_buf(),
            stderr_tail: tail(&combined(&output), 20),
        });
    }

    fs::write(&install.launcher, flavor.launcher)
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
            server: flavor.kind,
            launcher: flavor.launcher_file,
            output_tail: tail(&combined(&output), 20),
        });
    }

    // The marker goes last, atomically: only a complete install is ever used.
    let tmp = dir.join(format!("{READY_MARKER}.tmp"));
    let mut file = File::create(&tmp)
        .map_err(|e| TestKitError::io(format!("creating {}", tmp.display()), e))?;
    writeln!(file, "{}", flavor.pins.join("\n"))
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
    fn flavors_have_distinct_directories_and_pin_everything() {
        assert_ne!(NX.dir_prefix, MONGOECO.dir_prefix);
        for flavor in [&NX, &MONGOECO] {
            assert!(flavor.pins.iter().all(|p| p.contains("==")), "{flavor:?}");
        }
    }

    #[test]
    fn cache_root_prefers_explicit() {
        assert_eq!(cache_root(Some(Path::new("/x/y"))), PathBuf::from("/x/y"));
    }
}
