//! Configuration files are untrusted input: every document read into [`Options`] — well
//! formed or not, with unknown keys, wrong types, duplicates, huge or zero numbers, durations
//! past the clock's range, empty and very long strings, names that are not database names and
//! URIs with credentials anywhere — either validates or fails with a typed error naming the
//! key, never panics, and never shows a secret. No server is needed.

use std::time::Duration;

use polymongo::{Error, Options, PolyMongo};
use proptest::prelude::*;

const SECRET: &str = "S3cr3tPw";

fn parse(doc: &str) -> Options {
    toml::from_str::<Options>(doc).unwrap_or_else(|e| panic!("{doc}: {e}"))
}

/// The error of validating `doc` (which must parse), checked to hide [`SECRET`].
fn invalid(doc: &str) -> Error {
    let e = parse(doc).validate().expect_err(doc);
    for shown in [e.to_string(), format!("{e:?}")] {
        assert!(!shown.contains(SECRET), "{doc}: {shown}");
    }
    e
}

fn field_of(e: &Error) -> &'static str {
    match e {
        Error::Config { field, .. } | Error::DbConfig { field, .. } => field,
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

#[test]
fn a_directory_refresh_past_the_clocks_range_is_refused_not_a_panic() {
    for directory in [
        "refresh = \"500000000000years\"",
        "refresh = \"18446744073709551615s\"",
        "refresh = \"1s\"\nmax_staleness = \"500000000000years\"",
    ] {
        let doc = format!("uri = \"mongodb://h\"\n[directory]\n{directory}\n");
        let e = std::panic::catch_unwind(|| invalid(&doc)).unwrap_or_else(|_| panic!("{doc}"));
        assert!(field_of(&e).starts_with("directory."), "{e}");
    }
}

#[test]
fn every_duration_past_the_ceiling_is_refused_naming_its_key() {
    let huge = "\"18446744073709551615s\"";
    for (doc, key) in [
        (format!("idle_timeout = {huge}"), "idle_timeout"),
        (
            format!("server_selection_timeout = {huge}"),
            "server_selection_timeout",
        ),
        (format!("connect_timeout = {huge}"), "connect_timeout"),
        (
            format!("heartbeat_frequency = {huge}"),
            "heartbeat_frequency",
        ),
        (
            format!("database_idle_timeout = {huge}"),
            "database_idle_timeout",
        ),
        (format!("idle_close_grace = {huge}"), "idle_close_grace"),
        (format!("wait_queue_timeout = {huge}"), "wait_queue_timeout"),
        (format!("[retry]\ninterval = {huge}"), "retry.interval"),
        (
            format!("[retry]\nmax_interval = {huge}"),
            "retry.max_interval",
        ),
        (
            format!("[directory]\nrefresh = {huge}"),
            "directory.refresh",
        ),
        (
            format!("[directory]\nmax_staleness = {huge}"),
            "directory.max_staleness",
        ),
        (
            format!("[databases.shop]\nauto_close = true\nttl = {huge}"),
            "ttl",
        ),
        (
            format!("[databases.shop]\nmax_concurrent_ops = 2\nqueue_timeout = {huge}"),
            "queue_timeout",
        ),
    ] {
        let doc = format!("uri = \"mongodb://h\"\n{doc}\n");
        let e = std::panic::catch_unwind(|| invalid(&doc)).unwrap_or_else(|_| panic!("{doc}"));
        assert_eq!(field_of(&e), key, "{doc}: {e}");
        assert!(e.to_string().contains("at most"), "{e}");
    }
    // The ceiling itself is accepted: a hundred years still means "never" to anyone.
    let o = parse("uri = \"mongodb://h\"\ndatabase_idle_timeout = \"100years\"\n");
    o.validate().unwrap();
    assert!(o.database_idle_timeout <= polymongo::MAX_DURATION);
}

#[test]
fn a_uri_given_where_a_name_belongs_is_not_quoted_with_its_password() {
    let uri = format!("mongodb://ops:{SECRET}@h/shop");
    for (doc, key) in [
        (format!("default_db = \"{uri}\""), "default_db"),
        (
            format!("[directory]\ncluster = \"{uri}\""),
            "directory.cluster",
        ),
        (
            format!("[directory]\ndatabase = \"{uri}\""),
            "directory.database",
        ),
        (
            format!("[directory]\ndatabase_prefix = \"{uri}\""),
            "directory.database_prefix",
        ),
        (
            format!("[clusters.\"{uri}\"]\nuri = \"mongodb://a\""),
            "clusters",
        ),
    ] {
        let doc = format!("uri = \"mongodb://h\"\n{doc}\n");
        let e = invalid(&doc);
        assert_eq!(field_of(&e), key, "{e}");
        assert!(e.to_string().contains("ops:***@h"), "still says which: {e}");
        let shown = format!("{:?}", parse(&doc));
        assert!(!shown.contains(SECRET), "{shown}");
    }
    // A database section named by a URI.
    let doc = format!("uri = \"mongodb://h\"\n[databases.\"{uri}\"]\nmax_connections = 1\n");
    let e = invalid(&doc);
    assert!(matches!(e, Error::InvalidName { .. }), "{e:?}");
}

#[test]
fn a_table_named_by_a_uri_twice_is_reported_without_its_password() {
    let doc = format!(
        "uri = \"mongodb://h\"\n[clusters.\"mongodb://ops:{SECRET}@h\"]\n\
         [clusters.\"mongodb://ops:{SECRET}@h\"]\n"
    );
    let err = toml::from_str::<Options>(&doc).expect_err("a table given twice");
    let message = polymongo::redact_config_error(err.message());
    assert!(message.contains("duplicate key"), "{message}");
    assert!(!message.contains(SECRET), "{message}");
}

#[test]
fn unknown_keys_in_read_and_write_concerns_are_refused() {
    for concern in [
        "write_concern = { w = \"majority\", jurnal = true }",
        "write_concern = { w = 1, wtimeout_ms = 500 }",
        "read_concern = { level = \"majority\", afterClusterTime = 1 }",
    ] {
        let doc = format!("uri = \"mongodb://h\"\n[databases.shop]\n{concern}\n");
        let err = toml::from_str::<Options>(&doc).expect_err(&doc);
        assert!(err.message().contains("unknown field"), "{doc}: {err}");
    }
    // Every key the driver knows still reads, the spellings it accepts included.
    let o = parse(
        "uri = \"mongodb://h\"\n[databases.shop]\n\
         write_concern = { w = \"majority\", j = true, wtimeout = 500 }\n\
         read_concern = { level = \"majority\" }\n\
         [databases.logs]\nwrite_concern = { w = 2, journal = false, wtimeoutMS = 100 }\n",
    );
    let shop = o.databases["shop"].write_concern.clone().unwrap();
    assert_eq!(shop.journal, Some(true));
    assert_eq!(shop.w_timeout, Some(Duration::from_millis(500)));
    let logs = o.databases["logs"].write_concern.clone().unwrap();
    assert_eq!(logs.journal, Some(false));
    assert_eq!(logs.w_timeout, Some(Duration::from_millis(100)));
    assert_eq!(
        o.databases["shop"].read_concern,
        Some(polymongo::mongodb::options::ReadConcern::majority())
    );
}

#[tokio::test]
async fn a_pool_of_zero_connections_from_the_uri_is_refused() {
    // The driver would open no connection at all and every operation would wait forever.
    let e = invalid(&format!(
        "uri = \"mongodb://ops:{SECRET}@h/?maxPoolSize=0\"\n"
    ));
    assert_eq!(field_of(&e), "uri", "{e}");
    // The option, when given, decides the size: then the URI's 0 is not used.
    parse("uri = \"mongodb://h/?maxPoolSize=0\"\nmax_pool_size = 5\n")
        .validate()
        .unwrap();
    // On a cluster or a database's own URI, found when the pool is made.
    let doc = "uri = \"mongodb://h\"\n[databases.shop]\nuri = \"mongodb://other/?maxPoolSize=0\"\nmax_connections = 0\n";
    assert_eq!(field_of(&invalid(doc)), "max_connections");
    let e = PolyMongo::builder()
        .uri("mongodb://h")
        .db(
            "shop",
            polymongo::DbConfig::new().uri("mongodb://other/?maxPoolSize=0"),
        )
        .build()
        .await
        .expect_err("a shared pool of zero connections");
    assert!(e.to_string().contains("maxPoolSize"), "{e}");
}

#[test]
fn an_empty_app_name_is_refused() {
    let e = invalid("uri = \"mongodb://h\"\napp_name = \"\"\n");
    assert_eq!(field_of(&e), "app_name");
}

#[test]
fn validate_checks_the_database_sections_too() {
    let e = invalid(&format!(
        "uri = \"mongodb://h\"\n[databases.shop]\nuri = \"mongodb://ops:{SECRET}@h:notaport\"\n"
    ));
    assert!(
        matches!(&e, Error::DbConfig { database, field: "uri", .. } if database == "shop"),
        "{e:?}"
    );
}

#[test]
fn a_malformed_uri_is_told_in_the_drivers_words_without_its_debug_dump() {
    for uri in [
        "x".to_owned(),
        format!("mongodb://ops:{SECRET}@h:notaport"),
        format!("mongodb://ops:{SECRET}@h/?authMechanism=BOGUS"),
    ] {
        let e = invalid(&format!("uri = \"{uri}\"\n"));
        let shown = e.to_string();
        for dump in ["Kind:", "labels:", "source: None", "server response"] {
            assert!(!shown.contains(dump), "{shown}");
        }
    }
}

// ---- generated documents ----

/// What a key expects, so that most generated values are of its type (and so reach the
/// validation) while some are not.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Int,
    Duration,
    Bool,
    Name,
    Uri,
    Text,
    Concern,
}

