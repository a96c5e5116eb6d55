//! The notification as a raw MIME message (for SES SendRawEmail), built by mail-builder: it encodes every header
//! value, so a subject or a name cannot start a header of its own, and it carries the one-click unsubscribe headers
//! of RFC 8058 that SES's simple content cannot.

use mail_builder::headers::address::Address;
use mail_builder::headers::raw::Raw;
use mail_builder::headers::text::Text;
use mail_builder::headers::url::URL;
use mail_builder::MessageBuilder;

use crate::ports::OutgoingEmail;

/// `Name <address>` or a bare address, as (name, address).
fn mailbox(sender: &str) -> (Option<String>, String) {
    match (sender.rfind('<'), sender.rfind('>')) {
        (Some(open), Some(close)) if open < close => {
            let name = sender[..open].trim().trim_matches('"').trim();
            (
                (!name.is_empty()).then(|| name.to_owned()),
                sender[open + 1..close].trim().to_owned(),
            )
        }
        _ => (None, sender.trim().to_owned()),
    }
}

/// Control characters (CR, LF, ...) become spaces: a header value is one line.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

/// The `List-Id` of a tenant's notifications: `Publish history <publish-history.TENANT.DOMAIN>`. Tenant ids are simple
/// tokens; anything else in them becomes `-`, so the id stays one valid dot-atom.
pub fn list_id(tenant: &str, sender: &str) -> String {
    let (_, address) = mailbox(sender);
    let domain = address.rsplit_once('@').map(|(_, d)| d).unwrap_or("localhost");
    let tenant: String = tenant
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("Publish history <{}.{tenant}.{domain}>", shared::unsubscribe::LIST)
}

/// The message, from `sender` to the one recipient.
pub fn build(sender: &str, email: &OutgoingEmail) -> Result<Vec<u8>, String> {
    let (name, address) = mailbox(sender);
    let from = match name {
        Some(name) => Address::new_address(Some(one_line(&name)), address),
        None => Address::new_address(None::<String>, address),
    };
    let mut message = MessageBuilder::new()
        .from(from)
        .to(Address::new_address(None::<String>, one_line(&email.to)))
        .subject(Text::new(one_line(&email.subject)))
        .text_body(email.text.clone())
        .html_body(email.html.clone());
    if let Some(unsubscribe) = &email.list_unsubscribe {
        message = message
            .header("List-Unsubscribe", URL::new(one_line(&unsubscribe.url)))
            .header("List-Unsubscribe-Post", Raw::new("List-Unsubscribe=One-Click"))
            .header("List-Id", Raw::new(one_line(&unsubscribe.list_id)));
    }
    message
        .write_to_vec()
        .map_err(|e| format!("building the message failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::ListUnsubscribe;

    fn email(subject: &str) -> OutgoingEmail {
        OutgoingEmail {
            to: "ada@example.com".into(),
            subject: subject.into(),
            text: "Hello".into(),
            html: "<p>Hello</p>".into(),
            list_unsubscribe: Some(ListUnsubscribe {
                url: "https://unsub.example.com/u?token=abc.def".into(),
                list_id: list_id("acme", "Navlab <no-reply@navlab.online>"),
            }),
            tags: Vec::new(),
        }
    }

    fn headers(raw: &[u8]) -> Vec<(String, String)> {
        let message = mail_parser::MessageParser::default().parse(raw).unwrap();
        message
            .headers()
            .iter()
            .map(|h| {
                (
                    h.name().to_owned(),
                    h.value().as_text().map(str::to_owned).unwrap_or_default(),
                )
            })
            .collect()
    }

    #[test]
    fn carries_the_one_click_headers_for_its_one_recipient() {
        let raw = build("Navlab <no-reply@navlab.online>", &email("New publish history: Q4")).unwrap();
        let text = String::from_utf8_lossy(&raw);
        assert!(
            text.contains("List-Unsubscribe: <https://unsub.example.com/u?token=abc.def>"),
            "{text}"
        );
        assert!(
            text.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"),
            "{text}"
        );
        assert!(
            text.contains("List-Id: Publish history <publish-history.acme.navlab.online>"),
            "{text}"
        );
        let message = mail_parser::MessageParser::default().parse(&raw).unwrap();
        assert_eq!(message.subject(), Some("New publish history: Q4"));
        assert_eq!(
            message.from().unwrap().first().unwrap().address(),
            Some("no-reply@navlab.online")
        );
        assert_eq!(message.from().unwrap().first().unwrap().name(), Some("Navlab"));
        assert_eq!(
            message
                .to()
                .unwrap()
                .iter()
                .filter_map(|a| a.address())
                .collect::<Vec<_>>(),
            vec!["ada@example.com"]
        );
        assert_eq!(message.body_text(0).as_deref(), Some("Hello"));
        assert_eq!(message.body_html(0).as_deref(), Some("<p>Hello</p>"));
    }

    #[test]
    fn a_title_with_line_breaks_and_bcc_adds_no_header_and_no_recipient() {
        let raw = build(
            "no-reply@navlab.online",
            &email("New publish history: Q4\r\nBcc: victim@evil.example\r\nX-Injected: 1"),
        )
        .unwrap();
        let names: Vec<String> = headers(&raw).into_iter().map(|(name, _)| name.to_lowercase()).collect();
        assert!(
            !names.contains(&"bcc".to_owned()) && !names.contains(&"x-injected".to_owned()),
            "{names:?}"
        );
        let message = mail_parser::MessageParser::default().parse(&raw).unwrap();
        assert!(
            message.subject().unwrap().contains("Bcc: victim@evil.example"),
            "the title stays in the subject, as text"
        );
        assert!(message.bcc().is_none() && message.cc().is_none());
        assert_eq!(message.to().unwrap().iter().count(), 1);
    }

    /// SES has no SMTPUTF8: a display name outside ASCII must be an RFC 2047 encoded word.
    #[test]
    fn a_display_name_outside_ascii_is_encoded_and_every_header_is_7_bit() {
        let raw = build("Nävlab Ürün <no-reply@navlab.online>", &email("Neue Veröffentlichung")).unwrap();
        let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        assert!(
            raw[..head_end].is_ascii(),
            "{}",
            String::from_utf8_lossy(&raw[..head_end])
        );
        let message = mail_parser::MessageParser::default().parse(&raw).unwrap();
        assert_eq!(message.from().unwrap().first().unwrap().name(), Some("Nävlab Ürün"));
        assert_eq!(message.subject(), Some("Neue Veröffentlichung"));
    }

    #[test]
    fn list_ids_keep_simple_tenant_tokens_and_neutralise_anything_else() {
        assert_eq!(
            list_id("acme-2", "a@b.co"),
            "Publish history <publish-history.acme-2.b.co>"
        );
        assert_eq!(
            list_id("ac>me\r\nX: 1", "a@b.co"),
            "Publish history <publish-history.ac-me--X--1.b.co>"
        );
    }
}
