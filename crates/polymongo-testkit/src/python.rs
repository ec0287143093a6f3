//! Finding a Python interpreter for a server's virtual environment.
//!
//! nx-27017 runs on Python 3.11 to 3.14: the interpreter is `ServerOptions::python`, env
//! `POLYMONGO_TEST_PYTHON`, else `python3` / `python` on PATH ([`find_for_nx`]).
//!
//! mongoeco needs Python 3.13 or newer, which a machine often has beside an older default
//! `python3` (pyenv, deadsnakes, Homebrew): [`find_for_mongoeco`] looks where a user's machine
//! would have one — `ServerOptions::python`, env `POLYMONGO_MONGOECO_PYTHON`, then
//! `python3.14`, `python3.13`, `python3`, `python` on PATH, then pyenv's installed versions
//! (`$PYENV_ROOT/versions/*/bin/python3`, default `~/.pyenv`), newest first — and asks each
//! candidate its version (a pyenv shim on PATH may name a version that is not selected and fail:
//! it is skipped, not trusted).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::error::{tail, TestKitError};
use crate::server::ServerKind;

/// Env var naming the interpreter for mongoeco's environment (Python 3.13+).
pub(crate) const ENV_MONGOECO_PYTHON: &str = "POLYMONGO_MONGOECO_PYTHON";

/// A base interpreter that answered, with what it said about itself.
#[derive(Debug, Clone)]
pub(crate) struct Python {
    /// The path the kit runs.
    pub(crate) path: PathBuf,
    /// `sys.executable` (the real binary behind a shim or symlink).
    pub(crate) executable: String,
    /// `major.minor.micro`.
    pub(crate) version: String,
    /// `(major, minor)`.
    pub(crate) major_minor: (u32, u32),
}

/// Finds the base interpreter for nx-27017: `explicit`, env `POLYMONGO_TEST_PYTHON`, then
/// `python3` and `python` on PATH; then checks that it is Python 3.11 to 3.14.
pub(crate) fn find_for_nx(explicit: Option<&Path>) -> Result<Python, TestKitError> {
    let path = if let Some(path) = explicit {
        check_executable(path, "ServerOptions::python")?
    } else if let Some(path) = std::env::var_os("POLYMONGO_TEST_PYTHON").filter(|v| !v.is_empty()) {
        check_executable(Path::new(&path), "POLYMONGO_TEST_PYTHON")?
    } else {
        let path_var = std::env::var_os("PATH").unwrap_or_default();
        ["python3", "python"]
            .iter()
            .find_map(|name| find_on_path(name, &path_var))
            .ok_or_else(|| TestKitError::NoPython {
                detail: format!(
                    "neither python3 nor python is on PATH={:?}",
                    path_var.to_string_lossy()
                ),
            })?
    };
    let python = ask(&path)?;
    if python.major_minor.0 == 3 && (11..=14).contains(&python.major_minor.1) {
        Ok(python)
    } else {
        Err(TestKitError::PythonUnsupported {
            server: ServerKind::Nx27017,
            needs: "3.11 to 3.14",
            python: path,
            version: python.version,
        })
    }
}

/// Finds a Python 3.13+ for mongoeco (see the module docs for the order).
///
/// An explicit interpreter (`ServerOptions::python` or `POLYMONGO_MONGOECO_PYTHON`) must work
/// and be new enough, or this fails saying so. Without one, the search result is computed once
/// per process.
pub(crate) fn find_for_mongoeco(explicit: Option<&Path>) -> Result<Python, TestKitError> {
    let chosen = if let Some(path) = explicit {
        Some((
            check_executable(path, "ServerOptions::python")?,
            "ServerOptions::python",
        ))
    } else if let Some(path) = std::env::var_os(ENV_MONGOECO_PYTHON).filter(|v| !v.is_empty()) {
        Some((
            check_executable(Path::new(&path), ENV_MONGOECO_PYTHON)?,
            ENV_MONGOECO_PYTHON,
        ))
    } else {
        None
    };
    if let Some((path, _source)) = chosen {
        let python = ask(&path)?;
        return if is_mongoeco_version(python.major_minor) {
            Ok(python)
        } else {
            Err(TestKitError::PythonUnsupported {
                server: ServerKind::MongoEco,
                needs: "3.13 or newer",
                python: path,
                version: python.version,
            })
        };
    }
    static SEARCH: OnceLock<Result<Python, String>> = OnceLock::new();
    SEARCH
        .get_or_init(search_for_mongoeco)
        .clone()
        .map_err(|detail| TestKitError::NoMongoEcoPython { detail })
}

fn is_mongoeco_version((major, minor): (u32, u32)) -> bool {
    major == 3 && minor >= 13
}

