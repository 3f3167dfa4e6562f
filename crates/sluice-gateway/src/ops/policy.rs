//! PutResourcePolicy, GetResourcePolicy and DeleteResourcePolicy on stream and consumer
//! ARNs. Documents are validated as IAM-style resource policies before they are stored.

use super::*;

pub(super) async fn put(broker: &Broker, input: &Value) -> Result<Value, ApiError> {
    let arn = opt_str(input, "ResourceARN").unwrap_or("");
    let document = opt_str(input, "Policy").unwrap_or("");
    broker.put_resource_policy(arn, document).await?;
    Ok(obj(vec![]))
}

pub(super) fn get(broker: &Broker, input: &Value) -> Result<Value, ApiError> {
    let arn = opt_str(input, "ResourceARN").unwrap_or("");
    let document = broker.resource_policy(arn)?;
    // A resource without a policy answers an empty document, as AWS does.
    Ok(obj(vec![(
        "Policy",
        s(document.unwrap_or_else(|| "{}".into())),
    )]))
}

pub(super) async fn delete(broker: &Broker, input: &Value) -> Result<Value, ApiError> {
    let arn = opt_str(input, "ResourceARN").unwrap_or("");
    broker.delete_resource_policy(arn).await?;
    Ok(obj(vec![]))
}
