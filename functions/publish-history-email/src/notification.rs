//! A created publish-history row, validated, and the email it becomes.

use chrono::{DateTime, Utc};
use minijinja::{context, Environment};
use serde_json::Value;
use shared::db_event::{json_type, row_string, Row};

/// What a publish-history row says, validated. Fan-out tasks carry it as it is (serde).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PublishHistory {
    pub id: String,
    pub tenant: String,
    pub title: String,
    pub published_by: Option<String>,
    pub created_at: Option<String>,
}

impl PublishHistory {
    /// `event_tenant` is the event's top-level `tenant`, used when the row has no `_tenant`.
    pub fn from_row(row: &Row, event_tenant: Option<&str>) -> Result<Self, String> {
        let id = match row.get("id") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_owned(),
            Some(Value::Number(n)) => n.to_string(),
            None | Some(Value::Null) => return Err("row has no `id`".into()),
            Some(other) => {
                return Err(format!(
                    "field `id` must be a string or a number, got {}",
                    json_type(other)
                ))
            }
        };
        let tenant = match row_string(row, "_tenant")?.or(event_tenant) {
            Some(tenant) => tenant.to_owned(),
            None => return Err("row has no `_tenant` and the event no `tenant`".into()),
        };
        let title = row_string(row, "title")?
            .or(row_string(row, "name")?)
            .unwrap_or("Untitled")
            .to_owned();
        let published_by = row_string(row, "publishedBy")?.map(str::to_owned);
        let created_at = row_string(row, "createdAt")?.map(str::to_owned);
        Ok(PublishHistory {
            id,
            tenant,
            title,
            published_by,
            created_at,
        })
    }
}

