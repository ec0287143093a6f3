//! The dump format: newline-delimited JSON records, documents in canonical Extended JSON v2.
//!
//! ```text
//! {"polymongo_dump":{"version":1,"database":"shop","created":"2026-11-25T14:50:00Z","producer":"polymongo 0.1.0"}}
//! {"collection":{"name":"orders","type":"collection","options":{…},"indexes":[{…}]}}
//! {"document":{"_id":{"$oid":"…"},"total":{"$numberLong":"40"}}}
//! …
//! {"end":{"collections":1,"documents":1}}
//! ```
//!
//! Every record is one JSON object with one key naming its kind. Documents belong to the
//! collection record before them. The `end` record carries the counts, so a file cut short
//! is told from a complete one. `docs/dump-format.md` is the specification.

use mongodb::bson::{Bson, DateTime, Document};
use serde_json::{Map, Value};

use crate::floor::bulk_report::{DumpProblem, FORMAT_NAME, FORMAT_VERSION};

/// The first record of a dump.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Header {
    pub(crate) version: u32,
    pub(crate) database: String,
    pub(crate) created: DateTime,
    pub(crate) producer: String,
}

/// A collection record: what is needed to recreate the collection before its documents.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CollectionSpec {
    pub(crate) name: String,
    /// `collection`, `view` or `timeseries`, as `listCollections` says.
    pub(crate) kind: String,
    /// `listCollections` options (validator, capped, collation, view pipeline…).
    pub(crate) options: Document,
    /// Index specifications as `listIndexes` gives them, without the `_id` index.
    pub(crate) indexes: Vec<Document>,
}

/// One decoded record.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Record {
    Header(Header),
    Collection(CollectionSpec),
    Document(Document),
    End { collections: u64, documents: u64 },
}

/// Appends one record line (with its newline) to `out`.
pub(crate) fn encode(record: &Record, out: &mut Vec<u8>) {
    let (kind, body) = match record {
        Record::Header(h) => {
            let created = h
                .created
                .try_to_rfc3339_string()
                .unwrap_or_else(|_| h.created.timestamp_millis().to_string());
            let mut m = Map::new();
            m.insert("version".into(), h.version.into());
            m.insert("database".into(), h.database.clone().into());
            m.insert("created".into(), created.into());
            m.insert("producer".into(), h.producer.clone().into());
            (FORMAT_NAME, Value::Object(m))
        }
        Record::Collection(c) => {
            let mut m = Map::new();
            m.insert("name".into(), c.name.clone().into());
            m.insert("type".into(), c.kind.clone().into());
            m.insert("options".into(), canonical(c.options.clone()));
            m.insert(
                "indexes".into(),
                Value::Array(c.indexes.iter().cloned().map(canonical).collect()),
            );
            (RECORD_COLLECTION, Value::Object(m))
        }
        Record::Document(d) => {
            return encode_document(d.clone(), out);
        }
        Record::End {
            collections,
            documents,
        } => {
            let mut m = Map::new();
            m.insert("collections".into(), (*collections).into());
            m.insert("documents".into(), (*documents).into());
            (RECORD_END, Value::Object(m))
        }
    };
    let mut record = Map::new();
    record.insert(kind.to_owned(), body);
    // Writing a `Value` to a `Vec` cannot fail.
    let _ = serde_json::to_writer(&mut *out, &Value::Object(record));
    out.push(b'\n');
}

/// Appends one document record line to `out`: the hot path of an export.
pub(crate) fn encode_document(doc: Document, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"document\":");
    let _ = serde_json::to_writer(&mut *out, &canonical(doc));
    out.extend_from_slice(b"}\n");
}

const RECORD_COLLECTION: &str = "collection";
const RECORD_DOCUMENT: &str = "document";
const RECORD_END: &str = "end";

fn canonical(doc: Document) -> Value {
    Bson::Document(doc).into_canonical_extjson()
}

