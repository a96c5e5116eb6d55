//! The database-event contract: what the application API publishes to the database-event SNS topic.
//!
//! ```json
//! {"event": "records_created" | "record_updated" | "records_deleted", "table": "users",
//!  "records": [{"email": "...", "firstName": "..."}], "eventId": "optional", "occurredAt": "optional RFC 3339"}
//! ```
//! A single `"record": {row}` is accepted in place of `"records"`. Rows keep the API's camelCase column names and
//! `_tenant` as is. Unknown fields are ignored. The contract, with examples: docs/contract.md.

use serde::Deserialize;
use serde_json::{Map, Value};

/// One database row as the API sent it.
pub type Row = Map<String, Value>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    RecordsCreated,
    RecordUpdated,
    RecordsDeleted,
    /// An event name this version does not know. Kept, not rejected, so workers can acknowledge it and count it.
    Other(String),
}

impl EventKind {
    pub fn parse(name: &str) -> Self {
        match name {
            "records_created" => EventKind::RecordsCreated,
            "record_updated" => EventKind::RecordUpdated,
            "records_deleted" => EventKind::RecordsDeleted,
            other => EventKind::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            EventKind::RecordsCreated => "records_created",
            EventKind::RecordUpdated => "record_updated",
            EventKind::RecordsDeleted => "records_deleted",
            EventKind::Other(name) => name,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct DatabaseEvent {
    pub kind: EventKind,
    pub table: String,
    pub rows: Vec<Row>,
    pub event_id: Option<String>,
    pub occurred_at: Option<String>,
    /// A tenant named on the event itself, for rows that do not carry `_tenant`.
    pub tenant: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DatabaseEventError {
    #[error("database event is not valid JSON of the expected shape: {0}")]
    Malformed(String),
    #[error("database event has neither `records` nor `record`")]
    NoRecords,
    #[error("database event has both `records` and `record`; send one of them")]
    BothRecordForms,
    #[error("database event field `{0}` must be a non-empty string")]
    EmptyField(&'static str),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireEvent {
    event: String,
    table: String,
    #[serde(default)]
    records: Option<Vec<Row>>,
    #[serde(default)]
    record: Option<Row>,
    #[serde(default)]
    event_id: Option<String>,
    #[serde(default)]
    occurred_at: Option<String>,
    #[serde(default)]
    tenant: Option<String>,
}

impl DatabaseEvent {
    pub fn from_json(text: &str) -> Result<Self, DatabaseEventError> {
        let wire: WireEvent = serde_json::from_str(text).map_err(|e| DatabaseEventError::Malformed(e.to_string()))?;
        if wire.event.trim().is_empty() {
            return Err(DatabaseEventError::EmptyField("event"));
        }
        if wire.table.trim().is_empty() {
            return Err(DatabaseEventError::EmptyField("table"));
        }
        let rows = match (wire.records, wire.record) {
            (Some(_), Some(_)) => return Err(DatabaseEventError::BothRecordForms),
            (Some(rows), None) => rows,
            (None, Some(row)) => vec![row],
            (None, None) => return Err(DatabaseEventError::NoRecords),
        };
        Ok(DatabaseEvent {
            kind: EventKind::parse(&wire.event),
            table: wire.table,
            rows,
            event_id: wire.event_id,
            occurred_at: wire.occurred_at,
            tenant: wire.tenant.filter(|t| !t.is_empty()),
        })
    }

    /// Validates every row with `validate`; the first invalid row makes the error, naming its index. Workers call
    /// it before their first write, so an invalid record changes nothing.
    pub fn map_rows<T>(&self, validate: impl Fn(&Row) -> Result<T, String>) -> Result<Vec<T>, String> {
        self.rows
            .iter()
            .enumerate()
            .map(|(i, row)| validate(row).map_err(|e| format!("row {i}: {e}")))
            .collect()
    }

    /// A short label for logs and metrics: `users/record_updated`.
    pub fn label(&self) -> String {
        format!("{}/{}", self.table, self.kind.as_str())
    }
}

/// A row's field as a non-empty string: `Ok(None)` when absent or null, an error naming the field otherwise.
pub fn row_string<'a>(row: &'a Row, field: &str) -> Result<Option<&'a str>, String> {
    match row.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(format!("field `{field}` must be a string, got {}", json_type(other))),
    }
}

/// The JSON type name of a value, for error messages that must not echo the value itself (it may be personal data).
pub fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_records_array_with_optional_fields() {
        let event = DatabaseEvent::from_json(
            r#"{"event":"records_created","table":"users","records":[{"email":"a@b.co"},{"email":"c@d.co"}],
                "eventId":"e-1","occurredAt":"2026-11-20T10:00:00Z","unknownField":1}"#,
        )
        .unwrap();
        assert_eq!(event.kind, EventKind::RecordsCreated);
        assert_eq!(event.table, "users");
        assert_eq!(event.rows.len(), 2);
        assert_eq!(event.rows[1]["email"], json!("c@d.co"));
        assert_eq!(event.event_id.as_deref(), Some("e-1"));
        assert_eq!(event.occurred_at.as_deref(), Some("2026-11-20T10:00:00Z"));
        assert_eq!(event.label(), "users/records_created");
    }