/// `2026-11-21T10:00:00Z` -> `21 November 2026, 10:00 UTC`; anything unparseable is shown as sent.
pub fn readable_time(rfc3339: &str) -> String {
    match DateTime::parse_from_rfc3339(rfc3339) {
        Ok(time) => time.with_timezone(&Utc).format("%-d %B %Y, %H:%M UTC").to_string(),
        Err(_) => rfc3339.to_owned(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedEmail {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// The templates of `templates/`, compiled once at init. Templates whose name ends in `.html` are auto-escaped, so
/// a title like `<script>` arrives as text, not markup.
pub struct EmailTemplates {
    environment: Environment<'static>,
    app_base_url: Option<String>,
}

const SUBJECT: &str = "publish_history.subject.txt";
const TEXT: &str = "publish_history.txt";
const HTML: &str = "publish_history.html";

impl EmailTemplates {
    pub fn new(app_base_url: Option<String>) -> Result<Self, minijinja::Error> {
        let mut environment = Environment::new();
        environment.add_template(SUBJECT, include_str!("../templates/publish_history.subject.txt"))?;
        environment.add_template(TEXT, include_str!("../templates/publish_history.txt"))?;
        environment.add_template(HTML, include_str!("../templates/publish_history.html"))?;
        Ok(Self {
            environment,
            app_base_url,
        })
    }

    /// `unsubscribe_url` is the recipient's own one-click link, shown in both parts when given.
    pub fn render(
        &self,
        history: &PublishHistory,
        recipient_name: Option<&str>,
        unsubscribe_url: Option<&str>,
    ) -> Result<RenderedEmail, minijinja::Error> {
        let link = self
            .app_base_url
            .as_ref()
            .map(|base| format!("{base}/publish-history/{}", url_segment(&history.id)));
        let values = context! {
            title => history.title,
            tenant => history.tenant,
            published_by => history.published_by,
            created_at => history.created_at.as_deref().map(readable_time),
            link => link,
            greeting_name => recipient_name.filter(|n| !n.is_empty()).unwrap_or("there"),
            unsubscribe_url => unsubscribe_url,
        };
        // A subject is one line: a title with a line break must not start a new header line.
        let subject = self
            .environment
            .get_template(SUBJECT)?
            .render(&values)?
            .replace(['\r', '\n'], " ")
            .trim()
            .to_owned();
        Ok(RenderedEmail {
            subject,
            text: self.environment.get_template(TEXT)?.render(&values)?,
            html: self.environment.get_template(HTML)?.render(&values)?,
        })
    }
}

/// Percent-encodes what is not unreserved in a URL path segment.
fn url_segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(value: Value) -> Row {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn reads_a_row_with_fallbacks() {
        let h = PublishHistory::from_row(
            &row(json!({"id": 42, "name": "Q4", "createdAt": "2026-11-21T10:00:00Z"})),
            Some("acme"),
        )
        .unwrap();
        assert_eq!(
            h,
            PublishHistory {
                id: "42".into(),
                tenant: "acme".into(),
                title: "Q4".into(),
                published_by: None,
                created_at: Some("2026-11-21T10:00:00Z".into())
            }
        );
        let h = PublishHistory::from_row(
            &row(json!({"id": "ph-1", "_tenant": "globex", "title": "T", "name": "N", "publishedBy": "Ada"})),
            Some("acme"),
        )
        .unwrap();
        assert_eq!(
            (h.tenant.as_str(), h.title.as_str(), h.published_by.as_deref()),
            ("globex", "T", Some("Ada"))
        );
    }

    #[test]
    fn invalid_rows_are_errors() {
        assert!(PublishHistory::from_row(&row(json!({"_tenant": "a"})), None)
            .unwrap_err()
            .contains("id"));
        assert!(PublishHistory::from_row(&row(json!({"id": 1})), None)
            .unwrap_err()
            .contains("_tenant"));
        assert!(PublishHistory::from_row(&row(json!({"id": true, "_tenant": "a"})), None).is_err());
        assert!(
            PublishHistory::from_row(&row(json!({"id": 1, "_tenant": "a", "title": 5})), None)
                .unwrap_err()
                .contains("title")
        );
    }

    #[test]
    fn readable_time_or_as_sent() {
        assert_eq!(
            readable_time("2026-11-21T10:05:00+01:00"),
            "21 November 2026, 09:05 UTC"
        );
        assert_eq!(readable_time("yesterday"), "yesterday");
    }

    #[test]
    fn html_part_escapes_the_title_and_text_part_keeps_it() {
        let templates = EmailTemplates::new(Some("https://app.example.com".into())).unwrap();
        let history = PublishHistory {
            id: "ph 1".into(),
            tenant: "acme".into(),
            title: "<script>alert(1)</script> & more".into(),
            published_by: Some("Ada".into()),
            created_at: Some("2026-11-21T10:00:00Z".into()),
        };
        let email = templates.render(&history, Some("Grace"), None).unwrap();
        assert_eq!(email.subject, "New publish history: <script>alert(1)</script> & more");
        assert!(
            email
                .html
                .contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt; &amp; more"),
            "{}",
            email.html
        );
        assert!(!email.html.contains("<script>"));
        assert!(email.text.contains("Title:        <script>alert(1)</script> & more"));
        assert!(email.text.contains("Hello Grace,") && email.text.contains("Published by: Ada"));
        assert!(email.text.contains("When:         21 November 2026, 10:00 UTC"));
        // Attribute values are escaped too (`/` as `&#x2f;`, which browsers decode); the id is percent-encoded.
        assert!(
            email
                .html
                .contains(r#"href="https:&#x2f;&#x2f;app.example.com&#x2f;publish-history&#x2f;ph%201""#),
            "{}",
            email.html
        );
        assert!(email
            .text
            .contains("Open it: https://app.example.com/publish-history/ph%201"));
    }

    #[test]
    fn no_link_without_base_url_and_one_line_subject() {
        let templates = EmailTemplates::new(None).unwrap();
        let history = PublishHistory {
            id: "1".into(),
            tenant: "acme".into(),
            title: "a\r\nBcc: x@y.z".into(),
            published_by: None,
            created_at: None,
        };
        let email = templates.render(&history, None, None).unwrap();
        assert!(!email.subject.contains('\n') && !email.subject.contains('\r'));
        assert!(!email.html.contains("href") && !email.text.contains("Open it"));
        assert!(email.text.starts_with("Hello there,"));
    }
}
