//! What the library's spans carry: the attributes of OpenTelemetry's semantic conventions for
//! MongoDB client operations, so a `tracing-opentelemetry` layer exports them as a tracing
//! backend expects them, and `otel.*` fields for the span's name, kind and status.
//!
//! Everything here runs only for a span that is enabled (`!span.is_disabled()`): with no
//! subscriber listening, or one that filters the span out, nothing is parsed or formatted.

use std::borrow::Cow;

use mongodb::error::{ErrorKind as DriverKind, WriteFailure};
use tracing::Span;

use crate::floor::error::{Error, ErrorKind};

/// `db.system.name` of every span.
pub(crate) const DB_SYSTEM: &str = "mongodb";

/// `otel.kind` of every span: the library calls the server.
pub(crate) const CLIENT: &str = "client";

/// The port a `mongodb://` host without one is reached on.
const DEFAULT_PORT: u16 = 27017;

/// The MongoDB operation a driver action type sends, named as MongoDB drivers name it in their
/// own spans: the command's name (`find`, `insert`, `update`, `delete`, `findAndModify`,
/// `aggregate`, `count`, `distinct`, …), and `countDocuments` for the count that is sent as an
/// `aggregate`. `None` when the type is not one of the driver's collection actions (an
/// `async` block of several calls, say).
pub(crate) fn operation_name<A>() -> Option<&'static str> {
    operation_of(std::any::type_name::<A>())
}

fn operation_of(type_name: &str) -> Option<&'static str> {
    let path = type_name.strip_prefix("mongodb::action::")?;
    let path = path.split('<').next().unwrap_or(path);
    let action = path.rsplit("::").next().unwrap_or(path);
    Some(match action {
        "Find" | "FindOne" => "find",
        "InsertOne" | "InsertMany" => "insert",
        "Update" | "ReplaceOne" => "update",
        "Delete" => "delete",
        "FindOneAndDelete" | "FindOneAndUpdate" | "FindOneAndReplace" => "findAndModify",
        "Aggregate" | "Watch" => "aggregate",
        "CountDocuments" => "countDocuments",
        "EstimatedDocumentCount" => "count",
        "Distinct" => "distinct",
        "CreateIndex" => "createIndexes",
        "DropIndex" => "dropIndexes",
        "ListIndexes" => "listIndexes",
        "DropCollection" => "drop",
        _ => return None,
    })
}

/// The span name of the conventions: `{db.operation.name} {target}`, or the target alone when
/// the operation is not known.
pub(crate) fn span_name(operation: Option<&str>, target: &str) -> String {
    match operation {
        Some(op) => format!("{op} {target}"),
        None => target.to_owned(),
    }
}

/// The first host of a pool's label (the pool's URI with its password hidden) and its port:
/// `server.address` and `server.port`. The port is the URI's, 27017 when a `mongodb://` host
/// names none, and unknown for `mongodb+srv://` (DNS chooses it). Whatever stands before an
/// `@` (the user, and the hidden password) is never part of it.
pub(crate) fn server_of(label: &str) -> Option<(Cow<'_, str>, Option<u16>)> {
    let (rest, srv) = if let Some(r) = label.strip_prefix("mongodb+srv://") {
        (r, true)
    } else if let Some(r) = label.strip_prefix("mongodb://") {
        (r, false)
    } else {
        return None;
    };
    let hosts = rest.split(['/', '?', ' ']).next().unwrap_or_default();
    let hosts = hosts.rsplit_once('@').map_or(hosts, |(_, h)| h);
    let first = hosts.split(',').next().unwrap_or_default();
    if first.is_empty() {
        return None;
    }
    let (host, port) = if let Some(v6) = first.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        (host, after.strip_prefix(':'))
    } else if first.ends_with(".sock") {
        (first, None)
    } else {
        match first.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (first, None),
        }
    };
    let port = match port {
        Some(p) => Some(p.parse().ok()?),
        None if srv || host.ends_with(".sock") => None,
        None => Some(DEFAULT_PORT),
    };
    Some((percent_decoded(host), port))
}

/// A host as written in a URI, percent-decoded (a Unix socket path is written `%2Ftmp%2F…`).
fn percent_decoded(host: &str) -> Cow<'_, str> {
    if !host.contains('%') {
        return Cow::Borrowed(host);
    }
    let bytes = host.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// Records `server.address` and `server.port` from the pool's label.
pub(crate) fn record_server(span: &Span, label: &str) {
    if let Some((address, port)) = server_of(label) {
        span.record("server.address", &*address);
        if let Some(port) = port {
            span.record("server.port", i64::from(port));
        }
    }
}

/// Records a failure on `span`: `otel.status_code = "ERROR"`, `error.type`, and
/// `db.response.status_code` when the server gave an error code. Does nothing for a disabled
/// span.
pub(crate) fn record_error(span: &Span, e: &Error) {
    if span.is_disabled() {
        return;
    }
    span.record("otel.status_code", "ERROR");
    match e.driver_error().and_then(server_code) {
        Some(code) => {
            let mut buf = itoa::Buffer::new();
            let code = buf.format(code);
            // The conventions: `error.type` is the status code when the database gave one.
            span.record("db.response.status_code", code);
            span.record("error.type", code);
        }
        None => {
            span.record("error.type", error_type(e));
        }
    }
}

