//! A dump's collection specification is untrusted input: its `options` go into a `create`
//! command only through an allow-list of known collection options, each checked for its
//! type, and the collection's name and database are always the library's own.

use mongodb::bson::{Bson, Document};

use super::format::CollectionSpec;
use crate::floor::name::{validate_collection_name, validate_stored_collection_name};

/// The collection options a dump may carry (those `listCollections` reports and `create`
/// accepts), with the BSON type each must have. Anything else — `create`, `$db`, `lsid`,
/// `writeConcern`, any `$`-prefixed field, an unknown option — is refused.
pub const ALLOWED_COLLECTION_OPTIONS: [&str; 15] = [
    "capped",
    "size",
    "max",
    "validator",
    "validationLevel",
    "validationAction",
    "collation",
    "storageEngine",
    "indexOptionDefaults",
    "viewOn",
    "pipeline",
    "timeseries",
    "expireAfterSeconds",
    "clusteredIndex",
    "changeStreamPreAndPostImages",
];

/// Options the server reports but `create` must not get back as they are, and that carry
/// no meaning for a new collection: dropped silently.
const IGNORED_OPTIONS: [&str; 1] = ["uuid"];

/// The `create` command for `spec`: `{"create": <name>}` followed by its validated options.
/// The error says which option is refused and why.
pub(crate) fn create_command(spec: &CollectionSpec) -> Result<Document, String> {
    validate_stored_collection_name(&spec.name).map_err(|e| e.to_string())?;
    match spec.kind.as_str() {
        "collection" | "view" | "timeseries" => {}
        other => return Err(format!("unknown collection type {other:?}")),
    }
    let mut create = mongodb::bson::doc! { "create": spec.name.as_str() };
    for (key, value) in &spec.options {
        if IGNORED_OPTIONS.contains(&key.as_str()) {
            continue;
        }
        if !ALLOWED_COLLECTION_OPTIONS.contains(&key.as_str()) {
            return Err(format!(
                "collection option {key:?} is not allowed (allowed: {})",
                ALLOWED_COLLECTION_OPTIONS.join(", ")
            ));
        }
        check_option(spec, key, value)?;
        create.insert(key.clone(), value.clone());
    }
    if spec.kind == "view" && !spec.options.contains_key("viewOn") {
        return Err("a view without `viewOn`".into());
    }
    Ok(create)
}

fn check_option(spec: &CollectionSpec, key: &str, value: &Bson) -> Result<(), String> {
    let wrong = |expected: &str| {
        Err(format!(
            "collection option {key:?} must be {expected}, not {}",
            type_name(value)
        ))
    };
    let is_number = matches!(value, Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_));
    match key {
        "capped" if !matches!(value, Bson::Boolean(_)) => return wrong("a boolean"),
        "size" | "max" | "expireAfterSeconds" if !is_number => return wrong("a number"),
        "validator"
        | "collation"
        | "storageEngine"
        | "indexOptionDefaults"
        | "timeseries"
        | "clusteredIndex"
        | "changeStreamPreAndPostImages"
            if !matches!(value, Bson::Document(_)) =>
        {
            return wrong("a document")
        }
        "validationLevel" => match value {
            Bson::String(s) if ["off", "strict", "moderate"].contains(&s.as_str()) => {}
            _ => return wrong("\"off\", \"strict\" or \"moderate\""),
        },
        "validationAction" => match value {
            Bson::String(s) if ["error", "warn", "errorAndLog"].contains(&s.as_str()) => {}
            _ => return wrong("\"error\", \"warn\" or \"errorAndLog\""),
        },
        "viewOn" => {
            if spec.kind != "view" {
                return Err(format!("collection option \"viewOn\" on a {}", spec.kind));
            }
            match value {
                Bson::String(s) => validate_collection_name(s)
                    .map_err(|e| format!("collection option \"viewOn\": {e}"))?,
                _ => return wrong("a string"),
            }
        }
        "pipeline" => {
            if spec.kind != "view" {
                return Err(format!("collection option \"pipeline\" on a {}", spec.kind));
            }
            match value {
                Bson::Array(stages) if stages.iter().all(|s| matches!(s, Bson::Document(_))) => {}
                _ => return wrong("an array of documents"),
            }
        }
        _ => {}
    }
    Ok(())
}

fn type_name(value: &Bson) -> &'static str {
    match value {
        Bson::Double(_) | Bson::Int32(_) | Bson::Int64(_) | Bson::Decimal128(_) => "a number",
        Bson::String(_) => "a string",
        Bson::Document(_) => "a document",
        Bson::Array(_) => "an array",
        Bson::Boolean(_) => "a boolean",
        Bson::Null => "null",
        _ => "another type",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::doc;

    fn spec(kind: &str, options: Document) -> CollectionSpec {
        CollectionSpec {
            name: "orders".into(),
            kind: kind.into(),
            options,
            indexes: Vec::new(),
        }
    }

    #[test]
    fn known_options_pass_and_the_name_is_ours() {
        let c = create_command(&spec(
            "collection",
            doc! { "capped": true, "size": 4096_i64, "validator": { "a": 1 } },
        ))
        .unwrap();
        assert_eq!(c.keys().next().map(String::as_str), Some("create"));
        assert_eq!(c.get_str("create").unwrap(), "orders");
    }

    #[test]
    fn create_db_and_unknown_options_are_refused() {
        for bad in [
            doc! { "create": "other" },
            doc! { "$db": "admin" },
            doc! { "writeConcern": { "w": 0 } },
            doc! { "lsid": {} },
            doc! { "nonsense": 1 },
        ] {
            let e = create_command(&spec("collection", bad.clone())).unwrap_err();
            assert!(e.contains("not allowed"), "{bad}: {e}");
        }
    }

    #[test]
    fn option_types_are_checked() {
        assert!(create_command(&spec("collection", doc! { "capped": "yes" })).is_err());
        assert!(create_command(&spec("collection", doc! { "validationLevel": "none" })).is_err());
        assert!(create_command(&spec("collection", doc! { "viewOn": "x" })).is_err());
        assert!(create_command(&spec(
            "view",
            doc! { "viewOn": "system.users", "pipeline": [] }
        ))
        .is_err());
        assert!(create_command(&spec("view", doc! { "viewOn": "a", "pipeline": [] })).is_ok());
        assert!(create_command(&spec("weird", doc! {})).is_err());
    }
}