/// The keys of the configuration, by table, with the kind of value each expects.
const TOP: [(&str, Kind); 17] = [
    ("uri", Kind::Uri),
    ("default_db", Kind::Name),
    ("max_pool_size", Kind::Int),
    ("min_free_connections", Kind::Int),
    ("idle_timeout", Kind::Duration),
    ("cold_start", Kind::Bool),
    ("app_name", Kind::Text),
    ("server_selection_timeout", Kind::Duration),
    ("connect_timeout", Kind::Duration),
    ("heartbeat_frequency", Kind::Duration),
    ("max_dedicated_pools", Kind::Int),
    ("usage_analytics", Kind::Text),
    ("max_tracked_databases", Kind::Int),
    ("database_idle_timeout", Kind::Duration),
    ("max_cached_databases", Kind::Int),
    ("idle_close_grace", Kind::Duration),
    ("wait_queue_timeout", Kind::Duration),
];
const RETRY: [(&str, Kind); 4] = [
    ("attempts", Kind::Int),
    ("interval", Kind::Duration),
    ("backoff", Kind::Int),
    ("max_interval", Kind::Duration),
];
const CLUSTER: [(&str, Kind); 5] = [
    ("uri", Kind::Uri),
    ("capacity", Kind::Int),
    ("weight", Kind::Int),
    ("max_connections", Kind::Int),
    ("min_connections", Kind::Int),
];
const DIRECTORY: [(&str, Kind); 6] = [
    ("cluster", Kind::Name),
    ("database", Kind::Name),
    ("database_prefix", Kind::Name),
    ("refresh", Kind::Duration),
    ("watch", Kind::Bool),
    ("max_staleness", Kind::Duration),
];
const DATABASE: [(&str, Kind); 11] = [
    ("uri", Kind::Uri),
    ("max_connections", Kind::Int),
    ("min_connections", Kind::Int),
    ("auto_close", Kind::Bool),
    ("ttl", Kind::Duration),
    ("cold_start", Kind::Bool),
    ("read_preference", Kind::Concern),
    ("read_concern", Kind::Concern),
    ("write_concern", Kind::Concern),
    ("max_concurrent_ops", Kind::Int),
    ("queue_timeout", Kind::Duration),
];

