//! A minimal wire-protocol client: one TCP connection, one OP_MSG command.
//!
//! The kit uses it to ask a server `serverStatus` / `hello` / `replSetInitiate`
//! without a `mongodb::Client`. A driver client opens a monitoring connection
//! and pool connections of its own (and must be dropped inside a tokio
//! runtime), which would blur [`connection_count`] and complicate the
//! readiness checks. This probe opens exactly one connection, so its own
//! footprint on `serverStatus.connections.current` is exactly one.
//!
//! Only what the kit needs is implemented: plain TCP (no TLS, no
//! authentication), OP_MSG (opcode 2013) with a single body section.

use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use mongodb::bson::{doc, Bson, Document};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::TestKitError;

/// `OP_MSG`, the only opcode modern servers (and nx-27017) answer commands with.
const OP_MSG: i32 = 2013;
/// Replies above this size are refused (MongoDB's own limit is 48 MB).
const MAX_REPLY: usize = 48_000_000;
/// How long one probe may take (connect, command, reply) before it fails.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the probe waits for the server to close its side after we close ours.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

static REQUEST_ID: AtomicI32 = AtomicI32::new(1);

/// Runs `command` against database `db` on `addr` ("host:port") over one fresh
/// connection and returns the reply document (which has `ok: 1`).
///
/// Before returning, the probe half-closes its connection and waits (briefly)
/// for the server to close its side: nx-27017 decrements its connection
/// counter before it closes a connection, so a following probe never sees this
/// one still counted.
pub(crate) async fn run_command(
    addr: &str,
    db: &str,
    command: Document,
    timeout: Duration,
) -> Result<Document, TestKitError> {
    let name = command
        .keys()
        .next()
        .cloned()
        .unwrap_or_else(|| "<empty>".to_owned());
    match tokio::time::timeout(timeout, exchange(addr, db, command)).await {
        Ok(result) => {
            let reply = result?;
            check_ok(&name, reply)
        }
        Err(_) => Err(TestKitError::io(
            format!("running `{name}` on {addr}"),
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no reply within {timeout:?}"),
            ),
        )),
    }
}

async fn exchange(addr: &str, db: &str, mut command: Document) -> Result<Document, TestKitError> {
    let name = command.keys().next().cloned().unwrap_or_default();
    let context = |what: &str| format!("{what} {addr} for `{name}`");
    command.insert("$db", db);

    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| TestKitError::io(context("connecting to"), e))?;
    let _ = stream.set_nodelay(true);

    let request_id = REQUEST_ID.fetch_add(1, Ordering::Relaxed);
    let message = encode_op_msg(request_id, &command)?;
    stream
        .write_all(&message)
        .await
        .map_err(|e| TestKitError::io(context("sending to"), e))?;

    let mut header = [0u8; 16];
    stream
        .read_exact(&mut header)
        .await
        .map_err(|e| TestKitError::io(context("reading the reply header from"), e))?;
    let length = le_i32(&header[0..4]);
    let response_to = le_i32(&header[8..12]);
    let opcode = le_i32(&header[12..16]);
    let length = usize::try_from(length)
        .ok()
        .filter(|l| (16 + 5..=MAX_REPLY).contains(l))
        .ok_or_else(|| TestKitError::Protocol(format!("reply length {length} is out of range")))?;
    if opcode != OP_MSG {
        return Err(TestKitError::Protocol(format!(
            "reply opcode {opcode}, expected OP_MSG ({OP_MSG})"
        )));
    }
    if response_to != request_id {
        return Err(TestKitError::Protocol(format!(
            "reply answers request {response_to}, expected {request_id}"
        )));
    }
    let mut body = vec![0u8; length - 16];
    stream
        .read_exact(&mut body)
        .await
        .map_err(|e| TestKitError::io(context("reading the reply body from"), e))?;
    let reply = decode_op_msg_body(&body)?;

    // Close our side, then wait for the server to close its side (bounded):
    // see the function docs of `run_command`.
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 64];
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    })
    .await;
    Ok(reply)
}

fn le_i32(bytes: &[u8]) -> i32 {
    let mut buf = [0u8; 4];
    buf.copy_from_slice(&bytes[..4]);
    i32::from_le_bytes(buf)
}

