//! The subscription port on the Cognito user pool.

use async_trait::async_trait;

use super::{Subscriber, SubscriberKey, Subscriptions};
use crate::directory::{is_subscribed, CognitoDirectory, DirectoryError, SUBSCRIPTION_FLAG};

#[async_trait]
impl Subscriptions for CognitoDirectory {
    async fn find(&self, key: SubscriberKey<'_>) -> Result<Option<Subscriber>, DirectoryError> {
        let user = match key {
            SubscriberKey::Email(address) => self.find_one("email", address).await?,
            SubscriberKey::Sub(sub) => self.find_one("sub", sub).await?,
        };
        Ok(user.map(|user| Subscriber {
            subscribed: is_subscribed(&user.attributes),
            username: user.username,
        }))
    }

    async fn unsubscribe(&self, username: &str) -> Result<(), DirectoryError> {
        self.update_attributes(username, &[(SUBSCRIPTION_FLAG.to_owned(), "false".to_owned())])
            .await
    }

    async fn resubscribe(&self, username: &str) -> Result<(), DirectoryError> {
        self.update_attributes(username, &[(SUBSCRIPTION_FLAG.to_owned(), "true".to_owned())])
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_cognitoidentityprovider::operation::admin_update_user_attributes::AdminUpdateUserAttributesOutput;
    use aws_sdk_cognitoidentityprovider::operation::list_users::ListUsersOutput;
    use aws_sdk_cognitoidentityprovider::types::{AttributeType, UserType};
    use aws_sdk_cognitoidentityprovider::Client;
    use aws_smithy_mocks::{mock, mock_client, RuleMode};

    #[tokio::test]
    async fn a_subscriber_is_found_by_its_sub_or_address_and_its_flag_written_as_asked() {
        let by_sub = mock!(Client::list_users)
            .match_requests(|r| r.filter() == Some("sub = \"s-1\""))
            .then_output(|| {
                let flag = AttributeType::builder()
                    .name(SUBSCRIPTION_FLAG)
                    .value("Yes")
                    .build()
                    .unwrap();
                ListUsersOutput::builder()
                    .users(UserType::builder().username("u-1").attributes(flag).build())
                    .build()
            });
        let by_email = mock!(Client::list_users)
            .match_requests(|r| r.filter() == Some("email = \"nobody@example.com\""))
            .then_output(|| ListUsersOutput::builder().build());
        let off = mock!(Client::admin_update_user_attributes)
            .match_requests(|r| r.username() == Some("u-1") && r.user_attributes()[0].value() == Some("false"))
            .then_output(|| AdminUpdateUserAttributesOutput::builder().build());
        let on = mock!(Client::admin_update_user_attributes)
            .match_requests(|r| r.username() == Some("u-1") && r.user_attributes()[0].value() == Some("true"))
            .then_output(|| AdminUpdateUserAttributesOutput::builder().build());
        let client = mock_client!(
            aws_sdk_cognitoidentityprovider,
            RuleMode::MatchAny,
            [&by_sub, &by_email, &off, &on]
        );
        let directory = CognitoDirectory::new(client, "pool");
        let found = directory.find(SubscriberKey::Sub("s-1")).await.unwrap();
        assert_eq!(
            found,
            Some(Subscriber {
                username: "u-1".into(),
                subscribed: true
            })
        );
        assert_eq!(
            directory
                .find(SubscriberKey::Email("nobody@example.com"))
                .await
                .unwrap(),
            None
        );
        Subscriptions::unsubscribe(&directory, "u-1").await.unwrap();
        directory.resubscribe("u-1").await.unwrap();
        assert_eq!(
            (
                by_sub.num_calls(),
                by_email.num_calls(),
                off.num_calls(),
                on.num_calls()
            ),
            (1, 1, 1, 1)
        );
    }
}