fn names(keys: &[(&str, Kind)]) -> Vec<String> {
    keys.iter().map(|(k, _)| (*k).to_owned()).collect()
}

fn quoted(s: String) -> String {
    toml::Value::String(s).to_string()
}

/// A TOML value of `kind`, as text: edge numbers, odd durations and names, URIs carrying the
/// secret in their user information or options.
fn value_of(kind: Kind) -> BoxedStrategy<String> {
    match kind {
        Kind::Int => prop_oneof![
            2 => Just(0_i64),
            1 => Just(-1),
            1 => Just(i64::MAX),
            1 => Just(i64::MIN),
            2 => Just(u32::MAX as i64),
            1 => Just(u32::MAX as i64 + 1),
            1 => Just(100_000),
            1 => Just(100_001),
            1 => any::<i64>(),
            30 => 1_i64..64,
        ]
        .prop_map(|n| n.to_string())
        .boxed(),
        Kind::Duration => prop_oneof![
            2 => Just("0s"),
            2 => Just("1ms"),
            2 => Just("9ms"),
            4 => Just("500ms"),
            8 => Just("2s"),
            8 => Just("5m"),
            2 => Just("100years"),
            2 => Just("101years"),
            2 => Just("18446744073709551615s"),
            2 => Just("500000000000years"),
            1 => Just("99999999999999999999999s"),
            1 => Just("-1s"),
            1 => Just(""),
            1 => Just("1 fortnight"),
        ]
        .prop_map(|d| quoted(d.to_owned()))
        .boxed(),
        Kind::Bool => any::<bool>().prop_map(|b| b.to_string()).boxed(),
        Kind::Name => prop_oneof![
            Just("shop".to_owned()),
            Just("main".to_owned()),
            Just("cell_a".to_owned()),
            Just(String::new()),
            Just("a/b".to_owned()),
            Just("a.b".to_owned()),
            Just("x".repeat(64)),
            Just("é".repeat(40)),
            Just("nul\0".to_owned()),
            Just(format!("mongodb://ops:{SECRET}@h/shop")),
            "[a-z_]{1,12}",
            ".{0,20}",
        ]
        .prop_map(quoted)
        .boxed(),
        Kind::Uri => (
            proptest::sample::select(vec![
                "mongodb://",
                "mongodb://",
                "mongodb+srv://",
                "mongodb:/",
                "mongdb://",
                "",
                "http://",
            ]),
            proptest::sample::select(vec![
                "ops:{s}@h",
                "ops:{s}@h",
                "ops:{s}@h:notaport",
                "ops:{s}@",
                "ops:{s}@h/db.bad",
                "h/?proxyPassword={s}",
                "h/?authMechanismProperties=AWS_SESSION_TOKEN:{s}",
                "h/?maxPoolSize=0",
                "h/?minPoolSize=20&maxPoolSize=5",
                "ops:{s}@h/?heartbeatFrequencyMS=18446744073709551615",
                "h",
            ]),
        )
            .prop_map(|(scheme, rest)| quoted(format!("{scheme}{}", rest.replace("{s}", SECRET))))
            .boxed(),
        Kind::Text => prop_oneof![
            Just(String::new()),
            Just("x".repeat(100_000)),
            Just("commands".to_owned()),
            Just("off".to_owned()),
            Just(format!("mongodb://ops:{SECRET}@h")),
            ".{0,20}",
        ]
        .prop_map(quoted)
        .boxed(),
        Kind::Concern => prop_oneof![
            Just("{ mode = \"secondary\" }".to_owned()),
            Just("{ mode = \"primary\", maxStalenessSeconds = 90 }".to_owned()),
            Just("{ mode = \"nearest\", maxStalenessSeconds = -1 }".to_owned()),
            Just("{ level = \"majority\" }".to_owned()),
            Just("{ level = 3 }".to_owned()),
            Just("{ w = \"majority\", j = true, wtimeout = 18446744073709551615 }".to_owned()),
            Just("{ w = \"majority\", journal = true, wtimeout = 500 }".to_owned()),
            Just("{ w = -1 }".to_owned()),
            Just("{ w = 1, bogus = 1 }".to_owned()),
            Just("{}".to_owned()),
            Just("[1, \"a\"]".to_owned()),
        ]
        .boxed(),
    }
}

