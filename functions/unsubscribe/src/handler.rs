//! One request to the unsubscribe endpoint: a `POST` with a valid token (RFC 8058's one-click, or the page's own
//! form) unsubscribes the user it names; a `GET` only shows a page with one button that posts (link scanners fetch
//! URLs and must change nothing); a missing, forged, truncated, expired or malformed token gets a plain page that
//! reveals nothing; any other method gets 405.

use shared::logging::mask_email;
use shared::metrics::Metrics;
use shared::unsubscribe::{verify, SigningKey, TokenError};

use crate::ports::Subscriptions;

/// What the function answers; `main.rs` turns it into the HTTP response with the page headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub status: u16,
    pub html: String,
    /// `Allow`, for a 405.
    pub allow: Option<&'static str>,
}

/// Only what the page itself needs: no script, no style sheet, no frame; the form posts to this endpoint.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

fn page(status: u16, title: &str, body: &str) -> Page {
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>{title}</title></head>\n<body style=\"font-family: sans-serif; max-width: 32em; margin: 3em auto;\"><h1 style=\"font-size: 1.3em;\">{title}</h1>{body}</body></html>\n"
    );
    Page { status, html, allow: None }
}

/// Escapes text for an HTML attribute or text node.
fn escape(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '&' => "&amp;".to_owned(),
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '"' => "&quot;".to_owned(),
            '\'' => "&#x27;".to_owned(),
            c => c.to_string(),
        })
        .collect()
}

/// Whether a POST body is the one-click form (`List-Unsubscribe=One-Click`, form-encoded or multipart).
fn is_one_click(body: &str) -> bool {
    body.contains("List-Unsubscribe") && body.contains("One-Click")
}

pub struct Unsubscriber<S> {
    subscriptions: S,
    key: SigningKey,
    previous_key: Option<SigningKey>,
    metrics: std::sync::Arc<Metrics>,
}

impl<S: Subscriptions> Unsubscriber<S> {
    pub fn new(subscriptions: S, key: SigningKey, previous_key: Option<SigningKey>, metrics: std::sync::Arc<Metrics>) -> Self {
        Self { subscriptions, key, previous_key, metrics }
    }

    /// `now` in epoch seconds.
    pub async fn handle(&self, method: &str, token: Option<&str>, body: &str, now: i64) -> Page {
        if method != "GET" && method != "POST" {
            return Page { allow: Some("GET, POST"), ..page(405, "Method not allowed", "<p>This address takes GET and POST only.</p>") };
        }
        let unsubscription = match verify(token, &self.key, self.previous_key.as_ref(), now) {
            Ok(unsubscription) => unsubscription,
            Err(error) => {
                // Logged by kind only: the token itself names a user.
                tracing::info!(reason = %error, method, "refused an unsubscribe link");
                self.metrics.count(if error == TokenError::Expired { "LinksExpired" } else { "LinksInvalid" }, 1);
                return page(
                    400,
                    "This unsubscribe link is not valid",
                    "<p>The link may be incomplete or too old. Use the unsubscribe link of a recent email.</p>",
                );
            }
        };
        tracing::debug!(tenant = %unsubscription.tenant, method, "link verified");
        if method == "GET" {
            let token = escape(token.unwrap_or_default().trim());
            let form = format!(
                "<p>Stop receiving publish history notifications?</p><form method=\"post\" action=\"?token={token}\"><input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\"><button type=\"submit\">Unsubscribe</button></form>"
            );
            return page(200, "Unsubscribe", &form);
        }
        if !is_one_click(body) {
            return page(400, "This request is not an unsubscribe request", "<p>Use the button on the unsubscribe page.</p>");
        }
        let done = || page(200, "You are unsubscribed", "<p>You will no longer receive publish history notifications.</p>");
        let user = match self.subscriptions.find(&unsubscription.sub).await {
            Ok(Some(user)) => user,
            Ok(None) => {
                tracing::info!(tenant = %unsubscription.tenant, "unsubscribe for a user no longer in the pool; nothing to do");
                return done();
            }
            Err(error) => return self.unavailable(&error),
        };
        if !user.subscribed {
            tracing::info!(user = %mask_email(&user.username), "already unsubscribed; no write");
            self.metrics.count("AlreadyUnsubscribed", 1);
            return done();
        }
        match self.subscriptions.unsubscribe(&user.username).await {
            Ok(()) => {
                tracing::info!(user = %mask_email(&user.username), tenant = %unsubscription.tenant, "unsubscribed");
                self.metrics.count("Unsubscribed", 1);
                done()
            }
            Err(error) => self.unavailable(&error),
        }
    }

