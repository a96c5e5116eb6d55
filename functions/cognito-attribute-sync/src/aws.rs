//! The SDK adapters of the ports: the user directory on Cognito.

use async_trait::async_trait;
use aws_sdk_cognitoidentityprovider::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_cognitoidentityprovider::types::AttributeType;
use aws_sdk_cognitoidentityprovider::Client;

use crate::ports::{DirectoryError, DirectoryUser, UserDirectory};

pub struct CognitoDirectory {
    client: Client,
    user_pool_id: String,
}

impl CognitoDirectory {
    pub fn new(client: Client, user_pool_id: impl Into<String>) -> Self {
        Self { client, user_pool_id: user_pool_id.into() }
    }
}

fn classify<E, R>(error: SdkError<E, R>) -> DirectoryError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match error.code() {
        Some("UserNotFoundException") => DirectoryError::UserNotFound,
        Some("InvalidParameterException") | Some("AliasExistsException") => DirectoryError::Rejected(error.message().unwrap_or("invalid parameter").to_owned()),
        _ => DirectoryError::Unavailable(aws_sdk_cognitoidentityprovider::error::DisplayErrorContext(&error).to_string()),
    }
}

#[async_trait]
impl UserDirectory for CognitoDirectory {
    async fn get_user(&self, username: &str) -> Result<DirectoryUser, DirectoryError> {
        let output = self.client.admin_get_user().user_pool_id(&self.user_pool_id).username(username).send().await.map_err(classify)?;
        let attributes = output.user_attributes().iter().map(|a| (a.name().to_owned(), a.value().unwrap_or_default().to_owned())).collect();
        Ok(DirectoryUser { enabled: output.enabled(), attributes })
    }

    async fn update_attributes(&self, username: &str, attributes: &[(String, String)]) -> Result<(), DirectoryError> {
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

    async fn delete_attributes(&self, username: &str, names: &[String]) -> Result<(), DirectoryError> {
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

    async fn disable_user(&self, username: &str) -> Result<(), DirectoryError> {
        self.client.admin_disable_user().user_pool_id(&self.user_pool_id).username(username).send().await.map(|_| ()).map_err(classify)
    }

    async fn delete_user(&self, username: &str) -> Result<(), DirectoryError> {
        self.client.admin_delete_user().user_pool_id(&self.user_pool_id).username(username).send().await.map(|_| ()).map_err(classify)
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

    #[tokio::test]
    async fn reads_enabled_flag_and_attributes() {
        let rule = mock!(Client::admin_get_user).match_requests(|r| r.user_pool_id() == Some("pool") && r.username() == Some("a@b.co")).then_output(|| {
            AdminGetUserOutput::builder()
                .username("a@b.co")
                .enabled(false)
                .user_attributes(AttributeType::builder().name("given_name").value("Ada").build().unwrap())
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
                    .meta(ErrorMetadata::builder().code("UserNotFoundException").message("User does not exist.").build())
                    .build(),
            )
        });
        let directory = CognitoDirectory::new(mock_client!(aws_sdk_cognitoidentityprovider, [&not_found]), "pool");
        assert_eq!(directory.get_user("x@b.co").await, Err(DirectoryError::UserNotFound));

        let invalid = mock!(Client::admin_update_user_attributes).then_error(|| {
            AdminUpdateUserAttributesError::InvalidParameterException(
                InvalidParameterException::builder()
                    .message("Attribute does not exist in the schema.")
                    .meta(ErrorMetadata::builder().code("InvalidParameterException").message("Attribute does not exist in the schema.").build())
                    .build(),
            )
        });
        let directory = CognitoDirectory::new(mock_client!(aws_sdk_cognitoidentityprovider, [&invalid]), "pool");
        let err = directory.update_attributes("a@b.co", &[("custom:nope".into(), "x".into())]).await.unwrap_err();
        assert_eq!(err, DirectoryError::Rejected("Attribute does not exist in the schema.".into()));
    }
}