/// Builds an OP_MSG: header, flagBits 0, one kind-0 (body) section.
fn encode_op_msg(request_id: i32, command: &Document) -> Result<Vec<u8>, TestKitError> {
    let mut section = Vec::new();
    command
        .to_writer(&mut section)
        .map_err(|e| TestKitError::Protocol(format!("cannot encode the command: {e}")))?;
    let total = 16 + 4 + 1 + section.len();
    let total_i32 =
        i32::try_from(total).map_err(|_| TestKitError::Protocol("command too large".to_owned()))?;
    let mut message = Vec::with_capacity(total);
    message.extend_from_slice(&total_i32.to_le_bytes());
    message.extend_from_slice(&request_id.to_le_bytes());
    message.extend_from_slice(&0i32.to_le_bytes()); // responseTo
    message.extend_from_slice(&OP_MSG.to_le_bytes());
    message.extend_from_slice(&0u32.to_le_bytes()); // flagBits
    message.push(0); // section kind 0: body
    message.extend_from_slice(&section);
    Ok(message)
}

/// Extracts the body document from an OP_MSG (everything after the header).
fn decode_op_msg_body(body: &[u8]) -> Result<Document, TestKitError> {
    let flags = u32::from_le_bytes([body[0], body[1], body[2], body[3]]);
    // checksumPresent (bit 0): a CRC-32C trails the sections; we don't verify it.
    let end = if flags & 1 == 1 {
        body.len().saturating_sub(4)
    } else {
        body.len()
    };
    let mut pos = 4;
    while pos < end {
        let kind = body[pos];
        pos += 1;
        if pos + 4 > end {
            break;
        }
        let size = usize::try_from(le_i32(&body[pos..pos + 4]))
            .map_err(|_| TestKitError::Protocol("negative section size".to_owned()))?;
        if size < 5 || pos + size > end {
            return Err(TestKitError::Protocol(format!(
                "section size {size} out of range"
            )));
        }
        match kind {
            0 => {
                let mut slice = &body[pos..pos + size];
                return Document::from_reader(&mut slice)
                    .map_err(|e| TestKitError::Protocol(format!("bad BSON in reply: {e}")));
            }
            1 => pos += size, // document sequence: not used in replies we ask for
            other => {
                return Err(TestKitError::Protocol(format!(
                    "unknown section kind {other}"
                )));
            }
        }
    }
    Err(TestKitError::Protocol(
        "reply has no body section".to_owned(),
    ))
}

fn check_ok(command: &str, reply: Document) -> Result<Document, TestKitError> {
    let ok = reply.get("ok").and_then(as_f64).unwrap_or(0.0);
    if ok == 1.0 {
        return Ok(reply);
    }
    let errmsg = reply
        .get_str("errmsg")
        .unwrap_or("no errmsg in the reply")
        .to_owned();
    let message = match reply.get("code").and_then(as_i64) {
        Some(code) => format!("{errmsg} (code {code})"),
        None => errmsg,
    };
    Err(TestKitError::Command {
        command: command.to_owned(),
        message,
    })
}

/// A numeric BSON value as `f64` (servers send `ok` as Double or Int32).
pub(crate) fn as_f64(value: &Bson) -> Option<f64> {
    match value {
        Bson::Double(d) => Some(*d),
        Bson::Int32(i) => Some(f64::from(*i)),
        Bson::Int64(i) => Some(*i as f64),
        Bson::Boolean(b) => Some(if *b { 1.0 } else { 0.0 }),
        _ => None,
    }
}

/// A numeric BSON value as `i64` (counters come as Int32, Int64 or Double).
pub(crate) fn as_i64(value: &Bson) -> Option<i64> {
    match value {
        Bson::Int32(i) => Some(i64::from(*i)),
        Bson::Int64(i) => Some(*i),
        Bson::Double(d) if d.fract() == 0.0 => Some(*d as i64),
        _ => None,
    }
}

/// `serverStatus.connections.current` minus the probe's own connection, on one host.
pub(crate) async fn connection_count_at(addr: &str) -> Result<i64, TestKitError> {
    let reply = run_command(addr, "admin", doc! { "serverStatus": 1 }, PROBE_TIMEOUT).await?;
    let current = reply
        .get_document("connections")
        .ok()
        .and_then(|c| c.get("current"))
        .and_then(as_i64)
        .ok_or_else(|| {
            TestKitError::Protocol("serverStatus has no numeric connections.current".to_owned())
        })?;
    Ok(current - 1)
}

