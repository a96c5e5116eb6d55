//! The Cognito user pool, as the functions that read and write user attributes use it: one adapter over the SDK, its
//! errors classified once. Each function declares the small port it needs in its own `ports.rs` and implements it
//! for [`CognitoDirectory`] by delegation.

use std::collections::HashMap;

use aws_sdk_cognitoidentityprovider::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_cognitoidentityprovider::types::{AttributeType, UserStatusType};
use aws_sdk_cognitoidentityprovider::Client;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryUser {
    pub enabled: bool,
    pub attributes: HashMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryError {
    #[error("user does not exist in the user pool")]
    UserNotFound,
    /// The directory refused the request as such (an attribute the pool does not define, a value it rejects):
    /// sending it again cannot help.
    #[error("rejected by the user pool: {0}")]
    Rejected(String),
    /// Throttling that outlasted the SDK's retries, 5xx, timeouts: may succeed later.
    #[error("user pool unavailable: {0}")]
    Unavailable(String),
}

/// For a port that only asks whether the call can pass later: a refusal or a missing user will not.
impl From<DirectoryError> for crate::dependency::DependencyError {
    fn from(error: DirectoryError) -> Self {
        match error {
            DirectoryError::Unavailable(text) => crate::dependency::DependencyError::Unavailable(text),
            other => crate::dependency::DependencyError::Refused(other.to_string()),
        }
    }
}

impl From<DirectoryError> for crate::batch::RecordError {
    /// A rejection can never succeed as it is (poison); anything else may succeed when delivered again.
    fn from(error: DirectoryError) -> Self {
        match error {
            DirectoryError::Rejected(_) => crate::batch::RecordError::poison(error),
            _ => crate::batch::RecordError::transient(error),
        }
    }
}

/// A user as ListUsers gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedUser {
    pub username: String,
    pub enabled: bool,
    /// Signed up and confirmed, by password or through a federated (social or SAML) provider.
    pub confirmed: bool,
    pub attributes: HashMap<String, String>,
}

impl ListedUser {
    fn from_sdk(user: &aws_sdk_cognitoidentityprovider::types::UserType) -> Self {
        ListedUser {
            username: user.username().unwrap_or_default().to_owned(),
            enabled: user.enabled(),
            confirmed: matches!(
                user.user_status(),
                Some(UserStatusType::Confirmed | UserStatusType::ExternalProvider)
            ),
            attributes: user
                .attributes()
                .iter()
                .map(|a| (a.name().to_owned(), a.value().unwrap_or_default().to_owned()))
                .collect(),
        }
    }
}

/// One ListUsers page, and where the next one starts (`None`: the last page).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListedPage {
    pub users: Vec<ListedUser>,
    pub next: Option<String>,
}

/// The publish-history subscription flag: `true`, `1` or `yes` (any case) subscribe; anything else, or none, does not.
pub const SUBSCRIPTION_FLAG: &str = "custom:subPublishHistory";

pub fn is_subscribed(attributes: &HashMap<String, String>) -> bool {
    attributes
        .get(SUBSCRIPTION_FLAG)
        .is_some_and(|v| ["true", "1", "yes"].iter().any(|t| t.eq_ignore_ascii_case(v.trim())))
}

pub struct CognitoDirectory {
    client: Client,
    user_pool_id: String,
}

/// ListUsers' page size limit.
const PAGE_SIZE: i32 = 60;

impl CognitoDirectory {
    pub fn new(client: Client, user_pool_id: impl Into<String>) -> Self {
        Self {
            client,
            user_pool_id: user_pool_id.into(),
        }
    }

    /// Every user of the pool, page by page; `before_page` runs before each ListUsers call (to pace them).
    pub async fn list_users<F, Fut>(&self, before_page: F) -> Result<Vec<ListedUser>, DirectoryError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let mut users = Vec::new();
        let mut from: Option<String> = None;
        loop {
            before_page().await;
            let page = self.list_page(from.as_deref(), &[]).await?;
            users.extend(page.users);
            from = page.next;
            if from.is_none() {
                return Ok(users);
            }
        }
    }

    /// One page of the pool from `from` (`None`: the first), with only `attributes` (none named: all of them), so a
    /// listing can stop and go on from `next` in another invocation.
    pub async fn list_page(&self, from: Option<&str>, attributes: &[&str]) -> Result<ListedPage, DirectoryError> {
        let mut request = self
            .client
            .list_users()
            .user_pool_id(&self.user_pool_id)
            .limit(PAGE_SIZE)
            .set_pagination_token(from.map(str::to_owned));
        for attribute in attributes {
            request = request.attributes_to_get(*attribute);
        }
        let page = request.send().await.map_err(classify)?;
        Ok(ListedPage {
            users: page.users().iter().map(ListedUser::from_sdk).collect(),
            next: page.pagination_token().filter(|t| !t.is_empty()).map(str::to_owned),
        })
    }
}