    #[test]
    fn single_record_is_accepted_in_place_of_records() {
        let event =
            DatabaseEvent::from_json(r#"{"event":"record_updated","table":"users","record":{"email":"a@b.co"}}"#)
                .unwrap();
        assert_eq!(event.kind, EventKind::RecordUpdated);
        assert_eq!(event.rows, vec![json!({"email":"a@b.co"}).as_object().unwrap().clone()]);
    }

    #[test]
    fn unknown_event_name_is_kept_not_rejected() {
        let event = DatabaseEvent::from_json(r#"{"event":"records_archived","table":"users","records":[]}"#).unwrap();
        assert_eq!(event.kind, EventKind::Other("records_archived".into()));
        assert_eq!(event.kind.as_str(), "records_archived");
    }

    #[test]
    fn invalid_shapes_are_errors() {
        assert!(matches!(
            DatabaseEvent::from_json("not json"),
            Err(DatabaseEventError::Malformed(_))
        ));
        assert!(matches!(
            DatabaseEvent::from_json(r#"{"table":"users","records":[]}"#),
            Err(DatabaseEventError::Malformed(_))
        ));
        assert_eq!(
            DatabaseEvent::from_json(r#"{"event":"records_created","table":"users"}"#),
            Err(DatabaseEventError::NoRecords)
        );
        assert_eq!(
            DatabaseEvent::from_json(r#"{"event":"records_created","table":"users","records":[],"record":{}}"#),
            Err(DatabaseEventError::BothRecordForms)
        );
        assert_eq!(
            DatabaseEvent::from_json(r#"{"event":"","table":"users","records":[]}"#),
            Err(DatabaseEventError::EmptyField("event"))
        );
        assert!(matches!(
            DatabaseEvent::from_json(r#"{"event":"records_created","table":"users","records":[1]}"#),
            Err(DatabaseEventError::Malformed(_))
        ));
    }

    #[test]
    fn map_rows_names_the_first_invalid_row() {
        let event = DatabaseEvent::from_json(
            r#"{"event":"records_created","table":"users","records":[{"a":1},{"b":2},{"c":3}]}"#,
        )
        .unwrap();
        let keys = event
            .map_rows(|row| Ok(row.keys().next().cloned().unwrap_or_default()))
            .unwrap();
        assert_eq!(keys, vec!["a", "b", "c"]);
        let err = event
            .map_rows(|row| {
                if row.contains_key("b") {
                    Err("no b".to_string())
                } else {
                    Ok(())
                }
            })
            .unwrap_err();
        assert_eq!(err, "row 1: no b");
    }

    #[test]
    fn row_string_reads_strings_and_rejects_other_types() {
        let row = json!({"a":"x","b":null,"c":"","d":5}).as_object().unwrap().clone();
        assert_eq!(row_string(&row, "a"), Ok(Some("x")));
        assert_eq!(row_string(&row, "b"), Ok(None));
        assert_eq!(row_string(&row, "c"), Ok(None));
        assert_eq!(row_string(&row, "missing"), Ok(None));
        assert_eq!(
            row_string(&row, "d"),
            Err("field `d` must be a string, got number".into())
        );
    }
}
