//! Secrets never show: generated connection strings — well formed and malformed, any scheme
//! typo, passwords with every special character, secrets in every secret-bearing option —
//! go through every public place a URI can surface (`redact_uri`, `Options` and builder
//! `Debug`, `Error::Config` `Display`/`Debug` for the main URI and a database's URI, the
//! manager's options, stats, `Debug`, the figures document (as `Debug` and as JSON), the
//! metrics text and the `prometheus_client` collector's output when it builds) and the
//! secret is never there.
//! No server is needed: managers are cold-started and never connect.

use polymongo::{DbConfig, Options, PolyMongo};
use proptest::prelude::*;

/// Printable ASCII without letters and digits: every special character a password may hold.
const SPECIALS: &str = " !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

/// Schemes as written by people: right, misspelt, cut, absent.
const SCHEMES: [&str; 12] = [
    "mongodb://",
    "mongodb:/",
    "mongodb:",
    "mongdb://",
    "mongodb:///",
    "MONGODB://",
    "mongodb+srv://",
    "mongodb+srv:/",
    "mongo://",
    "//",
    "",
    "http://",
];

/// Options whose value is a secret, and a template putting the secret in.
const SECRET_OPTIONS: [(&str, &str); 7] = [
    ("proxyPassword", "{}"),
    ("tlsCertificateKeyFilePassword", "{}"),
    ("authMechanismProperties", "AWS_SESSION_TOKEN:{}"),
    (
        "authMechanismProperties",
        "SERVICE_NAME:mongodb,AWS_SESSION_TOKEN:{}",
    ),
    ("password", "{}"),
    ("sslClientCertificateKeyPassword", "{}"),
    ("myApiSecret", "{}"),
];

fn password() -> impl Strategy<Value = String> {
    // A distinctive start so that the secret cannot be found by chance in the output, then
    // any mix of specials, letters and digits, raw or percent-encoded.
    (
        proptest::collection::vec(
            prop_oneof![
                proptest::sample::select(SPECIALS.chars().collect::<Vec<_>>()),
                proptest::char::range('a', 'z'),
                proptest::char::range('0', '9'),
            ],
            3..16,
        ),
        any::<bool>(),
    )
        .prop_map(|(chars, encode)| {
            let tail: String = chars.into_iter().collect();
            let raw = format!("Pw9{tail}");
            if encode {
                raw.bytes()
                    .map(|b| {
                        if b.is_ascii_alphanumeric() {
                            (b as char).to_string()
                        } else {
                            format!("%{b:02X}")
                        }
                    })
                    .collect()
            } else {
                raw
            }
        })
}

fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._~-]{6,14}".prop_map(|t| format!("Tk7{t}"))
}

#[derive(Debug, Clone)]
struct Case {
    uri: String,
    /// Every secret, as it must not appear (raw; and decoded when percent-encoded).
    secrets: Vec<String>,
    /// Whether building a manager from it is safe without a network (no SRV lookup).
    buildable: bool,
}

