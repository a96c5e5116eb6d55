//! The user-source port on Cognito: `shared::directory`'s paged listing, with only the attributes the function reads.

use async_trait::async_trait;
use shared::directory::{is_subscribed, CognitoDirectory, SUBSCRIPTION_FLAG};

use crate::error::DependencyError;
use crate::ports::{PoolUser, UserPage, UserSource};

/// The attributes the function reads; `UserStatus` and `Enabled` come with every user.
const ATTRIBUTES: [&str; 6] = [
    "sub",
    "email",
    "email_verified",
    "given_name",
    "custom:_tenant",
    SUBSCRIPTION_FLAG,
];

#[async_trait]
impl UserSource for CognitoDirectory {
    async fn list_page(&self, from: Option<&str>) -> Result<UserPage, DependencyError> {
        let page = CognitoDirectory::list_page(self, from, &ATTRIBUTES)
            .await
            .map_err(DependencyError::from)?;
        let users = page
            .users
            .into_iter()
            .map(|user| PoolUser {
                sub: user.attributes.get("sub").cloned(),
                email: user.attributes.get("email").cloned(),
                given_name: user.attributes.get("given_name").cloned(),
                tenant: user.attributes.get("custom:_tenant").cloned(),
                subscribed: is_subscribed(&user.attributes),
                enabled: user.enabled,
                confirmed: user.confirmed,
                email_verified: user
                    .attributes
                    .get("email_verified")
                    .is_some_and(|v| v.eq_ignore_ascii_case("true")),
            })
            .collect();
        Ok(UserPage { users, next: page.next })
    }
}
