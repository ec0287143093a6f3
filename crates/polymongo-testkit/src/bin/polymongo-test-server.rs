//! Starts a local test server the way the test kit would for a test, prints its connection URI
//! and keeps it running until Ctrl-C or SIGTERM — for trying the library, the command-line tool
//! or an example by hand (`mongodb-runner start`, in the spirit).
//!
//! ```text
//! polymongo-test-server [--kind auto|mongod|nx|mongoeco] [--json]
//! ```
//!
//! Standard output gets exactly one line, the URI (or with `--json` one JSON object
//! `{"uri", "kind", "version", "pid"}`), so a script can read it; what a person wants to know —
//! which server, its version, where its files are, how to stop it — goes to standard error.
//! On SIGINT or SIGTERM the server is stopped (SIGTERM, SIGKILL after 10 s; a second signal
//! kills it at once), its temporary directory deleted, and the program exits 0. Exit 1: the
//! server did not start (the message names what is missing) or died on its own; exit 2: bad
//! arguments.

#[cfg(unix)]
fn main() -> std::process::ExitCode {
    unix::main()
}

#[cfg(not(unix))]
fn main() -> std::process::ExitCode {
    eprintln!("polymongo-test-server: the test kit runs on Unix only (Linux, macOS)");
    std::process::ExitCode::FAILURE
}

#[cfg(unix)]
mod unix {
    use std::io::Write as _;
    use std::path::{Path, PathBuf};
    use std::process::ExitCode;
    use std::time::Duration;

    use mongodb::bson::doc;
    use mongodb::options::ClientOptions;
    use mongodb::Client;
    use polymongo_testkit::{ServerKind, ServerOptions, TestServer, ENV_TEST_SERVER};

    const NAME: &str = "polymongo-test-server";
    /// How often the server process is checked for an exit of its own.
    const WATCH_INTERVAL: Duration = Duration::from_millis(200);

    const USAGE: &str = "\
usage: polymongo-test-server [--kind auto|mongod|nx|mongoeco] [--json]

Starts a local MongoDB-compatible test server on 127.0.0.1 (a free port), prints its
connection URI as the first line of standard output, and runs until Ctrl-C or SIGTERM;
then it stops the server, deletes its temporary directory and exits 0.

