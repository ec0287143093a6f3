//! The allow-list of declarative steps and the "own database only" rule.

use mongodb::bson::{Bson, Document};

use crate::floor::migration_error::MigrationError;

/// Commands a declarative step may run: schema and data changes within one database.
pub const ALLOWED_COMMANDS: &[&str] = &[
    "createIndexes",
    "dropIndexes",
    "update",
    "delete",
    "insert",
    "collMod",
    "create",
    "drop",
    "renameCollection",
];

/// Checks a command: its name is on the allow-list and nothing in it addresses another
/// database — no `$db` anywhere, no `$out` / `$merge` stage, no `{db: ..}` namespace under
/// `from` or `$unionWith`, and collection names (the command's value, `to`) are strings.
pub(crate) fn check(version: u64, command: &Document) -> Result<(), MigrationError> {
    let name = command.keys().next().cloned().unwrap_or_default();
    if !ALLOWED_COMMANDS.contains(&name.as_str()) {
        return Err(MigrationError::CommandNotAllowed {
            version,
            command: name,
        });
    }
    let refuse = |field: &str| MigrationError::CrossDatabase {
        version,
        command: name.clone(),
        field: field.to_owned(),
    };
    if !matches!(command.get(&name), Some(Bson::String(_))) {
        return Err(refuse(&name));
    }
    if name == "renameCollection" && !matches!(command.get("to"), Some(Bson::String(_))) {
        return Err(refuse("to"));
    }
    match find_foreign(command) {
        Some(field) => Err(refuse(&field)),
        None => Ok(()),
    }
}

/// The first field, at any depth, that could address another database.
fn find_foreign(doc: &Document) -> Option<String> {
    for (key, value) in doc {
        if matches!(key.as_str(), "$db" | "$out" | "$merge") {
            return Some(key.clone());
        }
        if matches!(
            key.as_str(),
            "from" | "$unionWith" | "$lookup" | "$graphLookup"
        ) {
            if let Bson::Document(d) = value {
                if d.contains_key("db") {
                    return Some(format!("{key}.db"));
                }
            }
        }
        if let Some(found) = find_foreign_in(value) {
            return Some(found);
        }
    }
    None
}

fn find_foreign_in(value: &Bson) -> Option<String> {
    match value {
        Bson::Document(d) => find_foreign(d),
        Bson::Array(items) => items.iter().find_map(find_foreign_in),
        _ => None,
    }
}

/// The command as it is sent to tenant database `db`, and whether it is a rename:
/// `renameCollection` gets full namespaces.
pub(crate) fn for_database(command: &Document, db: &str) -> (bool, Document) {
    if !command.contains_key("renameCollection") {
        return (false, command.clone());
    }
    let mut out = Document::new();
    for (key, value) in command {
        match (key.as_str(), value) {
            ("renameCollection" | "to", Bson::String(coll)) => {
                out.insert(key.clone(), format!("{db}.{coll}"));
            }
            _ => {
                out.insert(key.clone(), value.clone());
            }
        }
    }
    (true, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::doc;

    #[test]
    fn allowed_commands_pass_and_others_are_named() {
        assert!(check(1, &doc! { "createIndexes": "u", "indexes": [] }).is_ok());
        assert_eq!(
            check(2, &doc! { "dropDatabase": 1 }),
            Err(MigrationError::CommandNotAllowed {
                version: 2,
                command: "dropDatabase".into()
            })
        );
    }

    #[test]
    fn other_databases_are_refused_at_any_depth() {
        let nested = doc! { "update": "u", "updates": [{ "q": {}, "u": [{ "$merge": "x" }] }] };
        assert!(matches!(
            check(3, &nested),
            Err(MigrationError::CrossDatabase { field, .. }) if field == "$merge"
        ));
        assert!(check(3, &doc! { "drop": "u", "$db": "other" }).is_err());
        assert!(check(
            3,
            &doc! { "create": "v", "viewOn": "u",
            "pipeline": [{ "$lookup": { "from": { "db": "x", "coll": "y" } } }] }
        )
        .is_err());
    }

    #[test]
    fn rename_gets_the_tenant_namespace() {
        let (admin, cmd) = for_database(&doc! { "renameCollection": "a", "to": "b" }, "t1");
        assert!(admin);
        assert_eq!(cmd, doc! { "renameCollection": "t1.a", "to": "t1.b" });
    }
}
