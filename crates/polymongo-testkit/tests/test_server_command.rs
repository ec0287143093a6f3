//! The `polymongo-test-server` program, run as a user would: the URI on the first line of
//! stdout serves a plain driver client, SIGINT / SIGTERM stop the server and exit 0 with no
//! process left, `--json` describes the server, bad flags exit 2 and a server that cannot start
//! exits 1 naming what is missing.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use mongodb::bson::{doc, Bson, Document};
use mongodb::options::ClientOptions;
use mongodb::Client;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};
use tokio::task::JoinHandle;

const BIN: &str = env!("CARGO_BIN_EXE_polymongo-test-server");
/// Until the URI line: a first run may install the emulator (about 6 s; 16 s for mongoeco).
const START_DEADLINE: Duration = Duration::from_secs(120);
/// From the signal to the exit (the kit's stop waits 10 s before it kills).
const STOP_DEADLINE: Duration = Duration::from_secs(20);

/// The program, running, with its first stdout line read.
struct Running {
    child: Child,
    pid: u32,
    first_line: String,
    stdout: BufReader<ChildStdout>,
    stderr: JoinHandle<String>,
}

fn command(args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(args)
        // A server the program owns, whatever the test run points at.
        .env_remove("POLYMONGO_TEST_URI")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

async fn start(mut command: Command) -> Running {
    let mut child = command.spawn().expect("the program starts");
    let pid = child.id().expect("pid");
    let mut stderr = child.stderr.take().expect("stderr");
    let stderr = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut first_line = String::new();
    let read = tokio::time::timeout(START_DEADLINE, stdout.read_line(&mut first_line)).await;
    if !matches!(read, Ok(Ok(n)) if n > 0) {
        let _ = child.start_kill();
        let stderr = stderr.await.unwrap_or_default();
        panic!("no first line within {START_DEADLINE:?} ({read:?}); stderr:\n{stderr}");
    }
    Running {
        child,
        pid,
        first_line: first_line.trim_end().to_owned(),
        stdout,
        stderr,
    }
}

impl Running {
    fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on our own unreaped child.
        let rc = unsafe { libc::kill(libc::pid_t::try_from(self.pid).expect("pid"), signal) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    }

    /// Waits for the exit within [`STOP_DEADLINE`]: (exit code, the rest of stdout, stderr).
    async fn exit(mut self) -> (Option<i32>, String, String) {
        let started = Instant::now();
        let status = tokio::time::timeout(STOP_DEADLINE, self.child.wait()).await;
        let Ok(status) = status else {
            let _ = self.child.start_kill();
            let stderr = self.stderr.await.unwrap_or_default();
            panic!("still running {STOP_DEADLINE:?} after the signal; stderr:\n{stderr}");
        };
        let status = status.expect("wait");
        eprintln!("exited {status} {:?} after the signal", started.elapsed());
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).await.expect("stdout");
        let stderr = self.stderr.await.expect("stderr task");
        (status.code(), rest, stderr)
    }
}

/// The server's pid, from the notes on stderr ("…, pid 1234, listening on …").
fn server_pid(stderr: &str) -> u32 {
    stderr
        .split(", pid ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no server pid in stderr:\n{stderr}"))
}

fn port_of(uri: &str) -> u16 {
    uri.strip_prefix("mongodb://127.0.0.1:")
        .and_then(|rest| rest.split(['/', '?']).next())
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("not a 127.0.0.1 URI with a port: {uri}"))
}

/// Whether something still accepts connections on 127.0.0.1:`port`.
async fn accepts(port: u16) -> bool {
    tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect(("127.0.0.1", port)),
    )
    .await
    .is_ok_and(|connected| connected.is_ok())
}