fn case() -> impl Strategy<Value = Case> {
    (
        proptest::sample::select(SCHEMES.to_vec()),
        "[a-z]{1,8}",
        proptest::option::of(password()),
        proptest::sample::select(vec![
            "127.0.0.1:1",
            "db.invalid",
            "a.invalid:27017,b.invalid:27018",
        ]),
        proptest::sample::select(vec!["", "/", "/app", "/app/"]),
        proptest::collection::vec((0..SECRET_OPTIONS.len(), token()), 0..3),
        any::<bool>(),
    )
        .prop_map(|(scheme, user, pass, hosts, path, options, app_at)| {
            let mut secrets = Vec::new();
            let mut uri = scheme.to_owned();
            if let Some(p) = &pass {
                uri.push_str(&format!("{user}:{p}@"));
                secrets.push(p.clone());
                let decoded = percent_decode(p);
                if decoded != *p {
                    secrets.push(decoded);
                }
            }
            uri.push_str(hosts);
            let mut query = Vec::new();
            if app_at {
                query.push("appName=a@b".to_owned());
            }
            for (i, t) in &options {
                let (name, template) = SECRET_OPTIONS[*i];
                query.push(format!("{name}={}", template.replace("{}", t)));
                secrets.push(t.clone());
            }
            if !query.is_empty() {
                uri.push_str(if path.is_empty() { "/" } else { path });
                uri.push('?');
                uri.push_str(&query.join("&"));
            } else {
                uri.push_str(path);
            }
            let buildable = !scheme.contains("srv");
            Case {
                uri,
                secrets,
                buildable,
            }
        })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn assert_hidden(case: &Case, place: &str, shown: &str) {
    for secret in &case.secrets {
        assert!(
            !shown.contains(secret.as_str()),
            "secret {secret:?} of {:?} shows in {place}: {shown}",
            case.uri
        );
    }
}

/// Every public string the library makes from `case.uri`.
async fn every_output(case: &Case) -> Vec<(&'static str, String)> {
    let mut out = vec![("redact_uri", polymongo::redact_uri(&case.uri))];
    let options = Options {
        uri: case.uri.clone(),
        ..Options::default()
    };
    out.push(("Options Debug", format!("{options:?}")));
    let builder = PolyMongo::builder().uri(case.uri.clone());
    out.push(("builder Debug", format!("{builder:?}")));
    let with_db = PolyMongo::builder()
        .uri("mongodb://127.0.0.1:1")
        .db("tenant", DbConfig::new().uri(case.uri.clone()));
    out.push(("builder Debug (database)", format!("{with_db:?}")));
    if !case.buildable {
        return out;
    }
    for (place, builder) in [("main", builder), ("database", with_db)] {
        match builder.build().await {
            Err(e) => {
                out.push((place, format!("{e}")));
                out.push((place, format!("{e:?}")));
            }
            Ok(poly) => {
                out.push((place, format!("{:?}", poly.options())));
                out.push((place, format!("{:?}", poly.stats().general())));
                out.push((place, format!("{poly:?}")));
                let figures = polymongo::Figures::take(&poly);
                out.push((place, format!("{figures:?}")));
                // JSON escapes some characters a secret may hold: read back, it is the
                // document's text as a client sees it.
                let json = serde_json::to_value(&figures).unwrap_or_default();
                out.push((place, json_strings(&json)));
                #[cfg(feature = "metrics")]
                out.push((place, polymongo::metrics::render(&poly)));
                #[cfg(feature = "prometheus-client")]
                {
                    let mut registry = prometheus_client::registry::Registry::default();
                    registry.register_collector(Box::new(polymongo::metrics::collector(&poly)));
                    let mut text = String::new();
                    let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
                    out.push((place, text));
                }
                poly.force_close_all().await;
            }
        }
    }
    out
}

/// Every string in a JSON document, unescaped, one a line.
fn json_strings(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => format!("{s}\n"),
        serde_json::Value::Array(a) => a.iter().map(json_strings).collect(),
        serde_json::Value::Object(o) => o
            .iter()
            .map(|(k, v)| format!("{k}\n{}", json_strings(v)))
            .collect(),
        _ => String::new(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn no_secret_shows_anywhere(case in case()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let outputs = rt.block_on(every_output(&case));
        for (place, shown) in &outputs {
            assert_hidden(&case, place, shown);
        }
    }
}

#[test]
fn reported_cases_are_hidden() {
    for (uri, secrets) in [
        ("mongodb:/ops:S3cr3t@host", vec!["S3cr3t"]),
        ("ops:S3cr3t@host:27017", vec!["S3cr3t"]),
        (
            "mongodb://h/?proxyPassword=Pp1x&authMechanismProperties=AWS_SESSION_TOKEN:Tok1x&tlsCertificateKeyFilePassword=Kp1x",
            vec!["Pp1x", "Tok1x", "Kp1x"],
        ),
    ] {
        let shown = polymongo::redact_uri(uri);
        for s in secrets {
            assert!(!shown.contains(s), "{shown}");
        }
    }
    // An `@` in the query does not lose the host.
    let shown = polymongo::redact_uri("mongodb://ops:pw@db.example/?appName=a@b");
    assert!(shown.contains("@db.example/"), "{shown}");
}

#[tokio::test]
async fn config_errors_from_the_builder_hide_the_password() {
    for uri in [
        "mongodb:/ops:S3cr3tPw@host",
        "ops:S3cr3tPw@host",
        "mongodb://ops:S3cr3tPw@host:notaport/",
    ] {
        let err = PolyMongo::builder().uri(uri).build().await.unwrap_err();
        for shown in [format!("{err}"), format!("{err:?}")] {
            assert!(!shown.contains("S3cr3tPw"), "{shown}");
        }
    }
}

#[test]
fn toml_type_errors_do_not_quote_the_value() {
    let err =
        toml::from_str::<Options>("max_pool_size = \"mongodb://ops:S3cr3tPw@host\"\n").unwrap_err();
    // The parser's own message quotes it; the library's redaction removes it.
    let message = polymongo::redact_config_error(err.message());
    assert!(!message.contains("S3cr3tPw"), "{message}");
    assert!(message.contains("expected"), "{message}");
    let err = toml::from_str::<Options>("usage_analytics = \"ops:S3cr3tPw@host\"\n").unwrap_err();
    let message = polymongo::redact_config_error(err.message());
    assert!(!message.contains("S3cr3tPw"), "{message}");
}

/// The same generated URIs through the library's debug log: a manager on each is built and
/// pinged (the ping fails fast: nothing listens), and no secret is in the log files.
#[cfg(feature = "logging")]
#[test]
fn no_secret_reaches_the_log() {
    use polymongo::logging::{init, LogOptions};
    use proptest::test_runner::{Config, TestRunner};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    init(LogOptions {
        debug: true,
        log_dir: Some(dir.path().to_path_buf()),
        console: false,
        ..LogOptions::default()
    })
    .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let all: Arc<Mutex<Vec<Case>>> = Arc::default();
    let mut runner = TestRunner::new(Config {
        cases: 48,
        failure_persistence: None,
        ..Config::default()
    });
    // Well-formed URIs on a port where nothing listens, so that the manager builds, opens
    // its pool and logs.
    let reachable = (
        "[a-z]{1,8}",
        password(),
        proptest::collection::vec((0..SECRET_OPTIONS.len(), token()), 0..3),
    )
        .prop_map(|(user, pass, options)| {
            let mut secrets = vec![pass.clone(), percent_decode(&pass)];
            let query: Vec<String> = options
                .iter()
                .map(|(i, t)| {
                    secrets.push(t.clone());
                    let (name, template) = SECRET_OPTIONS[*i];
                    format!("{name}={}", template.replace("{}", t))
                })
                .collect();
            Case {
                uri: format!("mongodb://{user}:{pass}@127.0.0.1:1/?{}", query.join("&")),
                secrets,
                buildable: true,
            }
        });
    runner
        .run(&reachable, |case| {
            all.lock().unwrap().push(case.clone());
            rt.block_on(async {
                let built = PolyMongo::builder()
                    .uri(case.uri.clone())
                    .server_selection_timeout(Duration::from_millis(50))
                    .retry(1, Duration::from_millis(1))
                    .build()
                    .await;
                if let Ok(poly) = built {
                    let _ = poly.ping("main").await;
                    poly.force_close_all().await;
                }
            });
            Ok(())
        })
        .unwrap();
    let mut logged = String::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        logged.push_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap_or_default());
    }
    assert!(logged.contains("127.0.0.1:1"), "the pools were logged");
    for case in all.lock().unwrap().iter() {
        assert_hidden(case, "the log", &logged);
    }
}
