//! The dump format without a server: every BSON type round-trips byte for byte (generated
//! documents included), and every kind of bad input is a typed error naming its line.

use std::str::FromStr;

use mongodb::bson::oid::ObjectId;
use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{
    doc, Binary, Bson, DateTime, Decimal128, Document, JavaScriptCodeWithScope, Regex, Timestamp,
};
use polymongo::bulk::{CollectionDump, Dump, DumpProblem, FORMAT_VERSION};
use polymongo::Error;
use proptest::prelude::*;

fn bytes_of(d: &Document) -> Vec<u8> {
    mongodb::bson::to_vec(d).expect("a document encodes to BSON")
}

/// Writes `documents` as one collection and reads them back.
fn round_trip(documents: Vec<Document>) -> Vec<Document> {
    let dump = Dump::new("rt", vec![CollectionDump::new("c", documents)]);
    let bytes = dump.to_bytes();
    let back = Dump::read_from(&bytes[..]).expect("our own output reads back");
    assert_eq!(back.database, "rt");
    back.collections
        .into_iter()
        .next()
        .expect("one collection")
        .documents
}

fn db_pointer() -> Bson {
    // The crate offers no constructor for the deprecated DBPointer; Extended JSON makes one.
    let json = serde_json::json!({
        "$dbPointer": { "$ref": "db.coll", "$id": { "$oid": "57e193d7a9cc81b4027498b5" } }
    });
    Bson::try_from(json).expect("a DBPointer")
}

/// One document holding every BSON type, edge values included.
fn every_type() -> Document {
    doc! {
        "_id": ObjectId::parse_str("5f0c3d8b9e1a4b2c3d4e5f60").unwrap(),
        "double": 1.5,
        "double_int": 3.0,
        "neg_zero": -0.0_f64,
        "tiny": f64::MIN_POSITIVE / 4.0,
        // A negative subnormal that a best-effort JSON float parser gets wrong in its last bit.
        "neg_subnormal": f64::from_bits(0x800d_3812_cd4d_03a7),
        "huge": 1e300,
        "inf": f64::INFINITY,
        "ninf": f64::NEG_INFINITY,
        "string": "héllo\u{0}wörld\n\"",
        "doc": { "nested": { "deeper": [1, { "x": "y" }] } },
        "array": [1_i32, 2_i64, "three", null, [], {}],
        "bin_generic": Binary { subtype: BinarySubtype::Generic, bytes: vec![0, 1, 255] },
        "bin_uuid": Binary { subtype: BinarySubtype::Uuid, bytes: vec![7; 16] },
        "bin_md5": Binary { subtype: BinarySubtype::Md5, bytes: vec![9; 16] },
        "bin_user": Binary { subtype: BinarySubtype::UserDefined(0x80), bytes: vec![] },
        "undefined": Bson::Undefined,
        "oid": ObjectId::parse_str("000000000000000000000000").unwrap(),
        "true": true,
        "false": false,
        "date": DateTime::from_millis(1_700_000_000_123),
        "date_before_1970": DateTime::from_millis(-62_135_596_800_000),
        "date_far": DateTime::from_millis(i64::MAX),
        "null": null,
        "regex": Regex { pattern: "^a.*b$".into(), options: "imsx".into() },
        "db_pointer": db_pointer(),
        "code": Bson::JavaScriptCode("function() { return 1; }".into()),
        "symbol": Bson::Symbol("sym".into()),
        "code_w_scope": JavaScriptCodeWithScope { code: "x + y".into(), scope: doc! { "x": 1, "y": 2_i64 } },
        "int32": i32::MIN,
        "timestamp": Timestamp { time: 4_000_000_000, increment: 7 },
        "int64": i64::MAX,
        "int64_small": 5_i64,
        "decimal": Decimal128::from_str("-1234567890.123456789E-20").unwrap(),
        "decimal_inf": Decimal128::from_str("Infinity").unwrap(),
        "minkey": Bson::MinKey,
        "maxkey": Bson::MaxKey,
    }
}

#[test]
fn every_bson_type_round_trips_byte_for_byte() {
    let original = every_type();
    let back = round_trip(vec![original.clone()]);
    assert_eq!(back.len(), 1);
    assert_eq!(bytes_of(&back[0]), bytes_of(&original), "{:#?}", back[0]);
}