fn classify<E, R>(error: SdkError<E, R>) -> DirectoryError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match error.code() {
        Some("UserNotFoundException") => DirectoryError::UserNotFound,
        Some("InvalidParameterException") | Some("AliasExistsException") => {
            DirectoryError::Rejected(error.message().unwrap_or("invalid parameter").to_owned())
        }
        _ => {
            DirectoryError::Unavailable(aws_sdk_cognitoidentityprovider::error::DisplayErrorContext(&error).to_string())
        }
    }
}

impl CognitoDirectory {
    /// The one user whose `attribute` (one ListUsers filters on: `sub`, `email`, ...) is exactly `value`; a value
    /// that could break out of the filter's quotes matches nobody.
    pub async fn find_one(&self, attribute: &str, value: &str) -> Result<Option<ListedUser>, DirectoryError> {
        if value.contains(['"', '\\']) {
            return Ok(None);
        }
        let output = self
            .client
            .list_users()
            .user_pool_id(&self.user_pool_id)
            .filter(format!("{attribute} = \"{value}\""))
            .limit(1)
            .send()
            .await
            .map_err(classify)?;
        Ok(output.users().first().map(ListedUser::from_sdk))
    }

    pub async fn get_user(&self, username: &str) -> Result<DirectoryUser, DirectoryError> {
        let output = self
            .client
            .admin_get_user()
            .user_pool_id(&self.user_pool_id)
            .username(username)
            .send()
            .await
            .map_err(classify)?;
        let attributes = output
            .user_attributes()
            .iter()
            .map(|a| (a.name().to_owned(), a.value().unwrap_or_default().to_owned()))
            .collect();
        Ok(DirectoryUser {
            enabled: output.enabled(),
            attributes,
        })
    }

    pub async fn update_attributes(
        &self,
        username: &str,
        attributes: &[(String, String)],
    ) -> Result<(), DirectoryError> {
        let attributes = attributes
            .iter()
            .map(|(name, value)| AttributeType::builder().name(name).value(value).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| DirectoryError::Rejected(e.to_string()))?;
        self.client
            .admin_update_user_attributes()
            .user_pool_id(&self.user_pool_id)
            .username(username)
            .set_user_attributes(Some(attributes))
            .send()
            .await
            .map(|_| ())
            .map_err(classify)
    }

    pub async fn delete_attributes(&self, username: &str, names: &[String]) -> Result<(), DirectoryError> {
        self.client
            .admin_delete_user_attributes()
            .user_pool_id(&self.user_pool_id)
            .username(username)
            .set_user_attribute_names(Some(names.to_vec()))
            .send()
            .await
            .map(|_| ())
            .map_err(classify)
    }

    pub async fn disable_user(&self, username: &str) -> Result<(), DirectoryError> {
        self.client
            .admin_disable_user()
            .user_pool_id(&self.user_pool_id)
            .username(username)
            .send()
            .await
            .map(|_| ())
            .map_err(classify)
    }

    pub async fn enable_user(&self, username: &str) -> Result<(), DirectoryError> {
        self.client
            .admin_enable_user()
            .user_pool_id(&self.user_pool_id)
            .username(username)
            .send()
            .await
            .map(|_| ())
            .map_err(classify)
    }