/// The server-side number of client connections, not counting the probe itself.
///
/// Reads `serverStatus.connections.current` over ONE raw TCP connection and
/// subtracts that connection. A seed list with several hosts gives the sum over
/// those hosts. Supported URIs: `mongodb://` without credentials and without
/// TLS (the probe speaks neither SCRAM nor TLS); other URIs give
/// [`TestKitError::BadUri`].
///
/// ```no_run
/// # async fn f() -> Result<(), polymongo_testkit::TestKitError> {
/// let n = polymongo_testkit::connection_count("mongodb://127.0.0.1:27017").await?;
/// # Ok(()) }
/// ```
pub async fn connection_count(uri: &str) -> Result<i64, TestKitError> {
    let hosts = probe_hosts(uri)?;
    let mut total = 0;
    for host in hosts {
        total += connection_count_at(&host).await?;
    }
    Ok(total)
}

/// Removes `user:password@` from a URI for messages.
pub(crate) fn redact(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return uri.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => uri.to_owned(),
    }
}

/// The "host:port" entries of a plain `mongodb://` URI the probe can reach.
pub(crate) fn probe_hosts(uri: &str) -> Result<Vec<String>, TestKitError> {
    let bad = |reason: &str| TestKitError::BadUri {
        uri_redacted: redact(uri),
        reason: reason.to_owned(),
    };
    let rest = if let Some(rest) = uri.strip_prefix("mongodb://") {
        rest
    } else if uri.starts_with("mongodb+srv://") {
        return Err(bad(
            "mongodb+srv:// needs DNS SRV resolution and TLS, which the raw probe does not do; \
             use a mongodb:// URI listing the hosts",
        ));
    } else {
        return Err(bad("the URI must start with mongodb://"));
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    if authority.contains('@') {
        return Err(bad(
            "the raw probe cannot authenticate; count connections on a server without auth",
        ));
    }
    let query = rest[authority_end..]
        .split_once('?')
        .map(|(_, q)| q)
        .unwrap_or("");
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = key.to_ascii_lowercase();
        if (key == "tls" || key == "ssl") && value.eq_ignore_ascii_case("true") {
            return Err(bad("the raw probe does not speak TLS"));
        }
    }
    let mut hosts = Vec::new();
    for host in authority.split(',').filter(|h| !h.is_empty()) {
        let with_port = if host.starts_with('[') {
            // [ipv6] or [ipv6]:port
            if host.ends_with(']') {
                format!("{host}:27017")
            } else {
                host.to_owned()
            }
        } else if host.contains(':') {
            host.to_owned()
        } else {
            format!("{host}:27017")
        };
        if with_port.ends_with(".sock") || with_port.starts_with('%') {
            return Err(bad("unix sockets are not supported by the raw probe"));
        }
        hosts.push(with_port);
    }
    if hosts.is_empty() {
        return Err(bad("no host in the URI"));
    }
    Ok(hosts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_msg_round_trip() {
        let cmd = doc! { "ping": 1, "$db": "admin" };
        let msg = encode_op_msg(7, &cmd).expect("encode");
        assert_eq!(le_i32(&msg[0..4]) as usize, msg.len());
        assert_eq!(le_i32(&msg[4..8]), 7);
        assert_eq!(le_i32(&msg[12..16]), OP_MSG);
        let decoded = decode_op_msg_body(&msg[16..]).expect("decode");
        assert_eq!(decoded, cmd);
    }

    #[test]
    fn ok_values() {
        assert!(check_ok("x", doc! { "ok": 1.0 }).is_ok());
        assert!(check_ok("x", doc! { "ok": 1 }).is_ok());
        let err =
            check_ok("x", doc! { "ok": 0, "errmsg": "nope", "code": 59 }).expect_err("must fail");
        assert!(err.to_string().contains("nope (code 59)"), "{err}");
    }

    #[test]
    fn hosts_from_uris() {
        assert_eq!(
            probe_hosts("mongodb://127.0.0.1:1234/?directConnection=true").expect("ok"),
            vec!["127.0.0.1:1234"]
        );
        assert_eq!(
            probe_hosts("mongodb://a,b:2/db?replicaSet=rs").expect("ok"),
            vec!["a:27017", "b:2"]
        );
        assert_eq!(
            probe_hosts("mongodb://[::1]").expect("ok"),
            vec!["[::1]:27017"]
        );
        assert!(probe_hosts("mongodb+srv://x.example.com").is_err());
        assert!(probe_hosts("mongodb://h/?tls=true").is_err());
        let err = probe_hosts("mongodb://user:secret@h:1/").expect_err("creds");
        assert!(!err.to_string().contains("secret"), "{err}");
        assert!(probe_hosts("http://h").is_err());
    }

    #[test]
    fn redacts_credentials() {
        assert_eq!(
            redact("mongodb://u:p@h:1/db?x=@"),
            "mongodb://***@h:1/db?x=@"
        );
        assert_eq!(redact("mongodb://h:1/"), "mongodb://h:1/");
    }
}