/// A value for a key of `kind`: mostly of that kind, sometimes of any other.
fn value(kind: Kind) -> impl Strategy<Value = String> {
    let any_kind = proptest::sample::select(vec![
        Kind::Int,
        Kind::Duration,
        Kind::Bool,
        Kind::Name,
        Kind::Uri,
        Kind::Text,
        Kind::Concern,
    ])
    .prop_flat_map(value_of);
    let float =
        prop_oneof![Just("nan"), Just("inf"), Just("-inf"), Just("1.5")].prop_map(str::to_owned);
    prop_oneof![
        80 => value_of(kind),
        1 => any_kind,
        1 => float,
    ]
}

/// `key = value` lines for some of `keys`, with now and then an unknown key or a line given
/// twice.
fn lines(keys: &'static [(&'static str, Kind)]) -> impl Strategy<Value = Vec<String>> {
    (
        proptest::sample::subsequence(keys.to_vec(), 0..=keys.len().min(5)).prop_flat_map(
            |chosen| {
                chosen
                    .into_iter()
                    .map(|(k, kind)| value(kind).prop_map(move |v| format!("{k} = {v}")))
                    .collect::<Vec<_>>()
            },
        ),
        proptest::option::weighted(0.03, value(Kind::Int)),
        proptest::bool::weighted(0.03),
    )
        .prop_map(|(mut lines, bogus, twice)| {
            if let Some(v) = bogus {
                lines.push(format!("bogus_key = {v}"));
            }
            if twice {
                if let Some(first) = lines.first().cloned() {
                    lines.push(first);
                }
            }
            lines
        })
}

