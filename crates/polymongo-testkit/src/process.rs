//! A server child process: spawn, readiness, stop, kill, reap.
//!
//! The child is a `std::process::Child` (not tokio's) so that dropping a
//! [`ServerProcess`] works outside a tokio runtime: `Drop` kills the child by
//! its own pid (SIGKILL) and waits for it.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use mongodb::bson::doc;

use crate::error::{tail, TestKitError};
use crate::port::log_says_port_in_use;
use crate::probe::{self, as_i64};
use crate::server::ServerKind;

/// Interval between two readiness probes / exit checks.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Lines of log quoted in errors.
const LOG_TAIL_LINES: usize = 30;

/// How to run one server, and the running child if any.
#[derive(Debug)]
pub(crate) struct ServerProcess {
    kind: ServerKind,
    program: PathBuf,
    args: Vec<OsString>,
    cwd: PathBuf,
    /// The child's stdout and stderr (appended across restarts).
    console_log: PathBuf,
    /// Log files the server writes itself and rewrites on each start (mongod).
    own_logs: Vec<PathBuf>,
    pid_file: PathBuf,
    child: Option<Child>,
    /// Length of `console_log` when the current child was spawned.
    console_offset: u64,
}

impl ServerProcess {
    pub(crate) fn new(
        kind: ServerKind,
        program: PathBuf,
        args: Vec<OsString>,
        cwd: PathBuf,
        console_log: PathBuf,
        own_logs: Vec<PathBuf>,
        pid_file: PathBuf,
    ) -> Self {
        ServerProcess {
            kind,
            program,
            args,
            cwd,
            console_log,
            own_logs,
            pid_file,
            child: None,
            console_offset: 0,
        }
    }

    /// The running child's pid.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Spawns the server. A pid file left by an earlier run (e.g. after
    /// SIGKILL) is removed first: nx-27017 refuses to start while its pid file
    /// names a live process.
    pub(crate) fn spawn(&mut self) -> Result<(), TestKitError> {
        if self.child.is_some() {
            return Err(TestKitError::Unsupported(
                "the server process is already running".to_owned(),
            ));
        }
        match fs::remove_file(&self.pid_file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(TestKitError::io(
                    format!("removing the stale pid file {}", self.pid_file.display()),
                    e,
                ))
            }
        }
        let console = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.console_log)
            .map_err(|e| TestKitError::io(format!("opening {}", self.console_log.display()), e))?;
        self.console_offset = console
            .metadata()
            .map_err(|e| TestKitError::io(format!("reading {}", self.console_log.display()), e))?
            .len();
        let stderr = clone_file(&console, &self.console_log)?;
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .current_dir(&self.cwd)
            .env_remove("PYTHONPATH")
            .env_remove("PYTHONHOME")
            .stdin(Stdio::null())
            .stdout(console)
            .stderr(stderr);
        #[cfg(unix)]
        reset_signals(&mut command);
        let child = command.spawn().map_err(|e| {
            TestKitError::io(
                format!("starting {} ({})", self.kind, self.program.display()),
                e,
            )
        })?;
        tracing::debug!(kind = %self.kind, pid = child.id(), "spawned test server");
        self.child = Some(child);
        Ok(())
    }

    /// The exit status if the child has ended (and reaps it).
    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                self.child = None;
                Some(status)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "try_wait on a test server failed");
                None
            }
        }
    }

    /// Everything the server logged since the current child was spawned.
    fn log_since_spawn(&self) -> String {
        let mut text = String::new();
        if let Ok(bytes) = fs::read(&self.console_log) {
            let start = usize::try_from(self.console_offset)
                .unwrap_or(usize::MAX)
                .min(bytes.len());
            text.push_str(&String::from_utf8_lossy(&bytes[start..]));
        }
        for log in &self.own_logs {
            if let Ok(bytes) = fs::read(log) {
                text.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
        text
    }

    /// The last lines of the server's log, for error messages.
    pub(crate) fn log_tail(&self) -> String {
        tail(&self.log_since_spawn(), LOG_TAIL_LINES)
    }

    /// Waits until the server on `port` answers `serverStatus` with the pid of
    /// *our* child (so a different process that grabbed the port never counts
    /// as ready). Fails fast if the child exits: with [`TestKitError::PortInUse`]
    /// when its log says so, else [`TestKitError::ServerExited`]. On timeout the
    /// child is killed and [`TestKitError::StartTimeout`] returned.
    pub(crate) async fn wait_ready(
        &mut self,
        port: u16,
        timeout: Duration,
    ) -> Result<(), TestKitError> {
        let started = Instant::now();
        let deadline = started + timeout;
        let addr = format!("127.0.0.1:{port}");
        loop {
            if let Some(status) = self.exited() {
                let log = self.log_since_spawn();
                if log_says_port_in_use(&log) {
                    return Err(TestKitError::PortInUse { port });
                }
                return Err(TestKitError::ServerExited {
                    kind: self.kind,
                    status: status.to_string(),
                    log_tail: tail(&log, LOG_TAIL_LINES),
                });
            }
            let Some(pid) = self.pid() else {
                return Err(TestKitError::Unsupported(
                    "waiting for a server that is not running".to_owned(),
                ));
            };
            let now = Instant::now();
            if now >= deadline {
                let log_tail = self.log_tail();
                self.kill_blocking();
                return Err(TestKitError::StartTimeout {
                    kind: self.kind,
                    waited: started.elapsed(),
                    log_tail,
                });
            }
            let budget = (deadline - now).min(Duration::from_secs(2));
            let probe = probe::run_command(&addr, "admin", doc! { "serverStatus": 1 }, budget);
            tokio::pin!(probe);
            // Keep watching the child while the probe waits: a process that
            // holds the port without answering must not delay the exit report.
            let answer = loop {
                tokio::select! {
                    answer = &mut probe => break Some(answer),
                    () = tokio::time::sleep(POLL_INTERVAL) => {
                        if self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(Some(_)))) {
                            break None;
                        }
                    }
                }
            };
            let Some(answer) = answer else {
                continue; // the child ended: reported at the top of the loop
            };
            match answer {
                Ok(reply) if reply.get("pid").and_then(as_i64) == Some(i64::from(pid)) => {
                    tracing::debug!(kind = %self.kind, port, pid, elapsed = ?started.elapsed(), "test server ready");
                    return Ok(());
                }
                Ok(reply) => {
                    tracing::debug!(port, other = ?reply.get("pid"), "another process answers on the port");
                }
                Err(_) => {} // not listening yet
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// SIGTERM, then SIGKILL if the child has not ended by `grace`.
    pub(crate) async fn stop(&mut self, grace: Duration) -> Result<(), TestKitError> {
        let Some(pid) = self.pid() else {
            return Ok(());
        };
        send_sigterm(pid);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.exited().is_some() {
                return Ok(());
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        tracing::warn!(kind = %self.kind, pid, ?grace, "test server ignored SIGTERM; killing it");
        self.kill().await
    }

    /// SIGKILL, then reap.
    pub(crate) async fn kill(&mut self) -> Result<(), TestKitError> {
        let Some(child) = self.child.as_mut() else {
            return Ok(());
        };
        if let Err(e) = child.kill() {
            // InvalidInput: it had already exited; reaping below handles it.
            if e.kind() != std::io::ErrorKind::InvalidInput {
                return Err(TestKitError::io("killing the test server", e));
            }
        }
        // After SIGKILL the exit is immediate; poll instead of blocking a worker.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.exited().is_some() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Err(TestKitError::io(
            "waiting for the killed test server to exit",
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "still running 10 s after SIGKILL",
            ),
        ))
    }

    /// SIGKILL and blocking wait; never panics (used by `Drop` and on timeout).
    fn kill_blocking(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill_blocking();
    }
}

