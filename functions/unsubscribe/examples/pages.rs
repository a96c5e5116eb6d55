//! Writes the unsubscribe endpoint's pages, as a recipient sees them, to HTML files in a folder, to look at in a
//! browser (the screenshots in its README are these at 375 px): `cargo run -p unsubscribe --example pages -- <dir>`.

use std::sync::Arc;

use shared::metrics::Metrics;
use shared::subscriptions::memory::{MemorySubscriptions, MemoryUser};
use shared::unsubscribe::SigningKey;
use unsubscribe::handler::Unsubscriber;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "unsubscribe-pages".into()));
    std::fs::create_dir_all(&dir).expect("create the folder");
    let key = SigningKey::new(&"e".repeat(64)).expect("a key");
    let now = chrono::Utc::now().timestamp();
    let token = key.sign("sub", "tenant", now);
    // One subscribed user whose flag the pages flip.
    let pool = MemorySubscriptions::default();
    pool.users.lock().unwrap().push(MemoryUser {
        username: "user".into(),
        email: "user@example.com".into(),
        sub: "sub".into(),
        subscribed: true,
    });
    let pages = Unsubscriber::new(
        pool,
        key,
        None,
        "Navlab",
        Arc::new(Metrics::new("Example", "unsubscribe")),
    );
    for (name, method, body) in [
        ("unsubscribe-page", "GET", ""),
        ("unsubscribed-page", "POST", "List-Unsubscribe=One-Click"),
        ("resubscribed-page", "POST", "action=resubscribe"),
        ("invalid-link-page", "GET", ""),
    ] {
        let token = if name == "invalid-link-page" {
            "x"
        } else {
            token.as_str()
        };
        let page = pages.handle(method, Some(token), body, now).await;
        let path = dir.join(format!("{name}.html"));
        std::fs::write(&path, page.html).expect("write the page");
        println!("{} ({})", path.display(), page.status);
    }
}
