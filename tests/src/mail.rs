//! The emails a function sent, read back from the SendRawEmail calls the recording proxy saw: the explicit
//! destinations, the source, and the MIME message parsed (subject, parts, every header).

use base64::Engine;

use crate::proxy::RecordingProxy;

#[derive(Debug, Clone)]
pub struct SentEmail {
    pub source: String,
    /// `Destinations` of the call: who SES delivers to, whatever the headers say.
    pub destinations: Vec<String>,
    pub to: Vec<String>,
    /// The From header, decoded: (display name, address).
    pub from: (Option<String>, String),
    pub subject: String,
    pub text: String,
    pub html: String,
    /// Every header, name as written, value as text.
    pub headers: Vec<(String, String)>,
}

impl SentEmail {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The one-click URL of `List-Unsubscribe` (`<https://...>`).
    pub fn unsubscribe_url(&self) -> Option<String> {
        self.header("List-Unsubscribe")
            .map(|v| v.trim().trim_start_matches('<').trim_end_matches('>').to_owned())
    }
}

pub fn sent_emails(proxy: &RecordingProxy) -> Vec<SentEmail> {
    proxy
        .calls_of("SendRawEmail")
        .iter()
        .map(|call| {
            let form = call.form();
            let raw = base64::engine::general_purpose::STANDARD
                .decode(form.get("RawMessage.Data").map(String::as_str).unwrap_or_default())
                .expect("the raw message is base64");
            let message = mail_parser::MessageParser::default()
                .parse(&raw)
                .expect("a MIME message");
            let mut destinations = Vec::new();
            for n in 1.. {
                match form.get(&format!("Destinations.member.{n}")) {
                    Some(to) => destinations.push(to.clone()),
                    None => break,
                }
            }
            let raw_text = String::from_utf8_lossy(&raw);
            let header_block = raw_text
                .split("\r\n\r\n")
                .next()
                .unwrap_or_default()
                .replace("\r\n ", " ")
                .replace("\r\n\t", " ");
            let headers = message
                .headers()
                .iter()
                .map(|h| {
                    let name = h.name().to_owned();
                    // The value as sent, unfolded: what a mailbox provider reads.
                    let value = header_block
                        .lines()
                        .find_map(|line| {
                            line.split_once(':')
                                .filter(|(n, _)| n.eq_ignore_ascii_case(&name))
                                .map(|(_, v)| v.trim().to_owned())
                        })
                        .unwrap_or_default();
                    (name, value)
                })
                .collect();
            SentEmail {
                source: form.get("Source").cloned().unwrap_or_default(),
                destinations,
                from: message
                    .from()
                    .and_then(|from| from.first())
                    .map(|a| (a.name().map(str::to_owned), a.address().unwrap_or_default().to_owned()))
                    .unwrap_or_default(),
                to: message
                    .to()
                    .map(|to| to.iter().filter_map(|a| a.address().map(str::to_owned)).collect())
                    .unwrap_or_default(),
                subject: message.subject().unwrap_or_default().to_owned(),
                text: message.body_text(0).map(|t| t.into_owned()).unwrap_or_default(),
                html: message.body_html(0).map(|t| t.into_owned()).unwrap_or_default(),
                headers,
            }
        })
        .collect()
}