fn clone_file(file: &File, path: &Path) -> Result<File, TestKitError> {
    file.try_clone()
        .map_err(|e| TestKitError::io(format!("duplicating the handle of {}", path.display()), e))
}

/// Starts the server with no signal blocked, and SIGTERM and SIGCHLD at their default
/// action, whatever the test process had: a child inherits its parent's signal mask and
/// ignored signals (std's `Command` resets only SIGPIPE), and a shell can hand the tests a
/// blocked SIGCHLD (those of this project's machines do) or an ignored SIGTERM. A server
/// that inherited them would not stop on [`stop`](ServerProcess::stop)'s SIGTERM, or would
/// not hear its own children end.
#[cfg(unix)]
fn reset_signals(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe functions may be called: sigemptyset, sigprocmask and signal are,
    // and nothing here allocates or takes a lock.
    unsafe {
        command.pre_exec(|| {
            let mut none = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
            libc::sigemptyset(none.as_mut_ptr());
            if libc::sigprocmask(libc::SIG_SETMASK, none.as_ptr(), std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            for signal in [libc::SIGTERM, libc::SIGCHLD] {
                if libc::signal(signal, libc::SIG_DFL) == libc::SIG_ERR {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// Sends SIGTERM to `pid` (a child we spawned and have not reaped, so the pid
/// cannot have been reused).
#[cfg(unix)]
fn send_sigterm(pid: u32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is our
    // unreaped child's, so the signal cannot reach an unrelated process.
    let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
    if rc != 0 {
        tracing::debug!(pid, error = %std::io::Error::last_os_error(), "SIGTERM failed");
    }
}

#[cfg(not(unix))]
fn send_sigterm(_pid: u32) {
    // No SIGTERM: `stop` falls back to killing after the grace period.
}