/// PATH first, then pyenv's versions; the reason for failure lists what was tried.
fn search_for_mongoeco() -> Result<Python, String> {
    let mut tried = Vec::new();
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    for name in ["python3.14", "python3.13", "python3", "python"] {
        let Some(path) = find_on_path(name, &path_var) else {
            continue;
        };
        match ask(&path) {
            Ok(python) if is_mongoeco_version(python.major_minor) => return Ok(python),
            Ok(python) => tried.push(format!("{} is {}", path.display(), python.version)),
            Err(_) => tried.push(format!("{} does not run", path.display())),
        }
    }
    let root = pyenv_root();
    let mut versions: Vec<((u32, u32, u32), PathBuf)> = match &root {
        Some(root) => std::fs::read_dir(root.join("versions"))
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter_map(|e| {
                        let name = e.file_name().to_string_lossy().into_owned();
                        let version = parse_version(&name)?;
                        Some((version, e.path().join("bin").join("python3")))
                    })
                    .collect()
            })
            .unwrap_or_default(),
        None => Vec::new(),
    };
    versions.sort_by_key(|v| std::cmp::Reverse(v.0));
    for ((major, minor, _), path) in versions {
        if !is_mongoeco_version((major, minor)) || !is_executable(&path) {
            continue;
        }
        match ask(&path) {
            Ok(python) if is_mongoeco_version(python.major_minor) => return Ok(python),
            Ok(python) => tried.push(format!("{} is {}", path.display(), python.version)),
            Err(_) => tried.push(format!("{} does not run", path.display())),
        }
    }
    let pyenv = match root {
        Some(root) => format!("no 3.13+ under {}/versions", root.display()),
        None => "no pyenv root (PYENV_ROOT, ~/.pyenv)".to_owned(),
    };
    tried.push(pyenv);
    Err(tried.join("; "))
}

fn pyenv_root() -> Option<PathBuf> {
    if let Some(root) = std::env::var_os("PYENV_ROOT").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(root));
    }
    let home = std::env::var_os("HOME").filter(|v| !v.is_empty())?;
    let root = PathBuf::from(home).join(".pyenv");
    root.is_dir().then_some(root)
}

/// `"3.13.0"` → `(3, 13, 0)`; names like `3.13-dev`, `pypy3.10-7.3` or `miniconda3` → `None`.
fn parse_version(name: &str) -> Option<(u32, u32, u32)> {
    let mut parts = name.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    let micro = match parts.next() {
        Some(p) => p.parse().ok()?,
        None => 0,
    };
    parts.next().is_none().then_some((major, minor, micro))
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
    let Ok(meta) = std::fs::metadata(path) else {
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

/// Runs the interpreter and asks its real executable and version.
fn ask(path: &Path) -> Result<Python, TestKitError> {
    let output = Command::new(path)
        .args([
            "-I",
            "-c",
            "import sys; print(sys.executable); print('%d.%d.%d' % sys.version_info[:3])",
        ])
        .env_remove("PYTHONPATH")
        .env_remove("PYTHONHOME")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| TestKitError::NoPython {
            detail: format!("running {} failed: {e}", path.display()),
        })?;
    if !output.status.success() {
        return Err(TestKitError::NoPython {
            detail: format!(
                "{} exited with {}: {}",
                path.display(),
                output.status,
                tail(&String::from_utf8_lossy(&output.stderr), 5)
            ),
        });
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut lines = stdout.lines();
    let executable = lines.next().unwrap_or_default().trim().to_owned();
    let version = lines.next().unwrap_or_default().trim().to_owned();
    let Some((major, minor, _)) = parse_version(&version) else {
        return Err(TestKitError::NoPython {
            detail: format!(
                "{} printed no version: {:?}",
                path.display(),
                tail(&stdout, 3)
            ),
        });
    };
    Ok(Python {
        path: path.to_path_buf(),
        executable,
        version,
        major_minor: (major, minor),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_odd_names_do_not() {
        assert_eq!(parse_version("3.13.0"), Some((3, 13, 0)));
        assert_eq!(parse_version("3.14"), Some((3, 14, 0)));
        for odd in ["3.13-dev", "pypy3.10-7.3.12", "miniconda3", "3.13.0.1", ""] {
            assert_eq!(parse_version(odd), None, "{odd}");
        }
        assert!(is_mongoeco_version((3, 13)) && is_mongoeco_version((3, 14)));
        assert!(!is_mongoeco_version((3, 12)) && !is_mongoeco_version((2, 7)));
    }

    #[test]
    fn path_lookup_and_missing_interpreters() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(find_on_path("python3", dir.path().as_os_str()).is_none());
        let err = find_for_nx(Some(&dir.path().join("python3"))).expect_err("missing");
        assert!(matches!(err, TestKitError::NoPython { .. }), "{err}");
        let err = find_for_mongoeco(Some(&dir.path().join("python3"))).expect_err("missing");
        assert!(matches!(err, TestKitError::NoPython { .. }), "{err}");
    }
}