/// A whole document: top-level keys (a valid `uri` most of the time), then some of the
/// `[retry]`, `[clusters.NAME]`, `[directory]` and `[databases.NAME]` tables.
fn document() -> impl Strategy<Value = String> {
    let table_name = prop_oneof![
        Just("shop".to_owned()),
        Just("main".to_owned()),
        Just(format!("\"mongodb://ops:{SECRET}@h\"")),
        Just("\"a/b\"".to_owned()),
        Just("\"\"".to_owned()),
        "[a-z]{1,8}",
    ];
    (
        proptest::option::weighted(0.8, Just("uri = \"mongodb://h\"".to_owned())),
        lines(&TOP),
        proptest::option::of(lines(&RETRY)),
        proptest::collection::vec((table_name.clone(), lines(&CLUSTER)), 0..3),
        proptest::option::of(lines(&DIRECTORY)),
        proptest::collection::vec((table_name, lines(&DATABASE)), 0..3),
    )
        .prop_map(|(uri, top, retry, clusters, directory, databases)| {
            let gives_uri = |body: &[String]| body.iter().any(|l| l.starts_with("uri ="));
            // The main `uri` given once (a line of `top` may give it), most of the time.
            let uri = uri.filter(|_| !gives_uri(&top));
            let mut doc: Vec<String> = uri.into_iter().chain(top).collect();
            let mut seen = std::collections::HashSet::new();
            let mut table = |header: String, body: Vec<String>| {
                // A table given twice is in the generated lines already (a line twice).
                if seen.insert(header.clone()) {
                    doc.push(header);
                    doc.extend(body);
                }
            };
            if let Some(body) = retry {
                table("[retry]".into(), body);
            }
            for (name, mut body) in clusters {
                if !gives_uri(&body) {
                    body.push("uri = \"mongodb://cell\"".into());
                }
                table(format!("[clusters.{name}]"), body);
            }
            if let Some(body) = directory {
                table("[directory]".into(), body);
            }
            for (name, body) in databases {
                table(format!("[databases.{name}]"), body);
            }
            doc.join("\n") + "\n"
        })
}