/// Decodes one line (without its newline).
pub(crate) fn decode(line: &[u8]) -> Result<Record, DumpProblem> {
    let value: Value =
        serde_json::from_slice(line).map_err(|e| DumpProblem::InvalidJson(e.to_string()))?;
    let Value::Object(record) = value else {
        return Err(DumpProblem::InvalidRecord(
            "a record must be a JSON object".into(),
        ));
    };
    if record.len() != 1 {
        return Err(DumpProblem::InvalidRecord(format!(
            "a record has exactly one key (its type), this one has {}",
            record.len()
        )));
    }
    let Some((kind, body)) = record.into_iter().next() else {
        return Err(DumpProblem::InvalidRecord("empty record".into()));
    };
    match kind.as_str() {
        RECORD_DOCUMENT => Ok(Record::Document(document(body, "document")?)),
        RECORD_COLLECTION => {
            let mut body = object(body, "collection")?;
            let name = string(&mut body, "name")?;
            let kind = string(&mut body, "type")?;
            let options = document(take(&mut body, "options")?, "options")?;
            let Value::Array(indexes) = take(&mut body, "indexes")? else {
                return Err(DumpProblem::InvalidRecord(
                    "`indexes` must be an array".into(),
                ));
            };
            let indexes = indexes
                .into_iter()
                .map(|i| document(i, "index"))
                .collect::<Result<_, _>>()?;
            Ok(Record::Collection(CollectionSpec {
                name,
                kind,
                options,
                indexes,
            }))
        }
        RECORD_END => {
            let mut body = object(body, "end")?;
            Ok(Record::End {
                collections: number(&mut body, "collections")?,
                documents: number(&mut body, "documents")?,
            })
        }
        FORMAT_NAME => {
            let mut body = object(body, FORMAT_NAME)?;
            let version = number(&mut body, "version")?;
            if version > u64::from(FORMAT_VERSION) {
                return Err(DumpProblem::FutureVersion {
                    found: version,
                    supported: FORMAT_VERSION,
                });
            }
            let created = string(&mut body, "created")?;
            Ok(Record::Header(Header {
                version: version as u32,
                database: string(&mut body, "database")?,
                created: DateTime::parse_rfc3339_str(&created).map_err(|e| {
                    DumpProblem::InvalidRecord(format!("`created` is not an RFC 3339 time: {e}"))
                })?,
                producer: body
                    .remove("producer")
                    .and_then(|p| p.as_str().map(str::to_owned))
                    .unwrap_or_default(),
            }))
        }
        other => Err(DumpProblem::UnknownRecord(other.to_owned())),
    }
}

fn object(value: Value, what: &str) -> Result<Map<String, Value>, DumpProblem> {
    match value {
        Value::Object(m) => Ok(m),
        _ => Err(DumpProblem::InvalidRecord(format!(
            "`{what}` must be an object"
        ))),
    }
}

fn take(body: &mut Map<String, Value>, field: &str) -> Result<Value, DumpProblem> {
    body.remove(field)
        .ok_or_else(|| DumpProblem::InvalidRecord(format!("missing field `{field}`")))
}

fn string(body: &mut Map<String, Value>, field: &str) -> Result<String, DumpProblem> {
    match take(body, field)? {
        Value::String(s) => Ok(s),
        _ => Err(DumpProblem::InvalidRecord(format!(
            "`{field}` must be a string"
        ))),
    }
}

fn number(body: &mut Map<String, Value>, field: &str) -> Result<u64, DumpProblem> {
    take(body, field)?.as_u64().ok_or_else(|| {
        DumpProblem::InvalidRecord(format!("`{field}` must be a non-negative integer"))
    })
}

fn document(value: Value, what: &str) -> Result<Document, DumpProblem> {
    if !value.is_object() {
        return Err(DumpProblem::InvalidRecord(format!(
            "`{what}` must be an object"
        )));
    }
    match Bson::try_from(value) {
        Ok(Bson::Document(d)) => Ok(d),
        Ok(other) => Err(DumpProblem::InvalidRecord(format!(
            "`{what}` is an Extended JSON {:?}, not a document",
            other.element_type()
        ))),
        Err(e) => Err(DumpProblem::InvalidRecord(format!(
            "`{what}` is not valid Extended JSON: {e}"
        ))),
    }
}

/// Checks the order of records as they are read: header first, documents after a
/// collection, nothing after the end, counts equal to the end record's.
#[derive(Debug, Default)]
pub(crate) struct Sequence {
    header: bool,
    ended: bool,
    in_collection: bool,
    collections: u64,
    documents: u64,
}

impl Sequence {
    /// Accepts `record` or says why it is out of place. A document out of place does not
    /// change the state, so reading can go on after it.
    pub(crate) fn accept(&mut self, record: &Record) -> Result<(), DumpProblem> {
        if self.ended {
            return Err(DumpProblem::DataAfterEnd);
        }
        match record {
            Record::Header(_) if self.header => Err(DumpProblem::DuplicateHeader),
            Record::Header(_) => {
                self.header = true;
                Ok(())
            }
            _ if !self.header => Err(DumpProblem::NotADump),
            Record::Collection(_) => {
                self.in_collection = true;
                self.collections += 1;
                Ok(())
            }
            Record::Document(_) if !self.in_collection => {
                Err(DumpProblem::DocumentBeforeCollection)
            }
            Record::Document(_) => {
                self.documents += 1;
                Ok(())
            }
            Record::End {
                collections,
                documents,
            } => {
                self.ended = true;
                if (*collections, *documents) != (self.collections, self.documents) {
                    return Err(DumpProblem::CountMismatch {
                        expected: (*collections, *documents),
                        found: (self.collections, self.documents),
                    });
                }
                Ok(())
            }
        }
    }

    /// Called at the end of the input.
    pub(crate) fn finish(&self) -> Result<(), DumpProblem> {
        if !self.header {
            return Err(DumpProblem::NotADump);
        }
        if !self.ended {
            return Err(DumpProblem::MissingEnd);
        }
        Ok(())
    }

    /// Whether the header was read.
    pub(crate) fn started(&self) -> bool {
        self.header
    }
}