    /// Cognito could not be asked: a mailbox provider retries a one-click POST that did not succeed.
    fn unavailable(&self, error: &str) -> Page {
        tracing::error!(error = %error, "the user pool is unavailable");
        self.metrics.count("UnsubscribeFailed", 1);
        page(503, "Please try again", "<p>We could not process the request just now. Please try again in a few minutes.</p>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::Subscriber;
    use async_trait::async_trait;
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    const NOW: i64 = 1_795_000_000;

    #[derive(Default)]
    struct FakePool {
        users: Mutex<HashMap<String, Subscriber>>,
        writes: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl Subscriptions for Arc<FakePool> {
        async fn find(&self, sub: &str) -> Result<Option<Subscriber>, String> {
            Ok(self.users.lock().unwrap().get(sub).cloned())
        }
        async fn unsubscribe(&self, username: &str) -> Result<(), String> {
            self.writes.lock().unwrap().push(username.to_owned());
            self.users.lock().unwrap().values_mut().filter(|u| u.username == username).for_each(|u| u.subscribed = false);
            Ok(())
        }
    }

    fn key(c: char) -> SigningKey {
        SigningKey::new(&c.to_string().repeat(64)).unwrap()
    }

    fn unsubscriber(pool: &Arc<FakePool>, previous: Option<SigningKey>) -> Unsubscriber<Arc<FakePool>> {
        pool.users.lock().unwrap().insert("sub-ada".into(), Subscriber { username: "ada-username".into(), subscribed: true });
        Unsubscriber::new(pool.clone(), key('a'), previous, Arc::new(Metrics::new("Test", "unsubscribe")))
    }

    #[tokio::test]
    async fn a_one_click_post_unsubscribes_once_and_a_get_changes_nothing() {
        let pool = Arc::new(FakePool::default());
        let u = unsubscriber(&pool, None);
        let token = key('a').sign("sub-ada", "acme", NOW);
        let get = u.handle("GET", Some(&token), "", NOW).await;
        assert_eq!(get.status, 200);
        assert!(get.html.contains("method=\"post\"") && get.html.contains(&format!("action=\"?token={token}\"")), "{}", get.html);
        assert!(pool.writes.lock().unwrap().is_empty(), "a GET wrote");
        let post = u.handle("POST", Some(&token), "List-Unsubscribe=One-Click", NOW).await;
        assert_eq!(post.status, 200);
        assert_eq!(*pool.writes.lock().unwrap(), vec!["ada-username"]);
        let again = u.handle("POST", Some(&token), "List-Unsubscribe=One-Click", NOW).await;
        assert_eq!(again.status, 200, "idempotent");
        assert_eq!(pool.writes.lock().unwrap().len(), 1, "an unsubscribed user gets no second write");
    }

    #[tokio::test]
    async fn bad_tokens_reveal_nothing_and_write_nothing() {
        let pool = Arc::new(FakePool::default());
        let u = unsubscriber(&pool, None);
        for token in [None, Some(""), Some("junk"), Some(key('b').sign("sub-ada", "acme", NOW)).as_deref().map(|_| "x.y")] {
            let refused = u.handle("POST", token, "List-Unsubscribe=One-Click", NOW).await;
            assert_eq!(refused.status, 400);
        }
        let forged = key('b').sign("sub-ada", "acme", NOW);
        let refused = u.handle("POST", Some(&forged), "List-Unsubscribe=One-Click", NOW).await;
        assert_eq!(refused.status, 400);
        assert!(!refused.html.contains("sub-ada") && !refused.html.contains("acme") && !refused.html.contains(&forged), "{}", refused.html);
        assert!(pool.writes.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn other_methods_get_405_and_the_previous_key_still_works() {
        let pool = Arc::new(FakePool::default());
        let u = unsubscriber(&pool, Some(key('z')));
        let put = u.handle("PUT", None, "", NOW).await;
        assert_eq!((put.status, put.allow), (405, Some("GET, POST")));
        let old = key('z').sign("sub-ada", "acme", NOW);
        assert_eq!(u.handle("POST", Some(&old), "List-Unsubscribe=One-Click", NOW).await.status, 200);
        assert_eq!(pool.writes.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_user_no_longer_in_the_pool_is_unsubscribed_already() {
        let pool = Arc::new(FakePool::default());
        let u = unsubscriber(&pool, None);
        let gone = key('a').sign("sub-gone", "acme", NOW);
        let answer = u.handle("POST", Some(&gone), "List-Unsubscribe=One-Click", NOW).await;
        assert_eq!(answer.status, 200);
        assert!(answer.html.contains("You are unsubscribed"));
        assert!(pool.writes.lock().unwrap().is_empty());
    }
}
