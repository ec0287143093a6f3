//! A real terminal for the tests that drive the binary's screens: a tmux session on a socket
//! of its own, captured from its pane and killed on drop.

use std::time::Duration;

use super::HANG;

/// Whether tmux is installed (the terminal tests report a skip when it is not).
pub fn tmux_available() -> bool {
    std::process::Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A tmux session of its own (own socket), 140 × 30, killed on drop.
pub struct Tmux {
    socket: String,
}

impl Tmux {
    /// Runs `command` in a new detached session.
    pub fn start(command: &str) -> Self {
        let socket = format!("polymongo-test-{}-{}", std::process::id(), rand_suffix());
        let status = std::process::Command::new("tmux")
            .args([
                "-L",
                &socket,
                "new-session",
                "-d",
                "-x",
                "140",
                "-y",
                "30",
                command,
            ])
            .status()
            .expect("tmux");
        assert!(status.success());
        Self { socket }
    }

    /// Runs a tmux command on this session's server: its standard output.
    pub fn tmux(&self, args: &[&str]) -> String {
        let out = std::process::Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("tmux");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The pane's text now.
    pub fn capture(&self) -> String {
        self.tmux(&["capture-pane", "-p"])
    }

    /// Types `keys` into the pane (`C-c`: Ctrl-C to its foreground process).
    pub fn keys(&self, keys: &str) {
        let status = std::process::Command::new("tmux")
            .args(["-L", &self.socket, "send-keys", keys])
            .status()
            .expect("tmux send-keys");
        assert!(status.success());
    }

    /// Polls the screen until `what` is on it.
    pub async fn wait_for(&self, what: impl Fn(&str) -> bool) -> String {
        let until = tokio::time::Instant::now() + HANG;
        loop {
            let screen = self.capture();
            if what(&screen) {
                return screen;
            }
            assert!(
                tokio::time::Instant::now() < until,
                "never on screen; last:\n{screen}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = std::process::Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .status();
    }
}

/// Sockets of concurrent tests (and runs) must differ.
fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(1);
    h.finish()
}
