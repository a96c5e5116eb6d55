use lambda_http::{service_fn, Body, Error, Request, RequestExt, Response};
use shared::directory::CognitoDirectory;
use shared::startup::Startup;
use shared::unsubscribe::read_signing_key;
use unsubscribe::config::Config;
use unsubscribe::handler::{Page, Unsubscriber, CONTENT_SECURITY_POLICY};

fn response(page: Page) -> Result<Response<Body>, Error> {
    let mut builder = Response::builder()
        .status(page.status)
        .header("Content-Type", "text/html; charset=utf-8")
        .header("Cache-Control", "no-store")
        .header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        .header("X-Content-Type-Options", "nosniff")
        .header("Referrer-Policy", "no-referrer");
    if let Some(allow) = page.allow {
        builder = builder.header("Allow", allow);
    }
    Ok(builder.body(Body::from(page.html))?)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let Startup {
        config, sdk, metrics, ..
    } = shared::startup::init("unsubscribe", unsubscribe::config::TIMEOUT, Config::from_env).await?;
    let ssm = aws_sdk_ssm::Client::new(&sdk);
    let current = read_signing_key(&ssm, "UNSUBSCRIBE_KEY_PARAMETER", &config.key_parameter).await?;
    let previous = match &config.previous_key_parameter {
        Some(name) => Some(read_signing_key(&ssm, "UNSUBSCRIBE_PREVIOUS_KEY_PARAMETER", name).await?),
        None => None,
    };
    let subscriptions = CognitoDirectory::new(aws_sdk_cognitoidentityprovider::Client::new(&sdk), config.user_pool_id);
    let unsubscriber = Unsubscriber::new(subscriptions, current, previous, &config.product, metrics.clone());
    lambda_http::run(service_fn(|request: Request| {
        let (unsubscriber, metrics) = (&unsubscriber, metrics.clone());
        async move {
            let token = request
                .query_string_parameters_ref()
                .and_then(|q| q.first("token"))
                .map(str::to_owned);
            let body = std::str::from_utf8(request.body().as_ref())
                .unwrap_or_default()
                .to_owned();
            let page = unsubscriber
                .handle(
                    request.method().as_str(),
                    token.as_deref(),
                    &body,
                    chrono::Utc::now().timestamp(),
                )
                .await;
            metrics.flush();
            response(page)
        }
    }))
    .await
}