    pub async fn delete_user(&self, username: &str) -> Result<(), DirectoryError> {
        self.client
            .admin_delete_user()
            .user_pool_id(&self.user_pool_id)
            .username(username)
            .send()
            .await
            .map(|_| ())
            .map_err(classify)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_cognitoidentityprovider::error::ErrorMetadata;
    use aws_sdk_cognitoidentityprovider::operation::admin_get_user::{AdminGetUserError, AdminGetUserOutput};
    use aws_sdk_cognitoidentityprovider::operation::admin_update_user_attributes::AdminUpdateUserAttributesError;
    use aws_sdk_cognitoidentityprovider::types::error::{InvalidParameterException, UserNotFoundException};
    use aws_smithy_mocks::{mock, mock_client};
    // Deserialized service errors carry their code in the metadata, which is what `classify` reads.

    #[test]
    fn the_subscription_flag_is_true_1_or_yes_in_any_case() {
        for yes in ["true", "TRUE", "1", "yes", "Yes "] {
            assert!(
                is_subscribed(&HashMap::from([(SUBSCRIPTION_FLAG.to_owned(), yes.to_owned())])),
                "{yes}"
            );
        }
        for no in ["false", "0", "no", "", "y"] {
            assert!(
                !is_subscribed(&HashMap::from([(SUBSCRIPTION_FLAG.to_owned(), no.to_owned())])),
                "{no}"
            );
        }
        assert!(!is_subscribed(&HashMap::new()), "no flag: not subscribed");
    }

    #[tokio::test]
    async fn a_page_asks_only_for_the_chosen_attributes_and_says_where_the_next_starts() {
        use aws_sdk_cognitoidentityprovider::operation::list_users::ListUsersOutput;
        use aws_sdk_cognitoidentityprovider::types::UserType;
        let rule = mock!(Client::list_users)
            .match_requests(|r| {
                r.pagination_token() == Some("p2")
                    && r.attributes_to_get() == ["email", SUBSCRIPTION_FLAG]
                    && r.limit() == Some(60)
            })
            .then_output(|| {
                ListUsersOutput::builder()
                    .users(
                        UserType::builder()
                            .username("u1")
                            .enabled(true)
                            .user_status(UserStatusType::ExternalProvider)
                            .attributes(AttributeType::builder().name("email").value("a@b.co").build().unwrap())
                            .build(),
                    )
                    .users(
                        UserType::builder()
                            .username("u2")
                            .enabled(false)
                            .user_status(UserStatusType::Unconfirmed)
                            .build(),
                    )
                    .pagination_token("p3")
                    .build()
            });
        let directory = CognitoDirectory::new(mock_client!(aws_sdk_cognitoidentityprovider, [&rule]), "pool");
        let page = directory
            .list_page(Some("p2"), &["email", SUBSCRIPTION_FLAG])
            .await
            .unwrap();
        assert_eq!(rule.num_calls(), 1, "asked from the token for only those attributes");
        assert_eq!(page.next.as_deref(), Some("p3"));
        assert_eq!(
            page.users[0].attributes.get("email").map(String::as_str),
            Some("a@b.co")
        );
        assert!(page.users[0].confirmed, "a federated sign-in is confirmed");
        assert!(!page.users[1].confirmed && !page.users[1].enabled);
    }

    #[tokio::test]
    async fn reads_enabled_flag_and_attributes() {
        let rule = mock!(Client::admin_get_user)
            .match_requests(|r| r.user_pool_id() == Some("pool") && r.username() == Some("a@b.co"))
            .then_output(|| {
                AdminGetUserOutput::builder()
                    .username("a@b.co")
                    .enabled(false)
                    .user_attributes(
                        AttributeType::builder()
                            .name("given_name")
                            .value("Ada")
                            .build()
                            .unwrap(),
                    )
                    .build()
                    .unwrap()
            });
        let directory = CognitoDirectory::new(mock_client!(aws_sdk_cognitoidentityprovider, [&rule]), "pool");
        let user = directory.get_user("a@b.co").await.unwrap();
        assert!(!user.enabled);
        assert_eq!(user.attributes["given_name"], "Ada");
    }

    #[tokio::test]
    async fn classifies_not_found_and_invalid_parameter() {
        let not_found = mock!(Client::admin_get_user).then_error(|| {
            AdminGetUserError::UserNotFoundException(
                UserNotFoundException::builder()
                    .message("User does not exist.")
                    .meta(
                        ErrorMetadata::builder()
                            .code("UserNotFoundException")
                            .message("User does not exist.")
                            .build(),
                    )
                    .build(),
            )
        });
        let directory = CognitoDirectory::new(mock_client!(aws_sdk_cognitoidentityprovider, [&not_found]), "pool");
        assert_eq!(directory.get_user("x@b.co").await, Err(DirectoryError::UserNotFound));

        let invalid = mock!(Client::admin_update_user_attributes).then_error(|| {
            AdminUpdateUserAttributesError::InvalidParameterException(
                InvalidParameterException::builder()
                    .message("Attribute does not exist in the schema.")
                    .meta(
                        ErrorMetadata::builder()
                            .code("InvalidParameterException")
                            .message("Attribute does not exist in the schema.")
                            .build(),
                    )
                    .build(),
            )
        });
        let directory = CognitoDirectory::new(mock_client!(aws_sdk_cognitoidentityprovider, [&invalid]), "pool");
        let err = directory
            .update_attributes("a@b.co", &[("custom:nope".into(), "x".into())])
            .await
            .unwrap_err();
        assert_eq!(
            err,
            DirectoryError::Rejected("Attribute does not exist in the schema.".into())
        );
    }

    #[tokio::test]
    async fn lists_every_page_and_paces_each_call() {
        use aws_sdk_cognitoidentityprovider::operation::list_users::ListUsersOutput;
        use aws_sdk_cognitoidentityprovider::types::UserType;
        let user = |name: &str| {
            UserType::builder()
                .username(name)
                .enabled(true)
                .attributes(AttributeType::builder().name("email").value(name).build().unwrap())
                .build()
        };
        let first = mock!(Client::list_users)
            .match_requests(|r| r.pagination_token().is_none() && r.limit() == Some(60))
            .then_output(move || {
                ListUsersOutput::builder()
                    .users(user("a@b.co"))
                    .pagination_token("p2")
                    .build()
            });
        let second = mock!(Client::list_users)
            .match_requests(|r| r.pagination_token() == Some("p2"))
            .then_output(move || ListUsersOutput::builder().users(user("c@d.co")).build());
        let directory = CognitoDirectory::new(
            mock_client!(
                aws_sdk_cognitoidentityprovider,
                aws_smithy_mocks::RuleMode::MatchAny,
                [&first, &second]
            ),
            "pool",
        );
        let paced = std::sync::atomic::AtomicUsize::new(0);
        let users = directory
            .list_users(|| async {
                paced.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            })
            .await
            .unwrap();
        assert_eq!(
            users.iter().map(|u| u.username.as_str()).collect::<Vec<_>>(),
            vec!["a@b.co", "c@d.co"]
        );
        assert_eq!(users[1].attributes["email"], "c@d.co");
        assert_eq!(paced.into_inner(), 2, "one pacing wait per page");
    }
}