/// Every key the documents can name, as the errors name them.
fn is_known_field(field: &str) -> bool {
    let (table, key) = field.split_once('.').unwrap_or(("", field));
    let key = key.to_owned();
    match table {
        "" => names(&TOP).contains(&key) || ["clusters", "databases"].contains(&field),
        "retry" => names(&RETRY).contains(&key),
        "directory" => names(&DIRECTORY).contains(&key),
        _ => false,
    }
}

fn assert_hidden(doc: &str, shown: &str) {
    assert!(
        !shown.contains(SECRET),
        "secret shown for\n{doc}\n=> {shown}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn generated_documents_validate_or_fail_naming_a_key_without_showing_a_secret(
        doc in document()
    ) {
        let options = match toml::from_str::<Options>(&doc) {
            Err(e) => {
                // What the CLI shows: the parser's message with values removed, and the line.
                let message = polymongo::redact_config_error(e.message());
                assert_hidden(&doc, &message);
                prop_assert!(e.span().is_some(), "no place for {message}\n{doc}");
                return Ok(());
            }
            Ok(o) => o,
        };
        assert_hidden(&doc, &format!("{options:?}"));
        match options.validate() {
            Ok(()) => {
                // Every duration kept is within the documented ceiling.
                for d in [options.database_idle_timeout, options.idle_close_grace] {
                    prop_assert!(d <= polymongo::MAX_DURATION);
                }
            }
            Err(e) => {
                assert_hidden(&doc, &e.to_string());
                assert_hidden(&doc, &format!("{e:?}"));
                match &e {
                    Error::Config { field, .. } => {
                        prop_assert!(is_known_field(field), "{field}: {e}\n{doc}")
                    }
                    Error::DbConfig { field, database, .. } => {
                        prop_assert!(names(&DATABASE).contains(&field.to_string()), "{field}: {e}\n{doc}");
                        prop_assert!(options.databases.contains_key(database), "{e}");
                    }
                    Error::InvalidName { what: "database", name, .. } => prop_assert!(
                        options.databases.keys().any(|k| polymongo::redact_uri(k) == *name),
                        "{e}\n{doc}"
                    ),
                    other => prop_assert!(false, "not a configuration error: {other:?}\n{doc}"),
                }
            }
        }
    }
}

/// Valid generated documents also build (cold, so nothing connects) and close without a
/// panic: the durations and sizes they carry reach the housekeeper, the pools and the driver.
#[test]
fn valid_generated_documents_build_and_close() {
    use proptest::test_runner::{Config, TestRunner};
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut runner = TestRunner::new(Config {
        cases: 512,
        ..Config::default()
    });
    let built = std::cell::Cell::new(0);
    runner
        .run(&document(), |doc| {
            let Ok(mut options) = toml::from_str::<Options>(&doc) else {
                return Ok(());
            };
            options.cold_start = true;
            options
                .databases
                .values_mut()
                .for_each(|d| d.cold_start = None);
            if options.validate().is_err() {
                return Ok(());
            }
            built.set(built.get() + 1);
            runtime.block_on(async {
                match polymongo::PolyMongoBuilder::from_options(options)
                    .build()
                    .await
                {
                    Ok(poly) => {
                        poly.close_all(Duration::from_millis(100)).await;
                    }
                    Err(e) => {
                        assert_hidden(&doc, &e.to_string());
                        assert_hidden(&doc, &format!("{e:?}"));
                    }
                }
            });
            Ok(())
        })
        .unwrap();
    assert!(built.get() > 0, "no generated document was valid");
}