fn process_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// A flat JSON object of strings, numbers and nulls (what `--json` prints), as raw values:
/// strings unescaped, numbers and `null` as written. Panics on anything else.
fn flat_json(line: &str) -> BTreeMap<String, String> {
    fn string(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> String {
        assert_eq!(chars.next(), Some('"'), "a string");
        let mut out = String::new();
        loop {
            match chars.next().expect("unterminated string") {
                '"' => return out,
                '\\' => match chars.next().expect("escape") {
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    'u' => {
                        let hex: String = chars.by_ref().take(4).collect();
                        let code = u32::from_str_radix(&hex, 16).expect("\\u escape");
                        out.push(char::from_u32(code).expect("a char"));
                    }
                    c => out.push(c),
                },
                c => out.push(c),
            }
        }
    }
    let mut chars = line.trim().chars().peekable();
    let mut object = BTreeMap::new();
    assert_eq!(chars.next(), Some('{'), "an object: {line}");
    loop {
        let key = string(&mut chars);
        assert_eq!(chars.next(), Some(':'), "{line}");
        let value = if chars.peek() == Some(&'"') {
            string(&mut chars)
        } else {
            let mut raw = String::new();
            while let Some(&c) = chars.peek() {
                if c == ',' || c == '}' {
                    break;
                }
                raw.push(c);
                chars.next();
            }
            assert!(
                raw == "null" || raw.parse::<i64>().is_ok(),
                "value {raw:?} in {line}"
            );
            raw
        };
        assert!(object.insert(key, value).is_none(), "duplicate key: {line}");
        match chars.next() {
            Some(',') => continue,
            Some('}') => break,
            other => panic!("unexpected {other:?} in {line}"),
        }
    }
    assert_eq!(chars.next(), None, "one object on the line: {line}");
    object
}

async fn client(uri: &str) -> Client {
    let mut options = ClientOptions::parse(uri).await.expect("the URI parses");
    options.server_selection_timeout = Some(Duration::from_secs(10));
    Client::with_options(options).expect("client")
}

#[tokio::test]
async fn the_uri_line_serves_a_driver_until_sigint_then_nothing_is_left() {
    let running = start(command(&[])).await;
    let uri = running.first_line.clone();
    let port = port_of(&uri);

    let client = client(&uri).await;
    let pong = client
        .database("admin")
        .run_command(doc! { "ping": 1 })
        .await
        .expect("ping through the printed URI");
    assert!(
        matches!(
            pong.get("ok"),
            Some(Bson::Double(1.0) | Bson::Int32(1) | Bson::Int64(1))
        ),
        "{pong}"
    );
    let users = client.database("bin_test").collection::<Document>("users");
    users
        .insert_one(doc! { "_id": 1, "name": "ada" })
        .await
        .expect("insert");
    let found = users
        .find_one(doc! { "_id": 1 })
        .await
        .expect("find")
        .expect("the document");
    assert_eq!(found.get_str("name"), Ok("ada"));

    // SIGINT with the client's connections still open, as a user would press Ctrl-C.
    running.signal(libc::SIGINT);
    let (code, rest, stderr) = running.exit().await;
    eprintln!("stderr:\n{stderr}");
    assert_eq!(code, Some(0), "stderr:\n{stderr}");
    assert_eq!(rest, "", "stdout holds the URI line only");
    assert!(stderr.contains("SIGINT: stopping the"), "{stderr}");
    assert!(stderr.contains("stopped in"), "{stderr}");
    assert!(
        !accepts(port).await,
        "port {port} still accepts connections after the exit"
    );
    let server = server_pid(&stderr);
    assert!(
        !process_exists(server),
        "server process {server} left behind"
    );
    drop(client); // no shutdown: its server is gone
}

#[tokio::test]
async fn json_names_uri_kind_version_and_pid_and_sigterm_stops_it() {
    let running = start(command(&["--kind", "nx", "--json"])).await;
    println!("--json printed: {}", running.first_line);
    let line = flat_json(&running.first_line);
    assert_eq!(
        line.keys().map(String::as_str).collect::<Vec<_>>(),
        ["kind", "pid", "uri", "version"],
        "{line:?}"
    );
    assert_eq!(line["kind"], "nx-27017");
    let uri = &line["uri"];
    let port = port_of(uri);
    assert!(
        line["version"] != "null" && line["version"].contains('.'),
        "{line:?}"
    );
    let server: u32 = line["pid"].parse().expect("a pid");
    assert!(process_exists(server));
    let client = client(uri).await;
    client
        .database("admin")
        .run_command(doc! { "ping": 1 })
        .await
        .expect("ping");
    client.shutdown().await;

    running.signal(libc::SIGTERM);
    let (code, rest, stderr) = running.exit().await;
    assert_eq!(code, Some(0), "stderr:\n{stderr}");
    assert_eq!(rest, "");
    assert!(
        stderr.contains("SIGTERM: stopping the nx-27017"),
        "{stderr}"
    );
    nothing_left(server, port).await;
}

/// Ctrl-C in a terminal signals the whole foreground process group: the server gets SIGINT at
/// the same moment as the program. It still reports the signal, stops and exits 0.
#[tokio::test]
async fn ctrl_c_to_the_whole_process_group_still_exits_0() {
    let mut command = command(&["--json"]);
    command.process_group(0);
    let running = start(command).await;
    let line = flat_json(&running.first_line);
    let server: u32 = line["pid"].parse().expect("a pid");
    let port = port_of(&line["uri"]);

    let group = libc::pid_t::try_from(running.pid).expect("pid");
    // SAFETY: kill(2) on the process group this test just created.
    assert_eq!(unsafe { libc::kill(-group, libc::SIGINT) }, 0);
    let (code, _, stderr) = running.exit().await;
    assert_eq!(code, Some(0), "stderr:\n{stderr}");
    assert!(stderr.contains("SIGINT: stopping the"), "{stderr}");
    nothing_left(server, port).await;
}

#[tokio::test]
async fn bad_flags_exit_2_with_the_usage() {
    for args in [
        &["--bogus"][..],
        &["--kind", "postgres"][..],
        &["--kind"][..],
        &["--port", "27017"][..],
        &["start"][..],
    ] {
        let out = tokio::time::timeout(STOP_DEADLINE, command(args).output())
            .await
            .expect("exits at once")
            .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("usage: polymongo-test-server"),
            "{args:?}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{args:?}: nothing on stdout");
        if args[0] == "--port" {
            assert!(stderr.contains("free port"), "{stderr}");
        }
    }
    let help = command(&["--help"]).output().await.expect("runs");
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).contains("--kind KIND"));
}

#[tokio::test]
async fn a_server_that_cannot_start_exits_1_naming_what_is_missing() {
    let empty = tempfile::tempdir().expect("temp dir");

    // No mongod on PATH.
    let mut no_mongod = command(&["--kind", "mongod"]);
    no_mongod.env("PATH", empty.path());
    let out = no_mongod.output().await.expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("--kind mongod without mongod: {stderr}");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no `mongod` executable is on PATH"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());

    // mongoeco with an interpreter that is not one.
    let not_python = empty.path().join("python3.13");
    std::fs::write(&not_python, "not a program").expect("write");
    let mut no_python = command(&["--kind", "mongoeco"]);
    no_python.env("POLYMONGO_MONGOECO_PYTHON", &not_python);
    let out = no_python.output().await.expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("--kind mongoeco without a Python: {stderr}");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("POLYMONGO_MONGOECO_PYTHON") && stderr.contains("mongoeco: 3.13+"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

/// The server process is gone and its port refuses connections.
async fn nothing_left(server: u32, port: u16) {
    assert!(
        !process_exists(server),
        "server process {server} left behind"
    );
    assert!(
        !accepts(port).await,
        "port {port} still accepts connections"
    );
}