#[test]
fn options_and_index_specs_round_trip_exactly() {
    let options = doc! {
        "validator": { "$jsonSchema": { "required": ["email"] }, "n": { "$regex": "^a", "$options": "i" } },
        "collation": { "locale": "fr", "strength": 2 },
        "capped": true, "size": 4096_i64, "max": 10,
    };
    let indexes = vec![
        doc! { "key": { "email": 1, "created": -1 }, "name": "email_1_created_-1", "unique": true },
        doc! { "key": { "loc": "2dsphere" }, "name": "loc_2dsphere", "2dsphereIndexVersion": 3 },
        doc! { "key": { "expires": 1 }, "name": "ttl", "expireAfterSeconds": 3600 },
    ];
    let dump = Dump::new(
        "opts",
        vec![CollectionDump::new("c", vec![])
            .with_options(options.clone())
            .with_indexes(indexes.clone())],
    );
    let back = Dump::read_from(&dump.to_bytes()[..]).unwrap();
    let c = &back.collections[0];
    assert_eq!(bytes_of(&c.options), bytes_of(&options));
    let specs: Vec<Vec<u8>> = c.indexes.iter().map(bytes_of).collect();
    assert_eq!(specs, indexes.iter().map(bytes_of).collect::<Vec<_>>());
}

