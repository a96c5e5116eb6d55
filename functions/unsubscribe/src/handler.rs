//! One request to the unsubscribe endpoint: a `POST` with a valid token (RFC 8058's one-click, or the page's own
//! form) unsubscribes the user it names; a `POST` of the confirmation page's `action=resubscribe` with the same token
//! subscribes that user again; a `GET` only shows a page with one button that posts (link scanners fetch URLs and
//! must change nothing); a missing, forged, truncated, expired or malformed token gets a plain page that reveals
//! nothing; any other method gets 405.
//!
//! The pages are made for a phone first (most recipients open the link there): a viewport, 20 px margins, 18 px
//! text, a full-width button at least 48 px tall, colours well past WCAG AA, and only inline styles under the
//! Content-Security-Policy below. They name the product (the sender's display name) and no address, sub or tenant.

use shared::logging::mask_email;
use shared::metrics::Metrics;
use shared::unsubscribe::{verify, SigningKey, TokenError, Unsubscription};

use shared::subscriptions::{Subscriber, SubscriberKey, Subscriptions};

/// What the function answers; `main.rs` turns it into the HTTP response with the page headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub status: u16,
    pub html: String,
    /// `Allow`, for a 405.
    pub allow: Option<&'static str>,
}

/// Only what the page itself needs: no script, no style sheet, no frame; the form posts to this endpoint.
pub const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// The smallest touch target the pages' buttons have, in CSS px: WCAG 2.5.5 and Apple ask 44, Material 48.
pub const TOUCH_TARGET_PX: u32 = 48;

/// Text #1f2328 on white 15.8:1, the product line #57606a 6.4:1, the button's white on #1d4ed8 6.7:1 (AA asks 4.5:1).
const BODY_STYLE: &str = "margin:0;padding:32px 20px;background:#ffffff;color:#1f2328;\
                          font:18px/1.5 -apple-system,BlinkMacSystemFont,'Segoe UI',Roboto,Helvetica,Arial,sans-serif";
const MAIN_STYLE: &str = "max-width:32em;margin:0 auto;overflow-wrap:break-word";
const PRODUCT_STYLE: &str = "margin:0 0 8px;font-size:16px;font-weight:600;color:#57606a";
const TITLE_STYLE: &str = "margin:0 0 16px;font-size:26px;line-height:1.25";
const BUTTON_STYLE: &str =
    "display:block;box-sizing:border-box;width:100%;max-width:22em;min-height:48px;margin:24px 0 0;\
                            padding:12px 20px;border:0;border-radius:8px;background:#1d4ed8;color:#ffffff;font:inherit;\
                            font-weight:600;cursor:pointer";

/// The action the confirmation page's second button posts: subscribe again.
pub const RESUBSCRIBE: &str = "resubscribe";

/// What a POST asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ask {
    Unsubscribe,
    Resubscribe,
}