  --kind KIND  auto (default): mongod when it is on PATH, else nx-27017 (env
               POLYMONGO_TEST_SERVER=nx|mongoeco|mongod forces one, as in tests);
               mongod, nx (nx-27017) or mongoeco (needs Python 3.13+)
  --json       print one JSON line {\"uri\", \"kind\", \"version\", \"pid\"} instead
  -h, --help   print this text

The port is always a free one chosen by the test kit. Exit status: 0 stopped by
Ctrl-C/SIGTERM, 1 the server did not start or died, 2 bad arguments.";

    /// The command line, parsed.
    #[derive(Debug)]
    struct Args {
        kind: Option<ServerKind>,
        json: bool,
    }

    enum Parsed {
        Run(Args),
        Help,
    }

    fn parse(args: impl IntoIterator<Item = String>) -> Result<Parsed, String> {
        let mut parsed = Args {
            kind: None,
            json: false,
        };
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((flag, value)) if flag.starts_with("--") => (flag.to_owned(), Some(value)),
                _ => (arg.clone(), None),
            };
            match flag.as_str() {
                "-h" | "--help" => return Ok(Parsed::Help),
                "--json" if inline.is_none() => parsed.json = true,
                "--kind" => {
                    let value = match inline {
                        Some(value) => value.to_owned(),
                        None => args.next().ok_or("--kind needs a value")?,
                    };
                    parsed.kind = match value.to_ascii_lowercase().as_str() {
                        "auto" => None,
                        "mongod" => Some(ServerKind::Mongod),
                        "nx" | "nx-27017" | "nx27017" => Some(ServerKind::Nx27017),
                        "mongoeco" => Some(ServerKind::MongoEco),
                        _ => {
                            return Err(format!(
                                "unknown server kind {value:?} (use auto, mongod, nx or mongoeco)"
                            ))
                        }
                    };
                }
                "--port" => {
                    return Err("--port is not supported: the test kit always starts its \
                                server on a free port, printed in the URI"
                        .to_owned())
                }
                _ => return Err(format!("unexpected argument {arg:?}")),
            }
        }
        Ok(Parsed::Run(parsed))
    }

    pub(super) fn main() -> ExitCode {
        let args = match parse(std::env::args().skip(1)) {
            Ok(Parsed::Run(args)) => args,
            Ok(Parsed::Help) => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            Err(problem) => {
                note(format_args!("{NAME}: {problem}\n\n{USAGE}"));
                return ExitCode::from(2);
            }
        };
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => {
                note(format_args!("{NAME}: cannot start the async runtime: {e}"));
                return ExitCode::FAILURE;
            }
        };
        let code = runtime.block_on(run(args));
        // An install interrupted by a signal may still be running on a blocking thread.
        runtime.shutdown_timeout(Duration::from_secs(1));
        code
    }

    async fn run(args: Args) -> ExitCode {
        let mut signals = match signals::Signals::install() {
            Ok(signals) => signals,
            Err(e) => {
                note(format_args!("{NAME}: cannot set up signal handling: {e}"));
                return ExitCode::FAILURE;
            }
        };
        // Never an external server (POLYMONGO_TEST_URI): this program starts one it owns.
        let mut opts = ServerOptions::new().managed(true);
        if let Some(kind) = args.kind {
            opts = opts.kind(kind);
        }
        let forced = std::env::var(ENV_TEST_SERVER)
            .ok()
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty() && v != "auto");
        let (what, install) = match (args.kind, forced) {
            (Some(ServerKind::Mongod), _) => ("a mongod".to_owned(), ""),
            (Some(kind), _) => (
                format!("a {kind}"),
                if kind == ServerKind::MongoEco {
                    " (installed on first use: about 16 s, once)"
                } else {
                    " (installed on first use: about 6 s, once)"
                },
            ),
            (None, Some(forced)) => (
                format!("the {ENV_TEST_SERVER}={forced}"),
                " (an emulator is installed on first use, once)",
            ),
            (None, None) => (
                "a local".to_owned(),
                " (mongod if on PATH, else nx-27017, installed on first use: about 6 s, once)",
            ),
        };
        note(format_args!(
            "{NAME}: starting {what} test server{install}…"
        ));
        let started = tokio::select! {
            started = TestServer::start_with(opts) => started,
            Some(signal) = signals.recv() => {
                note(format_args!("{NAME}: {signal} before the server was ready: not starting it"));
                return ExitCode::from(130);
            }
        };
        let mut server = match started {
            Ok(server) => server,
            Err(e) => {
                note(format_args!("{NAME}: the test server did not start: {e}"));
                return ExitCode::FAILURE;
            }
        };
        let (uri, kind, pid) = (server.uri().to_owned(), server.kind(), server.pid());
        let version = server_version(&uri).await;
        let dir = pid.and_then(instance_dir);

        let first_line = if args.json {
            format!(
                "{{\"uri\":{},\"kind\":{},\"version\":{},\"pid\":{}}}",
                json_string(&uri),
                json_string(&kind.to_string()),
                version.as_deref().map_or("null".to_owned(), json_string),
                pid.map_or("null".to_owned(), |p| p.to_string()),
            )
        } else {
            uri.clone()
        };
        let mut stdout = std::io::stdout().lock();
        if writeln!(stdout, "{first_line}")
            .and_then(|()| stdout.flush())
            .is_err()
        {
            note(format_args!(
                "{NAME}: cannot write the URI to standard output; stopping the server"
            ));
            let _ = server.stop().await;
            return ExitCode::FAILURE;
        }
        drop(stdout);
        describe(&server, version.as_deref(), dir.as_deref());

        let signal = match pid {
            Some(pid) => tokio::select! {
                biased; // a Ctrl-C in a terminal reaches the server too: report the signal
                Some(signal) = signals.recv() => signal,
                () = exited_on_its_own(pid) => {
                    note(format_args!(
                        "{NAME}: the {kind} server (pid {pid}) exited on its own; last lines of \
                         its log:\n{}",
                        dir.as_deref().map_or("(log not found)".to_owned(), |d| log_tail(d, kind))
                    ));
                    let _ = server.stop().await; // reaps it
                    return ExitCode::FAILURE;
                }
            },
            None => signals.recv().await.unwrap_or("end of signals"),
        };
        note(format_args!(
            "{NAME}: {signal}: stopping the {kind} server…"
        ));
        let stopping = std::time::Instant::now();
        enum Stopped {
            Done(Result<(), polymongo_testkit::TestKitError>),
            Again(&'static str),
        }
        let stopped = tokio::select! {
            result = server.stop() => Stopped::Done(result),
            Some(again) = signals.recv() => Stopped::Again(again),
        };
        let result = match stopped {
            Stopped::Done(result) => result,
            Stopped::Again(again) => {
                note(format_args!("{NAME}: {again} again: killing the server"));
                server.kill().await
            }
        };
        match result {
            Ok(()) => {
                drop(server); // deletes its temporary directory
                note(format_args!(
                    "{NAME}: stopped in {} ms",
                    stopping.elapsed().as_millis()
                ));
                ExitCode::SUCCESS
            }
            Err(e) => {
                note(format_args!("{NAME}: stopping the server failed: {e}"));
                ExitCode::FAILURE
            }
        }
    }

    /// The version the server reports (`buildInfo`), `None` when it does not answer.
    async fn server_version(uri: &str) -> Option<String> {
        let mut options = ClientOptions::parse(uri).await.ok()?;
        options.server_selection_timeout = Some(Duration::from_secs(5));
        options.app_name = Some(NAME.to_owned());
        let client = Client::with_options(options).ok()?;
        let reply = client
            .database("admin")
            .run_command(doc! { "buildInfo": 1 })
            .await;
        client.shutdown().await;
        reply.ok()?.get_str("version").ok().map(str::to_owned)
    }

    /// The human notes, on standard error.
    fn describe(server: &TestServer, version: Option<&str>, dir: Option<&Path>) {
        let kind = server.kind();
        let version = match (kind, version) {
            (ServerKind::Mongod, Some(v)) => format!("MongoDB {v}"),
            (_, Some(v)) => format!("an emulator; it reports MongoDB {v}"),
            (_, None) => "version unknown (buildInfo did not answer)".to_owned(),
        };
        let pid = server.pid().map_or("?".to_owned(), |pid| pid.to_string());
        let port = server
            .port()
            .map_or("?".to_owned(), |port| port.to_string());
        note(format_args!(
            "{NAME}: {kind} ({version}), pid {pid}, listening on 127.0.0.1:{port} only"
        ));
        let at = |sub: &str| match dir {
            Some(dir) => format!(" in {}", dir.join(sub).display()),
            None => String::new(),
        };
        match kind {
            ServerKind::Mongod => note(format_args!(
                "{NAME}: single-node replica set `testkit`; data{}, log{}",
                at("db"),
                at("mongod.log")
            )),
            _ => note(format_args!(
                "{NAME}: data in memory, gone when the server stops; console log{}",
                at("console.log")
            )),
        }
        note(format_args!(
            "{NAME}: the directory is deleted on exit. Stop with Ctrl-C (or kill -TERM {})",
            std::process::id()
        ));
        if kind != ServerKind::Mongod {
            note(format_args!(
                "{NAME}: nx-27017 and mongoeco are not MongoDB: see the test kit's QUIRKS.md"
            ));
        }
    }

    /// The server's working directory, which the kit makes its temporary directory (Linux).
    fn instance_dir(pid: u32) -> Option<PathBuf> {
        std::fs::read_link(format!("/proc/{pid}/cwd")).ok()
    }

    /// The last lines of the server's logs in its directory `dir`.
    fn log_tail(dir: &Path, kind: ServerKind) -> String {
        const LINES: usize = 20;
        let mut text = std::fs::read_to_string(dir.join("console.log")).unwrap_or_default();
        if kind == ServerKind::Mongod {
            text.push_str(&std::fs::read_to_string(dir.join("mongod.log")).unwrap_or_default());
        }
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(LINES)..].join("\n")
    }

    /// Resolves when the child `pid` has exited, without reaping it (the kit does that).
    async fn exited_on_its_own(pid: u32) {
        let id = libc::id_t::from(pid);
        loop {
            // SAFETY: `info` is a valid, zeroed siginfo_t that waitid fills in; WNOWAIT leaves
            // the child waitable, so the kit's own `Child` still reaps it.
            let (rc, signo) = unsafe {
                let mut info: libc::siginfo_t = std::mem::zeroed();
                let rc = libc::waitid(
                    libc::P_PID,
                    id,
                    &mut info,
                    libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
                );
                (rc, info.si_signo)
            };
            let gone = if rc == 0 {
                signo != 0
            } else {
                // ECHILD: already reaped (not ours to wait for any more).
                std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD)
            };
            if gone {
                return;
            }
            tokio::time::sleep(WATCH_INTERVAL).await;
        }
    }

    /// `text` as a JSON string literal.
    fn json_string(text: &str) -> String {
        let mut out = String::with_capacity(text.len() + 2);
        out.push('"');
        for c in text.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }

    /// A line on standard error (never panics, unlike `eprintln!`).
    fn note(text: std::fmt::Arguments<'_>) {
        let _ = writeln!(std::io::stderr().lock(), "{text}");
    }

    /// SIGINT and SIGTERM, delivered to async code (`tokio::signal`: handlers, not a blocked
    /// mask — `std::process::Command` hands a blocked mask on to its children,
    /// rust-lang/rust#101077, and the server would ignore the kit's SIGTERM).
    mod signals {
        use tokio::signal::unix::{signal, Signal, SignalKind};

        pub(in super::super) struct Signals {
            interrupt: Signal,
            terminate: Signal,
        }

        impl Signals {
            /// Installs the handlers (inside the runtime, before any child is spawned).
            pub(in super::super) fn install() -> std::io::Result<Self> {
                Ok(Self {
                    interrupt: signal(SignalKind::interrupt())?,
                    terminate: signal(SignalKind::terminate())?,
                })
            }

            /// The next signal's name (cancel-safe). `None` once no more can come.
            pub(in super::super) async fn recv(&mut self) -> Option<&'static str> {
                tokio::select! {
                    got = self.interrupt.recv() => got.map(|()| "SIGINT"),
                    got = self.terminate.recv() => got.map(|()| "SIGTERM"),
                }
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn args(list: &[&str]) -> Result<Parsed, String> {
            parse(list.iter().map(|s| (*s).to_owned()))
        }

        #[test]
        fn kinds_parse_in_both_spellings() {
            for (given, kind) in [
                (&["--kind", "nx"][..], Some(ServerKind::Nx27017)),
                (&["--kind=mongoeco"][..], Some(ServerKind::MongoEco)),
                (
                    &["--kind", "mongod", "--json"][..],
                    Some(ServerKind::Mongod),
                ),
                (&["--kind", "auto"][..], None),
                (&[][..], None),
            ] {
                let Ok(Parsed::Run(parsed)) = args(given) else {
                    panic!("{given:?} should parse");
                };
                assert_eq!(parsed.kind, kind, "{given:?}");
            }
        }

        #[test]
        fn bad_arguments_say_what_is_wrong() {
            for (given, says) in [
                (&["--kind"][..], "needs a value"),
                (&["--kind", "postgres"][..], "unknown server kind"),
                (&["--port", "27017"][..], "free port"),
                (&["--json=yes"][..], "unexpected argument"),
                (&["start"][..], "unexpected argument"),
            ] {
                match args(given) {
                    Err(problem) => assert!(problem.contains(says), "{given:?}: {problem}"),
                    Ok(_) => panic!("{given:?} should be refused"),
                }
            }
        }

        #[test]
        fn json_strings_are_escaped() {
            assert_eq!(json_string("a\"b\\c\n\u{1}"), r#""a\"b\\c\n\u0001""#);
        }
    }
}