#[test]
fn the_file_is_documented_ndjson_with_a_header_and_an_end() {
    let dump = Dump::new(
        "shop",
        vec![CollectionDump::new("orders", vec![doc! { "_id": 1_i64 }])],
    );
    let text = String::from_utf8(dump.to_bytes()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(
        lines[0].starts_with(r#"{"polymongo_dump":{"version":1,"database":"shop","created":""#),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].starts_with(r#"{"collection":{"name":"orders","type":"collection""#),
        "{}",
        lines[1]
    );
    assert_eq!(lines[2], r#"{"document":{"_id":{"$numberLong":"1"}}}"#);
    assert_eq!(lines[3], r#"{"end":{"collections":1,"documents":1}}"#);
    assert!(text.ends_with('\n'));
    assert_eq!(FORMAT_VERSION, 1);
}

// ---- bad input: each a typed error naming its line ----

const HEADER: &str = r#"{"polymongo_dump":{"version":1,"database":"d","created":"2026-11-25T00:00:00Z","producer":"test"}}"#;
const COLLECTION: &str =
    r#"{"collection":{"name":"c","type":"collection","options":{},"indexes":[]}}"#;
const DOCUMENT: &str = r#"{"document":{"_id":{"$numberInt":"1"}}}"#;
const END_1: &str = r#"{"end":{"collections":1,"documents":1}}"#;

fn read(text: &str) -> Result<Dump, Error> {
    Dump::read_from(text.as_bytes())
}

fn problem_at(text: &str) -> (u64, DumpProblem) {
    match read(text) {
        Err(Error::Dump { line, problem }) => (line, problem),
        other => panic!("expected a dump error, got {other:?}"),
    }
}

#[test]
fn a_well_formed_file_reads() {
    let d = read(&format!("{HEADER}\n{COLLECTION}\n{DOCUMENT}\n{END_1}\n")).unwrap();
    assert_eq!(d.collections[0].documents, vec![doc! { "_id": 1 }]);
    // Windows line ends are accepted.
    read(&format!(
        "{HEADER}\r\n{COLLECTION}\r\n{DOCUMENT}\r\n{END_1}\r\n"
    ))
    .unwrap();
}

#[test]
fn bad_input_names_its_line_and_problem() {
    type Expect = fn(&DumpProblem) -> bool;
    let cases: Vec<(String, u64, Expect)> = vec![
        (
            format!("{HEADER}\n{COLLECTION}\n{DOCUMENT}\n{END_1}"),
            4,
            |p| *p == DumpProblem::TruncatedLine,
        ),
        (
            format!("{HEADER}\n{COLLECTION}\n{{\"document\":{{\"_id\":\n{END_1}\n"),
            3,
            |p| matches!(p, DumpProblem::InvalidJson(_)),
        ),
        (
            format!("{HEADER}\n{COLLECTION}\n{{\"comment\":{{}}}}\n{END_1}\n"),
            3,
            |p| *p == DumpProblem::UnknownRecord("comment".into()),
        ),
        (
            format!("{HEADER}\n{DOCUMENT}\n{COLLECTION}\n{END_1}\n"),
            2,
            |p| *p == DumpProblem::DocumentBeforeCollection,
        ),
        (
            format!(
                "{}\n{COLLECTION}\n{END_1}\n",
                HEADER.replace("\"version\":1", "\"version\":2")
            ),
            1,
            |p| *p == DumpProblem::FutureVersion { found: 2, supported: 1 },
        ),
        (
            format!("{COLLECTION}\n{HEADER}\n"),
            1,
            |p| *p == DumpProblem::NotADump,
        ),
        (
            format!("{HEADER}\n{COLLECTION}\n{DOCUMENT}\n"),
            4,
            |p| *p == DumpProblem::MissingEnd,
        ),
        (
            format!("{HEADER}\n{COLLECTION}\n{END_1}\n"),
            3,
            |p| matches!(p, DumpProblem::CountMismatch { expected: (1, 1), found: (1, 0) }),
        ),
        (
            format!("{HEADER}\n{COLLECTION}\n{{\"document\":{{\"n\":{{\"$numberLong\":\"x\"}}}}}}\n{END_1}\n"),
            3,
            |p| matches!(p, DumpProblem::InvalidRecord(_)),
        ),
        (
            format!("{HEADER}\n{COLLECTION}\n{DOCUMENT}\n{END_1}\n{DOCUMENT}\n"),
            5,
            |p| *p == DumpProblem::DataAfterEnd,
        ),
        (String::new(), 1, |p| *p == DumpProblem::NotADump),
    ];
    for (text, line, expected) in cases {
        let (got_line, problem) = problem_at(&text);
        assert!(expected(&problem), "{text:?}: got {problem:?}");
        assert_eq!(got_line, line, "{text:?}: {problem}");
        // The message names the line.
        let message = Error::Dump {
            line: got_line,
            problem,
        }
        .to_string();
        assert!(
            message.starts_with(&format!("dump line {line}: ")),
            "{message}"
        );
    }
}

// ---- generated documents ----

fn key() -> impl Strategy<Value = String> {
    // Keys starting with `$` collide with Extended JSON's own keys (a limit of the format,
    // documented); NUL cannot appear in a BSON key.
    "[a-zA-Z_][a-zA-Z0-9_ .é]{0,12}"
}

fn double() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>().prop_filter("NaN payloads are not kept", |f| !f.is_nan()),
        Just(f64::NAN),
        Just(-0.0),
        Just(f64::MIN_POSITIVE / 3.0),
    ]
}

fn decimal() -> impl Strategy<Value = Decimal128> {
    (any::<i64>(), -6000i32..6000).prop_map(|(c, e)| {
        Decimal128::from_str(&format!("{c}E{e}")).expect("a valid decimal string")
    })
}

fn scalar() -> impl Strategy<Value = Bson> {
    prop_oneof![
        double().prop_map(Bson::Double),
        ".{0,20}".prop_map(Bson::String),
        any::<bool>().prop_map(Bson::Boolean),
        Just(Bson::Null),
        any::<i32>().prop_map(Bson::Int32),
        any::<i64>().prop_map(Bson::Int64),
        any::<i64>().prop_map(|ms| Bson::DateTime(DateTime::from_millis(ms))),
        any::<[u8; 12]>().prop_map(|b| Bson::ObjectId(ObjectId::from_bytes(b))),
        (
            prop_oneof![
                Just(0u8),
                Just(1),
                Just(3),
                Just(4),
                Just(5),
                Just(6),
                Just(0x80)
            ],
            proptest::collection::vec(any::<u8>(), 0..40)
        )
            .prop_map(|(t, bytes)| Bson::Binary(Binary {
                subtype: BinarySubtype::from(t),
                bytes
            })),
        (
            "[a-z.*^$]{0,10}",
            proptest::sample::subsequence(vec!['i', 'l', 'm', 's', 'u', 'x'], 0..=6)
        )
            .prop_map(|(pattern, opts)| Bson::RegularExpression(Regex {
                pattern,
                options: opts.into_iter().collect()
            })),
        (any::<u32>(), any::<u32>())
            .prop_map(|(time, increment)| Bson::Timestamp(Timestamp { time, increment })),
        decimal().prop_map(Bson::Decimal128),
        ".{0,10}".prop_map(Bson::JavaScriptCode),
        ".{0,10}".prop_map(Bson::Symbol),
        Just(Bson::Undefined),
        Just(Bson::MinKey),
        Just(Bson::MaxKey),
        Just(db_pointer()),
    ]
}

fn value() -> impl Strategy<Value = Bson> {
    scalar().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Bson::Array),
            proptest::collection::vec((key(), inner), 0..6)
                .prop_map(|pairs| Bson::Document(pairs.into_iter().collect())),
        ]
    })
}

fn document() -> impl Strategy<Value = Document> {
    proptest::collection::vec((key(), value()), 0..10).prop_map(|pairs| pairs.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn generated_documents_round_trip_byte_for_byte(docs in proptest::collection::vec(document(), 1..5)) {
        let back = round_trip(docs.clone());
        prop_assert_eq!(back.len(), docs.len());
        for (b, d) in back.iter().zip(&docs) {
            prop_assert_eq!(bytes_of(b), bytes_of(d));
        }
    }
}
