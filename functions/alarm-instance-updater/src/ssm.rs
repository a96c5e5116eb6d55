//! The restriction parameter's port on SSM Parameter Store.

use async_trait::async_trait;
use aws_sdk_ssm::error::ProvideErrorMetadata;
use aws_sdk_ssm::types::ParameterType;

use crate::ports::{DependencyError, RestrictionStore, Stored, WriteError};

pub struct SsmParameter {
    client: aws_sdk_ssm::Client,
    name: String,
}

impl SsmParameter {
    pub fn new(client: aws_sdk_ssm::Client, name: impl Into<String>) -> Self {
        Self {
            client,
            name: name.into(),
        }
    }
}

#[async_trait]
impl RestrictionStore for SsmParameter {
    async fn read(&self) -> Result<Option<Stored>, DependencyError> {
        match self.client.get_parameter().name(&self.name).send().await {
            Ok(output) => Ok(output.parameter().and_then(|p| {
                Some(Stored {
                    value: p.value()?.to_owned(),
                    version: p.version(),
                })
            })),
            Err(error) if error.code() == Some("ParameterNotFound") => Ok(None),
            Err(error) => Err(DependencyError::from_sdk(error).within(format!("reading {}", self.name))),
        }
    }

    async fn read_version(&self, version: i64) -> Result<Option<String>, DependencyError> {
        match self
            .client
            .get_parameter()
            .name(format!("{}:{version}", self.name))
            .send()
            .await
        {
            Ok(output) => Ok(output.parameter().and_then(|p| p.value()).map(str::to_owned)),
            Err(error) if matches!(error.code(), Some("ParameterNotFound" | "ParameterVersionNotFound")) => Ok(None),
            Err(error) => {
                Err(DependencyError::from_sdk(error).within(format!("reading {} version {version}", self.name)))
            }
        }
    }

    async fn write(&self, value: &str) -> Result<i64, WriteError> {
        self.client
            .put_parameter()
            .name(&self.name)
            .value(value)
            .r#type(ParameterType::String)
            .overwrite(true)
            .send()
            .await
            .map(|o| o.version())
            .map_err(|e| {
                let contended = e.code() == Some("TooManyUpdates");
                let error = DependencyError::from_sdk(e).within(format!("writing {}", self.name));
                if contended {
                    WriteError::Contended(error.to_string())
                } else {
                    WriteError::Failed(error)
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ssm::error::ErrorMetadata;
    use aws_sdk_ssm::operation::get_parameter::GetParameterError;
    use aws_sdk_ssm::types::error::ParameterNotFound;
    use aws_smithy_mocks::{mock, mock_client};

    #[tokio::test]
    async fn missing_parameter_reads_as_none() {
        let rule = mock!(aws_sdk_ssm::Client::get_parameter).then_error(|| {
            GetParameterError::ParameterNotFound(
                ParameterNotFound::builder()
                    .meta(ErrorMetadata::builder().code("ParameterNotFound").build())
                    .build(),
            )
        });
        let parameter = SsmParameter::new(mock_client!(aws_sdk_ssm, [&rule]), "/bg-removal/restriction");
        assert_eq!(parameter.read().await, Ok(None));
    }
}