/// A POST body's ask: the one-click form (`List-Unsubscribe=One-Click`, form-encoded or multipart), or the
/// confirmation page's `action=resubscribe`; anything else, or both at once, is no ask.
fn ask(body: &str) -> Option<Ask> {
    let one_click = body.contains("List-Unsubscribe") && body.contains("One-Click");
    let resubscribe = body
        .split('&')
        .any(|pair| pair.trim() == format!("action={RESUBSCRIBE}"));
    match (one_click, resubscribe) {
        (true, false) => Some(Ask::Unsubscribe),
        (false, true) => Some(Ask::Resubscribe),
        _ => None,
    }
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

pub struct Unsubscriber<S> {
    subscriptions: S,
    key: SigningKey,
    previous_key: Option<SigningKey>,
    /// The product the recipient knows, escaped for the page: the sender's display name.
    product: String,
    metrics: std::sync::Arc<Metrics>,
}

impl<S: Subscriptions> Unsubscriber<S> {
    pub fn new(
        subscriptions: S,
        key: SigningKey,
        previous_key: Option<SigningKey>,
        product: &str,
        metrics: std::sync::Arc<Metrics>,
    ) -> Self {
        Self {
            subscriptions,
            key,
            previous_key,
            product: escape(product),
            metrics,
        }
    }

    fn page(&self, status: u16, title: &str, body: &str) -> Page {
        let product = &self.product;
        let html = format!(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{title} - {product}</title></head>\n\
             <body style=\"{BODY_STYLE}\"><main style=\"{MAIN_STYLE}\"><p style=\"{PRODUCT_STYLE}\">{product}</p>\
             <h1 style=\"{TITLE_STYLE}\">{title}</h1>{body}</main></body></html>\n"
        );
        Page {
            status,
            html,
            allow: None,
        }
    }

    /// A form that posts `fields` with the token to this endpoint, as one button.
    fn button(token: &str, fields: &str, label: &str) -> String {
        let token = escape(token.trim());
        format!("<form method=\"post\" action=\"?token={token}\">{fields}<button type=\"submit\" style=\"{BUTTON_STYLE}\">{label}</button></form>")
    }

    fn unsubscribe_button(token: &str) -> String {
        Self::button(
            token,
            "<input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">",
            "Unsubscribe",
        )
    }

    fn resubscribe_button(token: &str) -> String {
        Self::button(
            token,
            &format!("<input type=\"hidden\" name=\"action\" value=\"{RESUBSCRIBE}\">"),
            "Subscribe again",
        )
    }

    /// `now` in epoch seconds.
    pub async fn handle(&self, method: &str, token: Option<&str>, body: &str, now: i64) -> Page {
        if method != "GET" && method != "POST" {
            return Page {
                allow: Some("GET, POST"),
                ..self.page(
                    405,
                    "Method not allowed",
                    "<p>This address takes GET and POST only.</p>",
                )
            };
        }
        let unsubscription = match verify(token, &self.key, self.previous_key.as_ref(), now) {
            Ok(unsubscription) => unsubscription,
            Err(error) => {
                // Logged by kind only: the token itself names a user.
                tracing::info!(reason = %error, method, "refused an unsubscribe link");
                self.metrics.count(
                    if error == TokenError::Expired {
                        "LinksExpired"
                    } else {
                        "LinksInvalid"
                    },
                    1,
                );
                return self.page(
                    400,
                    "This unsubscribe link is not valid",
                    "<p>The link may be incomplete or too old. Use the unsubscribe link of a recent email.</p>",
                );
            }
        };
        let token = token.unwrap_or_default();
        tracing::debug!(tenant = %unsubscription.tenant, method, "link verified");
        if method == "GET" {
            let form = format!(
                "<p>Stop receiving publish history notifications from {}?</p>{}",
                self.product,
                Self::unsubscribe_button(token)
            );
            return self.page(200, "Unsubscribe", &form);
        }
        match ask(body) {
            Some(Ask::Unsubscribe) => self.set(&unsubscription, token, false).await,
            Some(Ask::Resubscribe) => self.set(&unsubscription, token, true).await,
            None => self.page(
                400,
                "This request is not an unsubscribe request",
                "<p>Use the button on the unsubscribe page.</p>",
            ),
        }
    }

    /// Brings the user's flag to `subscribed`: one write at most, none when it is so already.
    async fn set(&self, unsubscription: &Unsubscription, token: &str, subscribed: bool) -> Page {
        let done = || self.done(token, subscribed);
        let user = match self.subscriptions.find(SubscriberKey::Sub(&unsubscription.sub)).await {
            Ok(Some(user)) => user,
            Ok(None) => {
                tracing::info!(tenant = %unsubscription.tenant, subscribed, "a link of a user no longer in the pool; nothing to do");
                return self.page(
                    200,
                    "You are unsubscribed",
                    "<p>This account no longer receives any email from us.</p>",
                );
            }
            Err(error) => return self.unavailable(&error.to_string()),
        };
        if user.subscribed == subscribed {
            tracing::info!(user = %mask_email(&user.username), subscribed, "the flag is so already; no write");
            self.metrics.count(
                if subscribed {
                    "AlreadySubscribed"
                } else {
                    "AlreadyUnsubscribed"
                },
                1,
            );
            return done();
        }
        let Subscriber { username, .. } = user;
        let written = if subscribed {
            self.subscriptions.resubscribe(&username).await
        } else {
            self.subscriptions.unsubscribe(&username).await
        };
        match written {
            Ok(()) => {
                let (outcome, metric) = if subscribed {
                    ("subscribed again", "Resubscribed")
                } else {
                    ("unsubscribed", "Unsubscribed")
                };
                tracing::info!(user = %mask_email(&username), tenant = %unsubscription.tenant, "{outcome}");
                self.metrics.count(metric, 1);
                done()
            }
            Err(error) => self.unavailable(&error.to_string()),
        }
    }

    /// The confirmation, with the way back: subscribe again after an unsubscribe, unsubscribe after that.
    fn done(&self, token: &str, subscribed: bool) -> Page {
        let product = &self.product;
        if subscribed {
            let body = format!(
                "<p>You will receive publish history notifications from {product} again.</p>{}",
                Self::unsubscribe_button(token)
            );
            self.page(200, "You are subscribed again", &body)
        } else {
            let body = format!(
                "<p>You will no longer receive publish history notifications from {product}.</p>\
                 <p>Unsubscribed by mistake?</p>{}",
                Self::resubscribe_button(token)
            );
            self.page(200, "You are unsubscribed", &body)
        }
    }

    /// Cognito could not be asked: a mailbox provider retries a one-click POST that did not succeed.
    fn unavailable(&self, error: &str) -> Page {
        tracing::error!(error = %error, "the user pool is unavailable");
        self.metrics.count("UnsubscribeFailed", 1);
        self.page(
            503,
            "Please try again",
            "<p>We could not process the request just now. Please try again in a few minutes.</p>",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::subscriptions::memory::{MemorySubscriptions, MemoryUser};
    use std::sync::Arc;

    const NOW: i64 = 1_795_000_000;

    fn key(c: char) -> SigningKey {
        SigningKey::new(&c.to_string().repeat(64)).unwrap()
    }

    fn unsubscriber(
        pool: &Arc<MemorySubscriptions>,
        previous: Option<SigningKey>,
    ) -> Unsubscriber<Arc<MemorySubscriptions>> {
        let ada = MemoryUser {
            username: "ada-username".into(),
            email: "ada@example.com".into(),
            sub: "sub-ada".into(),
            subscribed: true,
        };
        pool.users.lock().unwrap().push(ada);
        Unsubscriber::new(
            pool.clone(),
            key('a'),
            previous,
            "Navlab",
            Arc::new(Metrics::new("Test", "unsubscribe")),
        )
    }

    #[tokio::test]
    async fn a_one_click_post_unsubscribes_once_and_a_get_changes_nothing() {
        let pool = Arc::new(MemorySubscriptions::default());
        let u = unsubscriber(&pool, None);
        let token = key('a').sign("sub-ada", "acme", NOW);
        let get = u.handle("GET", Some(&token), "", NOW).await;
        assert_eq!(get.status, 200);
        assert!(
            get.html.contains("method=\"post\"") && get.html.contains(&format!("action=\"?token={token}\"")),
            "{}",
            get.html
        );
        assert!(pool.writes().is_empty(), "a GET wrote");
        let post = u.handle("POST", Some(&token), "List-Unsubscribe=One-Click", NOW).await;
        assert_eq!(post.status, 200);
        assert_eq!(*pool.writes(), vec!["unsubscribe ada-username"]);
        let again = u.handle("POST", Some(&token), "List-Unsubscribe=One-Click", NOW).await;
        assert_eq!(again.status, 200, "idempotent");
        assert_eq!(pool.writes().len(), 1, "an unsubscribed user gets no second write");
    }

    #[tokio::test]
    async fn bad_tokens_reveal_nothing_and_write_nothing() {
        let pool = Arc::new(MemorySubscriptions::default());
        let u = unsubscriber(&pool, None);
        for token in [
            None,
            Some(""),
            Some("junk"),
            Some(key('b').sign("sub-ada", "acme", NOW)).as_deref().map(|_| "x.y"),
        ] {
            let refused = u.handle("POST", token, "List-Unsubscribe=One-Click", NOW).await;
            assert_eq!(refused.status, 400);
        }
        let forged = key('b').sign("sub-ada", "acme", NOW);
        let refused = u.handle("POST", Some(&forged), "List-Unsubscribe=One-Click", NOW).await;
        assert_eq!(refused.status, 400);
        assert!(
            !refused.html.contains("sub-ada") && !refused.html.contains("acme") && !refused.html.contains(&forged),
            "{}",
            refused.html
        );
        assert!(pool.writes().is_empty());
    }

    #[tokio::test]
    async fn other_methods_get_405_and_the_previous_key_still_works() {
        let pool = Arc::new(MemorySubscriptions::default());
        let u = unsubscriber(&pool, Some(key('z')));
        let put = u.handle("PUT", None, "", NOW).await;
        assert_eq!((put.status, put.allow), (405, Some("GET, POST")));
        let old = key('z').sign("sub-ada", "acme", NOW);
        assert_eq!(
            u.handle("POST", Some(&old), "List-Unsubscribe=One-Click", NOW)
                .await
                .status,
            200
        );
        assert_eq!(pool.writes().len(), 1);
    }

    #[tokio::test]
    async fn a_user_no_longer_in_the_pool_is_unsubscribed_already() {
        let pool = Arc::new(MemorySubscriptions::default());
        let u = unsubscriber(&pool, None);
        let gone = key('a').sign("sub-gone", "acme", NOW);
        let answer = u.handle("POST", Some(&gone), "List-Unsubscribe=One-Click", NOW).await;
        assert_eq!(answer.status, 200);
        assert!(answer.html.contains("You are unsubscribed"));
        assert!(pool.writes().is_empty());
    }

    fn subscribed(pool: &Arc<MemorySubscriptions>) -> bool {
        pool.is_subscribed("ada-username").expect("ada in the pool")
    }

    /// Unsubscribe, subscribe again from the confirmation page, unsubscribe again: one write each, each repeated
    /// POST idempotent, and each confirmation offers the way back.
    #[tokio::test]
    async fn subscribe_again_writes_once_and_unsubscribing_again_works() {
        let pool = Arc::new(MemorySubscriptions::default());
        let u = unsubscriber(&pool, None);
        let token = key('a').sign("sub-ada", "acme", NOW);
        let unsubscribed = u.handle("POST", Some(&token), "List-Unsubscribe=One-Click", NOW).await;
        assert!(
            unsubscribed.html.contains("name=\"action\" value=\"resubscribe\"")
                && unsubscribed.html.contains(&format!("action=\"?token={token}\""))
        );
        let again = u.handle("POST", Some(&token), "action=resubscribe", NOW).await;
        assert_eq!(again.status, 200);
        assert!(
            again.html.contains("You are subscribed again") && again.html.contains("value=\"One-Click\""),
            "{}",
            again.html
        );
        assert!(subscribed(&pool));
        assert_eq!(
            u.handle("POST", Some(&token), "action=resubscribe", NOW).await.status,
            200,
            "idempotent"
        );
        assert_eq!(
            *pool.writes(),
            vec![
                "unsubscribe ada-username".to_owned(),
                "resubscribe ada-username".to_owned()
            ],
            "no second write"
        );
        assert_eq!(
            u.handle("POST", Some(&token), "List-Unsubscribe=One-Click", NOW)
                .await
                .status,
            200
        );
        assert!(!subscribed(&pool));
        assert_eq!(pool.writes().len(), 3);
        let metrics = u.metrics.take_document().unwrap();
        assert_eq!(
            (
                metrics["Unsubscribed"].as_f64(),
                metrics["Resubscribed"].as_f64(),
                metrics["AlreadySubscribed"].as_f64()
            ),
            (Some(2.0), Some(1.0), Some(1.0))
        );
    }

    /// Subscribe again is checked as unsubscribe is: a forged or expired token, a GET, an action not named (or two
    /// asks at once) write nothing.
    #[tokio::test]
    async fn subscribe_again_needs_the_signed_token_a_post_and_the_named_action() {
        let pool = Arc::new(MemorySubscriptions::default());
        let u = unsubscriber(&pool, None);
        pool.users.lock().unwrap()[0].subscribed = false;
        let token = key('a').sign("sub-ada", "acme", NOW);
        let forged = key('b').sign("sub-ada", "acme", NOW);
        assert_eq!(
            u.handle("POST", Some(&forged), "action=resubscribe", NOW).await.status,
            400
        );
        let expired = key('a').sign("sub-ada", "acme", NOW - 91 * 24 * 3600);
        assert_eq!(
            u.handle("POST", Some(&expired), "action=resubscribe", NOW).await.status,
            400
        );
        assert_eq!(
            u.handle("GET", Some(&token), "action=resubscribe", NOW).await.status,
            200,
            "a GET shows the page"
        );
        for body in [
            "",
            "action=subscribe",
            "action=resubscribe-all",
            "x=action=resubscribe",
            "action=resubscribe&List-Unsubscribe=One-Click",
        ] {
            assert_eq!(u.handle("POST", Some(&token), body, NOW).await.status, 400, "{body:?}");
        }
        assert!(pool.writes().is_empty(), "{:?}", pool.writes());
        assert!(!subscribed(&pool));
    }

    /// Every page as a phone shows it: the viewport, a touch target of at least 44 x 44 CSS px, readable text, the
    /// product named, nothing loaded from elsewhere (the CSP allows inline styles only), and nothing that names the
    /// recipient.
    #[tokio::test]
    async fn the_pages_fit_a_phone_name_the_product_and_load_nothing() {
        let pool = Arc::new(MemorySubscriptions::default());
        let u = unsubscriber(&pool, None);
        let token = key('a').sign("sub-ada", "acme", NOW);
        let pages = [
            u.handle("GET", Some(&token), "", NOW).await,
            u.handle("POST", Some(&token), "List-Unsubscribe=One-Click", NOW).await,
            u.handle("POST", Some(&token), "action=resubscribe", NOW).await,
            u.handle("POST", Some("junk"), "", NOW).await,
        ];
        for page in pages {
            let html = &page.html;
            assert!(
                html.contains("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"),
                "{html}"
            );
            assert!(html.contains(">Navlab</p>"), "the product is named: {html}");
            assert!(html.contains("font:18px/1.5"), "readable text");
            assert!(html.contains("padding:32px 20px"), "margins off the screen's edges");
            for button in html.split("<button").skip(1) {
                let style = button
                    .split("style=\"")
                    .nth(1)
                    .and_then(|s| s.split('"').next())
                    .unwrap_or_default();
                let height: u32 = style
                    .split("min-height:")
                    .nth(1)
                    .and_then(|s| s.split("px").next())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                assert!(
                    height >= 44 && TOUCH_TARGET_PX >= 44,
                    "a touch target under 44 px: {style}"
                );
                assert!(
                    style.contains("width:100%") && style.contains("box-sizing:border-box"),
                    "full width, never wider than the screen"
                );
            }
            for external in ["http:", "https:", "src=", "url(", "@import", "<link", "<script", "<img"] {
                assert!(!html.contains(external), "{external} in {html}");
            }
            for personal in ["sub-ada", "acme", "ada-username", "@"] {
                assert!(!html.contains(personal), "{personal} in {html}");
            }
        }
    }
}
