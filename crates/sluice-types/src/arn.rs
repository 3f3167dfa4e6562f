//! Stream and consumer ARNs.

use crate::names::StreamName;

/// `arn:aws:kinesis:<region>:<account>:stream/<name>`.
pub fn stream_arn(region: &str, account: &str, stream: &StreamName) -> String {
    format!("arn:aws:kinesis:{region}:{account}:stream/{stream}")
}

/// `<stream arn>/consumer/<name>:<creation epoch seconds>`.
pub fn consumer_arn(stream_arn: &str, consumer: &str, created_epoch_seconds: u64) -> String {
    format!("{stream_arn}/consumer/{consumer}:{created_epoch_seconds}")
}

/// Extracts the stream name from a stream ARN (any partition, region and account).
pub fn parse_stream_arn(arn: &str) -> Option<StreamName> {
    let rest = arn_resource(arn)?;
    let name = rest.strip_prefix("stream/")?;
    StreamName::parse(name).ok()
}

/// The parts of a consumer ARN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerArnParts {
    pub stream: StreamName,
    pub consumer: String,
    pub created_epoch_seconds: u64,
}

pub fn parse_consumer_arn(arn: &str) -> Option<ConsumerArnParts> {
    let rest = arn_resource(arn)?;
    let rest = rest.strip_prefix("stream/")?;
    let (stream, consumer) = rest.split_once("/consumer/")?;
    let (consumer, created) = consumer.rsplit_once(':')?;
    Some(ConsumerArnParts {
        stream: StreamName::parse(stream).ok()?,
        consumer: consumer.to_owned(),
        created_epoch_seconds: created.parse().ok()?,
    })
}

/// Returns the resource part of `arn:<partition>:kinesis:<region>:<account>:<resource>`.
fn arn_resource(arn: &str) -> Option<&str> {
    let mut parts = arn.splitn(6, ':');
    let (arn_tag, partition, service) = (parts.next()?, parts.next()?, parts.next()?);
    let (_region, account, resource) = (parts.next()?, parts.next()?, parts.next()?);
    if arn_tag != "arn" || !partition.starts_with("aws") || service != "kinesis" {
        return None;
    }
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(resource)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_arns_round_trip() {
        let name = StreamName::parse("orders").unwrap();
        let arn = stream_arn("us-east-1", "000000000000", &name);
        assert_eq!(arn, "arn:aws:kinesis:us-east-1:000000000000:stream/orders");
        assert_eq!(parse_stream_arn(&arn), Some(name));
        assert_eq!(parse_stream_arn("arn:aws:s3:::bucket"), None);
    }

    #[test]
    fn consumer_arns_round_trip() {
        let arn = consumer_arn(
            "arn:aws:kinesis:us-east-1:000000000000:stream/s",
            "app",
            1700000000,
        );
        let parts = parse_consumer_arn(&arn).unwrap();
        assert_eq!(parts.stream.as_str(), "s");
        assert_eq!(parts.consumer, "app");
        assert_eq!(parts.created_epoch_seconds, 1700000000);
    }
}
