//! From a `users` row to the Cognito attributes it should produce, and from those to the writes still needed: one
//! mapping for every writer of the user attributes (the event path and the reconciliation).

use std::collections::HashMap;

use crate::db_event::{json_type, row_string, Row};
use serde_json::Value;

/// Row column -> Cognito attribute.
pub const ATTRIBUTE_MAP: [(&str, &str); 3] = [
    ("firstName", "given_name"),
    ("lastName", "family_name"),
    ("_tenant", "custom:_tenant"),
];

/// Cognito's limit on an attribute value (standard attributes, and custom string attributes at most).
pub const MAX_VALUE_CHARS: usize = 2048;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Desired {
    Set(String),
    Remove,
}

/// What a row says about one Cognito user. Columns absent from the row are not mentioned: they are left alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserChange {
    pub username: String,
    pub attributes: Vec<(&'static str, Desired)>,
}

/// The username of a row: its `email`, which is the Cognito username.
pub fn username(row: &Row) -> Result<String, String> {
    match row_string(row, "email")? {
        Some(email) if email.contains('@') => Ok(email.trim().to_owned()),
        Some(_) => Err("field `email` is not an email address".into()),
        None => Err("row has no `email`, the Cognito username".into()),
    }
}

/// Validates a row and says what it wants of Cognito. An error makes the record poison.
pub fn desired_attributes(row: &Row) -> Result<UserChange, String> {
    let username = username(row)?;
    let mut attributes = Vec::new();
    for (column, attribute) in ATTRIBUTE_MAP {
        let desired = match row.get(column) {
            None => continue,
            Some(Value::Null) => Desired::Remove,
            Some(Value::String(s)) if s.is_empty() => Desired::Remove,
            Some(Value::String(s)) => Desired::Set(s.clone()),
            Some(Value::Number(n)) => Desired::Set(n.to_string()),
            Some(other) => {
                return Err(format!(
                    "column `{column}` must be a string, a number or null, got {}",
                    json_type(other)
                ))
            }
        };
        if let Desired::Set(value) = &desired {
            let chars = value.chars().count();
            if chars > MAX_VALUE_CHARS {
                return Err(format!(
                    "column `{column}` is {chars} characters long, over Cognito's limit of {MAX_VALUE_CHARS}"
                ));
            }
        }
        attributes.push((attribute, desired));
    }
    Ok(UserChange { username, attributes })
}

/// The writes that bring Cognito to what the row wants; both empty when it already matches.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WritePlan {
    pub updates: Vec<(String, String)>,
    pub deletions: Vec<String>,
}

impl WritePlan {
    pub fn is_empty(&self) -> bool {
        self.updates.is_empty() && self.deletions.is_empty()
    }
}

pub fn plan_writes(change: &UserChange, current: &HashMap<String, String>) -> WritePlan {
    let mut plan = WritePlan::default();
    for (attribute, desired) in &change.attributes {
        match desired {
            Desired::Set(value) if current.get(*attribute) != Some(value) => {
                plan.updates.push((attribute.to_string(), value.clone()))
            }
            Desired::Remove if current.get(*attribute).is_some_and(|v| !v.is_empty()) => {
                plan.deletions.push(attribute.to_string())
            }
            _ => {}
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(value: Value) -> Row {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn maps_columns_to_attributes_and_leaves_absent_ones_alone() {
        let change = desired_attributes(&row(
            json!({"email":"a@b.co","firstName":"Ada","_tenant":"acme","id":7}),
        ))
        .unwrap();
        assert_eq!(change.username, "a@b.co");
        assert_eq!(
            change.attributes,
            vec![
                ("given_name", Desired::Set("Ada".into())),
                ("custom:_tenant", Desired::Set("acme".into()))
            ]
        );
    }

    #[test]
    fn null_or_empty_removes_and_numbers_become_decimal_strings() {
        let change = desired_attributes(&row(
            json!({"email":"a@b.co","firstName":null,"lastName":"","_tenant":42}),
        ))
        .unwrap();
        assert_eq!(
            change.attributes,
            vec![
                ("given_name", Desired::Remove),
                ("family_name", Desired::Remove),
                ("custom:_tenant", Desired::Set("42".into()))
            ]
        );
        let change = desired_attributes(&row(json!({"email":"a@b.co","_tenant":1.5}))).unwrap();
        assert_eq!(change.attributes, vec![("custom:_tenant", Desired::Set("1.5".into()))]);
    }

    #[test]
    fn other_types_and_oversized_values_are_invalid() {
        let err = desired_attributes(&row(json!({"email":"a@b.co","firstName":true}))).unwrap_err();
        assert!(err.contains("firstName") && err.contains("boolean"), "{err}");
        assert!(desired_attributes(&row(json!({"email":"a@b.co","lastName":["x"]}))).is_err());
        let long = "x".repeat(MAX_VALUE_CHARS + 1);
        assert!(desired_attributes(&row(json!({"email":"a@b.co","lastName":long})))
            .unwrap_err()
            .contains("limit"));
        let longest = "é".repeat(MAX_VALUE_CHARS);
        assert!(
            desired_attributes(&row(json!({"email":"a@b.co","lastName":longest}))).is_ok(),
            "the limit counts characters"
        );
    }

    #[test]
    fn a_row_needs_an_email() {
        assert!(desired_attributes(&row(json!({"firstName":"Ada"})))
            .unwrap_err()
            .contains("email"));
        assert!(desired_attributes(&row(json!({"email":"not-an-address"}))).is_err());
        assert!(desired_attributes(&row(json!({"email":5}))).is_err());
    }

    #[test]
    fn plan_writes_only_what_differs() {
        let change = UserChange {
            username: "a@b.co".into(),
            attributes: vec![
                ("given_name", Desired::Set("Ada".into())),
                ("family_name", Desired::Set("Lovelace".into())),
                ("custom:_tenant", Desired::Remove),
            ],
        };
        let current = HashMap::from([
            ("given_name".to_string(), "Ada".to_string()),
            ("family_name".to_string(), "Byron".to_string()),
            ("custom:_tenant".to_string(), "acme".to_string()),
        ]);
        let plan = plan_writes(&change, &current);
        assert_eq!(plan.updates, vec![("family_name".to_string(), "Lovelace".to_string())]);
        assert_eq!(plan.deletions, vec!["custom:_tenant".to_string()]);
    }

    #[test]
    fn matching_user_needs_no_write() {
        let change = UserChange {
            username: "a@b.co".into(),
            attributes: vec![
                ("given_name", Desired::Set("Ada".into())),
                ("family_name", Desired::Remove),
            ],
        };
        let current = HashMap::from([("given_name".to_string(), "Ada".to_string())]);
        assert!(plan_writes(&change, &current).is_empty());
    }
}