/// The error code the server answered with: a command's, a write's, or the first of a batch's
/// write errors (else its write concern error's).
fn server_code(e: &mongodb::error::Error) -> Option<i32> {
    match e.kind.as_ref() {
        DriverKind::Command(c) => Some(c.code),
        DriverKind::Write(WriteFailure::WriteError(w)) => Some(w.code),
        DriverKind::Write(WriteFailure::WriteConcernError(w)) => Some(w.code),
        DriverKind::InsertMany(m) => m
            .write_errors
            .as_ref()
            .and_then(|errors| errors.first().map(|w| w.code))
            .or_else(|| m.write_concern_error.as_ref().map(|w| w.code)),
        _ => None,
    }
}

/// `error.type` of a failure without a server code: the driver's error kind when the driver
/// failed (`ServerSelection`, `Io`, `Authentication`, …), else the library's
/// ([`ErrorKind`]: `PoolExhausted`, `Closed`, `Timeout`, …). Low cardinality: no message.
fn error_type(e: &Error) -> &'static str {
    if let Some(driver) = e.driver_error() {
        return match driver.kind.as_ref() {
            DriverKind::InvalidArgument { .. } => "InvalidArgument",
            DriverKind::Authentication { .. } => "Authentication",
            DriverKind::BsonDeserialization(_) => "BsonDeserialization",
            DriverKind::BsonSerialization(_) => "BsonSerialization",
            DriverKind::InsertMany(_) => "InsertMany",
            DriverKind::BulkWrite(_) => "BulkWrite",
            DriverKind::Command(_) => "Command",
            DriverKind::DnsResolve { .. } => "DnsResolve",
            DriverKind::Internal { .. } => "Internal",
            DriverKind::Io(_) => "Io",
            DriverKind::ConnectionPoolCleared { .. } => "ConnectionPoolCleared",
            DriverKind::InvalidResponse { .. } => "InvalidResponse",
            DriverKind::ServerSelection { .. } => "ServerSelection",
            DriverKind::SessionsNotSupported => "SessionsNotSupported",
            DriverKind::InvalidTlsConfig { .. } => "InvalidTlsConfig",
            DriverKind::Write(_) => "Write",
            DriverKind::Transaction { .. } => "Transaction",
            DriverKind::IncompatibleServer { .. } => "IncompatibleServer",
            DriverKind::Shutdown => "Shutdown",
            _ => "Driver",
        };
    }
    match e.kind() {
        ErrorKind::Config => "Config",
        ErrorKind::InvalidName => "InvalidName",
        ErrorKind::Connection => "Connection",
        ErrorKind::Timeout => "Timeout",
        ErrorKind::Saturated => "Saturated",
        ErrorKind::PoolExhausted => "PoolExhausted",
        ErrorKind::Authentication => "Authentication",
        ErrorKind::Closed => "Closed",
        ErrorKind::Transaction => "Transaction",
        ErrorKind::Bulk => "Bulk",
        ErrorKind::Io => "Io",
        ErrorKind::NoRuntime => "NoRuntime",
        ErrorKind::Migration => "Migration",
        ErrorKind::Tenant => "Tenant",
        ErrorKind::Driver => "Driver",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_actions_are_named_as_mongodb_commands() {
        for (ty, op) in [
            ("mongodb::action::find::Find<'_, T>", Some("find")),
            ("mongodb::action::find::FindOne<'_, T>", Some("find")),
            ("mongodb::action::insert_one::InsertOne<'_>", Some("insert")),
            ("mongodb::action::update::Update<'_>", Some("update")),
            (
                "mongodb::action::find_and_modify::FindOneAndUpdate<'_, T>",
                Some("findAndModify"),
            ),
            (
                "mongodb::action::count::CountDocuments<'_>",
                Some("countDocuments"),
            ),
            (
                "mongodb::action::count::EstimatedDocumentCount<'_>",
                Some("count"),
            ),
            ("polymongo::something::Else", None),
            ("core::pin::Pin<alloc::boxed::Box<dyn Future>>", None),
        ] {
            assert_eq!(operation_of(ty), op, "{ty}");
        }
    }

    /// `server.address` and `server.port`, as the test expects them.
    type Server<'a> = Option<(&'a str, Option<u16>)>;

    #[test]
    fn the_server_is_the_first_host_and_never_the_user() {
        let cases: [(&str, Server<'_>); 9] = [
            (
                "mongodb://127.0.0.1:27018/",
                Some(("127.0.0.1", Some(27018))),
            ),
            (
                "mongodb://ops:***@db1.example:27019,db2.example/app?w=1",
                Some(("db1.example", Some(27019))),
            ),
            (
                "mongodb://ops@db.example",
                Some(("db.example", Some(27017))),
            ),
            (
                "mongodb+srv://ops:***@cluster0.example/",
                Some(("cluster0.example", None)),
            ),
            ("mongodb://[::1]:27020/?x=1", Some(("::1", Some(27020)))),
            (
                "mongodb://%2Ftmp%2Fmongodb-27017.sock/",
                Some(("/tmp/mongodb-27017.sock", None)),
            ),
            (
                "mongodb://h:27021 (database tenant_1)",
                Some(("h", Some(27021))),
            ),
            ("mongodb:/***@host", None),
            ("mongodb://h:notaport/", None),
        ];
        for (label, want) in cases {
            let got = server_of(label);
            let got = got.as_ref().map(|(a, p)| (&**a, *p));
            assert_eq!(got, want, "{label}");
        }
    }
}
