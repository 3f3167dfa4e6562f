//! Authentication and authorization with `--auth sigv4`: SigV4 checked as AWS checks it
//! (the real SDK's signer and client), IAM-style identity and resource policies over every
//! operation, and the same keys guarding the gRPC API.

use aws_sdk_kinesis::error::ProvideErrorMetadata;
use sluice_proto::v1 as pb;
use sluice_proto::v1::auth_client::AuthClient;
use sluice_proto::v1::streams_client::StreamsClient;
use sluice_tests::signing::{GrpcSigner, Key, send_request, signed_call, signed_kinesis_request};
use sluice_tests::{Node, NodeOptions, RawResponse, client_with_key, wait_active};
use std::time::{Duration, SystemTime};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

const ADMIN_ID: &str = "AKIAADMINTESTKEY0001";
const ADMIN_SECRET: &str = "admin-secret-for-the-auth-suite";
const ACCOUNT: &str = "000000000000";

fn admin() -> Key {
    Key::new(ADMIN_ID, ADMIN_SECRET)
}

fn auth_options() -> NodeOptions {
    NodeOptions {
        config: sluice_server::RawConfig {
            auth: Some("sigv4".into()),
            admin_access_key_id: Some(ADMIN_ID.into()),
            admin_secret_access_key: Some(ADMIN_SECRET.into()),
            ..Default::default()
        },
        ..Default::default()
    }
}

async fn channel(node: &Node) -> Channel {
    Channel::from_shared(format!("http://{}", node.grpc_addr))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect grpc")
}

async fn auth_client(
    node: &Node,
    key: Option<Key>,
) -> AuthClient<InterceptedService<Channel, GrpcSigner>> {
    AuthClient::with_interceptor(channel(node).await, GrpcSigner(key))
}

/// Creates a key for `user` through the gRPC API, signed by the admin key.
async fn create_key(node: &Node, user: &str) -> Key {
    let created = auth_client(node, Some(admin()))
        .await
        .create_access_key(pb::CreateAccessKeyRequest {
            user: user.into(),
            admin: false,
        })
        .await
        .expect("create key")
        .into_inner();
    assert!(created.access_key_id.starts_with("AKIA"));
    assert_eq!(created.access_key_id.len(), 20);
    assert_eq!(created.secret_access_key.len(), 40);
    Key::new(created.access_key_id, created.secret_access_key)
}

async fn attach(node: &Node, key: &Key, name: &str, document: &str) {
    auth_client(node, Some(admin()))
        .await
        .attach_policy(pb::AttachPolicyRequest {
            access_key_id: key.id.clone(),
            policy_name: name.into(),
            document: document.into(),
        })
        .await
        .expect("attach policy");
}

fn error_type(response: &RawResponse) -> String {
    response.json()["__type"].as_str().unwrap_or("").to_owned()
}

fn message(response: &RawResponse) -> String {
    response.json()["message"].as_str().unwrap_or("").to_owned()
}

#[tokio::test]
async fn sigv4_signatures_are_checked_as_aws_checks_them() {
    let node = Node::start_with(auth_options()).await;
    let endpoint = node.endpoint();

    // The real SDK with the right key.
    let good = client_with_key(&endpoint, ADMIN_ID, ADMIN_SECRET);
    good.create_stream()
        .stream_name("signed")
        .shard_count(1)
        .send()
        .await
        .expect("create with the admin key");
    wait_active(&good, "signed").await;

    // A wrong secret and an unknown key.
    let error = client_with_key(&endpoint, ADMIN_ID, "not-the-admin-secret-at-all")
        .list_streams()
        .send()
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some("InvalidSignatureException"));
    assert!(
        error
            .message()
            .unwrap_or("")
            .starts_with("The request signature we calculated does not match"),
        "{error:?}"
    );
    let error = client_with_key(&endpoint, "AKIAUNKNOWNKEY000000", "whatever-secret-value")
        .list_streams()
        .send()
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some("UnrecognizedClientException"));
    assert_eq!(
        error.message(),
        Some("The security token included in the request is invalid.")
    );

    // Dates outside the 15-minute window, both ways.
    let past = SystemTime::now() - Duration::from_secs(20 * 60);
    let response = describe_signed_at(&node, past, "us-east-1").await;
    assert_eq!(response.status, 400);
    assert_eq!(error_type(&response), "InvalidSignatureException");
    assert!(
        message(&response).starts_with("Signature expired: "),
        "{}",
        message(&response)
    );
    let future = SystemTime::now() + Duration::from_secs(20 * 60);
    let response = describe_signed_at(&node, future, "us-east-1").await;
    assert_eq!(error_type(&response), "InvalidSignatureException");
    assert!(message(&response).starts_with("Signature not yet current: "));

    // Another region's scope.
    let response = describe_signed_at(&node, SystemTime::now(), "eu-west-1").await;
    assert_eq!(error_type(&response), "InvalidSignatureException");
    assert_eq!(
        message(&response),
        "Credential should be scoped to a valid region, not 'eu-west-1'. "
    );

    // A body changed after signing: same signature, other stream.
    let mut request = signed_kinesis_request(
        node.kinesis_addr,
        &admin(),
        "DeleteStream",
        br#"{"StreamName":"other"}"#,
        SystemTime::now(),
        "us-east-1",
    );
    *request.body_mut() = br#"{"StreamName":"signed"}"#.to_vec();
    let response = send_request(request).await;
    assert_eq!(error_type(&response), "InvalidSignatureException");
    good.describe_stream_summary()
        .stream_name("signed")
        .send()
        .await
        .expect("the tampered delete changed nothing");

    // No signature at all, and an incomplete one.
    let response = sluice_tests::raw_request(
        node.kinesis_addr,
        Some("Kinesis_20131202.ListStreams"),
        "application/x-amz-json-1.1",
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(error_type(&response), "MissingAuthenticationTokenException");
    assert_eq!(message(&response), "Missing Authentication Token");
    let mut request = signed_kinesis_request(
        node.kinesis_addr,
        &admin(),
        "ListStreams",
        b"{}",
        SystemTime::now(),
        "us-east-1",
    );
    request.headers_mut().insert(
        "authorization",
        http_value("AWS4-HMAC-SHA256 Credential=AKIAADMINTESTKEY0001/20260101/us-east-1/kinesis/aws4_request"),
    );
    let response = send_request(request).await;
    assert_eq!(error_type(&response), "IncompleteSignatureException");
    assert!(message(&response).starts_with(
        "Authorization header requires 'Signature' parameter. Authorization header requires 'SignedHeaders' parameter."
    ));
}

/// DescribeStreamSummary of `signed`, signed by the admin key as of `time` for `region`.
async fn describe_signed_at(node: &Node, time: SystemTime, region: &str) -> RawResponse {
    send_request(signed_kinesis_request(
        node.kinesis_addr,
        &admin(),
        "DescribeStreamSummary",
        br#"{"StreamName":"signed"}"#,
        time,
        region,
    ))
    .await
}

fn http_value(text: &'static str) -> hyper::header::HeaderValue {
    hyper::header::HeaderValue::from_static(text)
}

/// One row per Kinesis operation: a request that passes validation, acting on the
/// stream `matrix` (or on something absent where the call would destroy shared state).
fn operation_matrix(
    stream_arn: &str,
    consumer_arn: &str,
    iterator: &str,
) -> Vec<(&'static str, String)> {
    let harmless_policy = serde_json::to_string(&format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Deny","Principal":{{"AWS":"arn:aws:iam::{ACCOUNT}:user/nobody-at-all"}},"Action":"kinesis:ListShards","Resource":"{stream_arn}"}}]}}"#
    ))
    .expect("json string");
    vec![
        ("AddTagsToStream", r#"{"StreamName":"matrix","Tags":{"k":"v"}}"#.into()),
        ("CreateStream", r#"{"StreamName":"matrix-created","ShardCount":1}"#.into()),
        ("DecreaseStreamRetentionPeriod", r#"{"StreamName":"matrix","RetentionPeriodHours":24}"#.into()),
        ("DeleteResourcePolicy", format!(r#"{{"ResourceARN":"{stream_arn}-absent"}}"#)),
        ("DeleteStream", r#"{"StreamName":"matrix-absent"}"#.into()),
        ("DeregisterStreamConsumer", format!(r#"{{"StreamARN":"{stream_arn}","ConsumerName":"absent"}}"#)),
        ("DescribeLimits", "{}".into()),
        ("DescribeStream", r#"{"StreamName":"matrix"}"#.into()),
        ("DescribeStreamConsumer", format!(r#"{{"ConsumerARN":"{consumer_arn}"}}"#)),
        ("DescribeStreamSummary", r#"{"StreamName":"matrix"}"#.into()),
        ("DisableEnhancedMonitoring", r#"{"StreamName":"matrix","ShardLevelMetrics":["IncomingBytes"]}"#.into()),
        ("EnableEnhancedMonitoring", r#"{"StreamName":"matrix","ShardLevelMetrics":["IncomingBytes"]}"#.into()),
        ("GetRecords", format!(r#"{{"ShardIterator":"{iterator}"}}"#)),
        ("GetResourcePolicy", format!(r#"{{"ResourceARN":"{stream_arn}"}}"#)),
        ("GetShardIterator", r#"{"StreamName":"matrix","ShardId":"shardId-000000000000","ShardIteratorType":"TRIM_HORIZON"}"#.into()),
        ("IncreaseStreamRetentionPeriod", r#"{"StreamName":"matrix","RetentionPeriodHours":24}"#.into()),
        ("ListShards", r#"{"StreamName":"matrix"}"#.into()),
        ("ListStreamConsumers", format!(r#"{{"StreamARN":"{stream_arn}"}}"#)),
        ("ListStreams", "{}".into()),
        ("ListTagsForResource", format!(r#"{{"ResourceARN":"{stream_arn}"}}"#)),
        ("ListTagsForStream", r#"{"StreamName":"matrix"}"#.into()),
        ("MergeShards", r#"{"StreamName":"matrix","ShardToMerge":"shardId-000000000098","AdjacentShardToMerge":"shardId-000000000099"}"#.into()),
        ("PutRecord", r#"{"StreamName":"matrix","Data":"AA==","PartitionKey":"k"}"#.into()),
        ("PutRecords", r#"{"StreamName":"matrix","Records":[{"Data":"AA==","PartitionKey":"k"}]}"#.into()),
        ("PutResourcePolicy", format!(r#"{{"ResourceARN":"{stream_arn}","Policy":{harmless_policy}}}"#)),
        ("RegisterStreamConsumer", format!(r#"{{"StreamARN":"{stream_arn}","ConsumerName":"registered"}}"#)),
        ("RemoveTagsFromStream", r#"{"StreamName":"matrix","TagKeys":["k"]}"#.into()),
        ("SplitShard", r#"{"StreamName":"matrix","ShardToSplit":"shardId-000000000099","NewStartingHashKey":"1"}"#.into()),
        ("StartStreamEncryption", r#"{"StreamName":"matrix-absent","EncryptionType":"KMS","KeyId":"alias/aws/kinesis"}"#.into()),
        ("StopStreamEncryption", r#"{"StreamName":"matrix-absent","EncryptionType":"KMS","KeyId":"alias/aws/kinesis"}"#.into()),
        ("SubscribeToShard", format!(r#"{{"ConsumerARN":"{consumer_arn}","ShardId":"shardId-000000000099","StartingPosition":{{"Type":"LATEST"}}}}"#)),
        ("TagResource", format!(r#"{{"ResourceARN":"{stream_arn}","Tags":{{"k":"v"}}}}"#)),
        ("UntagResource", format!(r#"{{"ResourceARN":"{stream_arn}","TagKeys":["k"]}}"#)),
        ("UpdateShardCount", r#"{"StreamName":"matrix-absent","TargetShardCount":2,"ScalingType":"UNIFORM_SCALING"}"#.into()),
        ("UpdateStreamMode", format!(r#"{{"StreamARN":"{stream_arn}-absent","StreamModeDetails":{{"StreamMode":"PROVISIONED"}}}}"#)),
    ]
}

#[tokio::test]
async fn policies_allow_and_deny_every_operation() {
    let node = Node::start_with(auth_options()).await;
    let admin_client = client_with_key(&node.endpoint(), ADMIN_ID, ADMIN_SECRET);
    admin_client
        .create_stream()
        .stream_name("matrix")
        .shard_count(2)
        .send()
        .await
        .expect("create");
    wait_active(&admin_client, "matrix").await;
    let stream_arn = format!("arn:aws:kinesis:us-east-1:{ACCOUNT}:stream/matrix");
    let consumer_arn = admin_client
        .register_stream_consumer()
        .stream_arn(&stream_arn)
        .consumer_name("reader")
        .send()
        .await
        .expect("register")
        .consumer
        .expect("consumer")
        .consumer_arn;
    let iterator = admin_client
        .get_shard_iterator()
        .stream_name("matrix")
        .shard_id("shardId-000000000000")
        .shard_iterator_type(aws_sdk_kinesis::types::ShardIteratorType::TrimHorizon)
        .send()
        .await
        .expect("iterator")
        .shard_iterator
        .expect("iterator");

    let nobody = create_key(&node, "nobody").await;
    let scoped = create_key(&node, "scoped").await;
    let denied = create_key(&node, "denied").await;
    attach(
        &node,
        &denied,
        "everything",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kinesis:*","Resource":"*"}]}"#,
    )
    .await;

    let rows = operation_matrix(&stream_arn, &consumer_arn, &iterator);
    assert_eq!(rows.len(), 35, "one row per operation the gateway serves");
    for (operation, body) in &rows {
        let action = format!("kinesis:{operation}");

        // No policy: implicitly denied, nothing happens.
        let response = signed_call(node.kinesis_addr, &nobody, operation, body).await;
        assert_eq!(
            error_type(&response),
            "AccessDeniedException",
            "{operation}: {}",
            message(&response)
        );
        let text = message(&response);
        assert!(
            text.starts_with(&format!(
                "User: arn:aws:iam::{ACCOUNT}:user/nobody is not authorized to perform: {action} on resource: "
            )) && text.ends_with(&format!("because no identity-based policy allows the {action} action")),
            "{operation}: {text}"
        );

        // A policy allowing exactly this action: the call gets past authorization.
        attach(
            &node,
            &scoped,
            "only-this",
            &format!(r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"{action}","Resource":"*"}}]}}"#),
        )
        .await;
        let response = signed_call(node.kinesis_addr, &scoped, operation, body).await;
        assert_ne!(
            error_type(&response),
            "AccessDeniedException",
            "{operation}: {}",
            message(&response)
        );

        // Allowed everything, but this action explicitly denied.
        attach(
            &node,
            &denied,
            "but-not-this",
            &format!(r#"{{"Statement":{{"Effect":"Deny","Action":"{action}","Resource":"*"}}}}"#),
        )
        .await;
        let response = signed_call(node.kinesis_addr, &denied, operation, body).await;
        assert_eq!(
            error_type(&response),
            "AccessDeniedException",
            "{operation}"
        );
        assert!(
            message(&response).ends_with("with an explicit deny in an identity-based policy"),
            "{operation}: {}",
            message(&response)
        );
    }

    // Resources are matched too: a policy on another stream's ARN grants nothing here.
    attach(
        &node,
        &scoped,
        "only-this",
        r#"{"Statement":{"Effect":"Allow","Action":"kinesis:*","Resource":"arn:aws:kinesis:*:*:stream/elsewhere"}}"#,
    )
    .await;
    let response = signed_call(
        node.kinesis_addr,
        &scoped,
        "DescribeStreamSummary",
        r#"{"StreamName":"matrix"}"#,
    )
    .await;
    assert_eq!(error_type(&response), "AccessDeniedException");
    assert!(message(&response).contains(&format!("on resource: {stream_arn} ")));
    let response = signed_call(
        node.kinesis_addr,
        &scoped,
        "DescribeStreamSummary",
        r#"{"StreamName":"elsewhere"}"#,
    )
    .await;
    assert_eq!(error_type(&response), "ResourceNotFoundException");
}

#[tokio::test]
async fn resource_policies_grant_and_are_managed_through_the_kinesis_api() {
    let node = Node::start_with(auth_options()).await;
    let admin_client = client_with_key(&node.endpoint(), ADMIN_ID, ADMIN_SECRET);
    admin_client
        .create_stream()
        .stream_name("shared")
        .shard_count(1)
        .send()
        .await
        .expect("create");
    wait_active(&admin_client, "shared").await;
    let arn = format!("arn:aws:kinesis:us-east-1:{ACCOUNT}:stream/shared");
    let alice = create_key(&node, "alice").await;
    let alice_client = client_with_key(&node.endpoint(), &alice.id, &alice.secret);

    let denied = alice_client
        .describe_stream_summary()
        .stream_name("shared")
        .send()
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Some("AccessDeniedException"));

    // GetResourcePolicy of a stream without one answers an empty document.
    let empty = admin_client
        .get_resource_policy()
        .resource_arn(&arn)
        .send()
        .await
        .expect("get");
    assert_eq!(empty.policy, "{}");

    let document = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{ACCOUNT}:user/alice"}},"Action":["kinesis:DescribeStreamSummary","kinesis:PutRecord"],"Resource":"{arn}"}}]}}"#
    );
    admin_client
        .put_resource_policy()
        .resource_arn(&arn)
        .policy(&document)
        .send()
        .await
        .expect("put policy");
    let stored = admin_client
        .get_resource_policy()
        .resource_arn(&arn)
        .send()
        .await
        .expect("get");
    assert_eq!(stored.policy, document);
    alice_client
        .describe_stream_summary()
        .stream_name("shared")
        .send()
        .await
        .expect("the resource policy grants alice");
    alice_client
        .put_record()
        .stream_name("shared")
        .partition_key("k")
        .data(aws_sdk_kinesis::primitives::Blob::new("hello"))
        .send()
        .await
        .expect("put allowed by the resource policy");
    let still_denied = alice_client
        .list_shards()
        .stream_name("shared")
        .send()
        .await
        .unwrap_err();
    assert_eq!(still_denied.code(), Some("AccessDeniedException"));

    // An invalid document is refused and changes nothing.
    let invalid = admin_client
        .put_resource_policy()
        .resource_arn(&arn)
        .policy(r#"{"Statement":{"Effect":"Allow","Action":"kinesis:*"}}"#)
        .send()
        .await
        .unwrap_err();
    assert_eq!(invalid.code(), Some("InvalidArgumentException"));
    let stored = admin_client
        .get_resource_policy()
        .resource_arn(&arn)
        .send()
        .await
        .expect("get");
    assert_eq!(stored.policy, document);

    admin_client
        .delete_resource_policy()
        .resource_arn(&arn)
        .send()
        .await
        .expect("delete");
    let denied = alice_client
        .describe_stream_summary()
        .stream_name("shared")
        .send()
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Some("AccessDeniedException"));
    let missing = admin_client
        .delete_resource_policy()
        .resource_arn(&arn)
        .send()
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Some("ResourceNotFoundException"));
}

#[tokio::test]
async fn grpc_calls_need_a_signature_and_a_policy() {
    let node = Node::start_with(auth_options()).await;
    let streams = |key: Option<Key>| {
        let node_channel = channel(&node);
        async move { StreamsClient::with_interceptor(node_channel.await, GrpcSigner(key)) }
    };

    let unsigned = streams(None)
        .await
        .list_streams(pb::ListStreamsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(unsigned.code(), tonic::Code::Unauthenticated);
    assert_eq!(
        unsigned.metadata().get("x-sluice-error-type").unwrap(),
        "MissingAuthenticationTokenException"
    );
    let wrong = streams(Some(Key::new(ADMIN_ID, "a-wrong-secret-value")))
        .await
        .list_streams(pb::ListStreamsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), tonic::Code::Unauthenticated);
    assert_eq!(
        wrong.metadata().get("x-sluice-error-type").unwrap(),
        "InvalidSignatureException"
    );

    let bob = create_key(&node, "bob").await;
    let create = pb::CreateStreamRequest {
        stream_name: "grpc-auth".into(),
        shard_count: 1,
        ..Default::default()
    };
    let denied = streams(Some(bob.clone()))
        .await
        .create_stream(create.clone())
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    assert_eq!(
        denied.metadata().get("x-sluice-error-type").unwrap(),
        "AccessDeniedException"
    );
    assert!(
        denied.message().contains("kinesis:CreateStream"),
        "{}",
        denied.message()
    );

    attach(
        &node,
        &bob,
        "create",
        r#"{"Statement":{"Effect":"Allow","Action":["kinesis:CreateStream","sluice:CreateAccessKey"],"Resource":"*"}}"#,
    )
    .await;
    streams(Some(bob.clone()))
        .await
        .create_stream(create)
        .await
        .expect("allowed now");

    // A key allowed to create keys still cannot mint an admin key.
    let escalate = auth_client(&node, Some(bob.clone()))
        .await
        .create_access_key(pb::CreateAccessKeyRequest {
            user: "mallory".into(),
            admin: true,
        })
        .await
        .unwrap_err();
    assert_eq!(escalate.code(), tonic::Code::PermissionDenied);
    let listed = auth_client(&node, Some(bob))
        .await
        .list_access_keys(pb::ListAccessKeysRequest {})
        .await
        .unwrap_err();
    assert_eq!(listed.code(), tonic::Code::PermissionDenied);
}

#[tokio::test]
async fn keys_and_policies_survive_a_restart_and_deleted_keys_stop_working() {
    let dir = tempfile::tempdir().expect("temp dir");
    let carol = {
        let node = Node::start_in(dir.path(), auth_options()).await;
        let carol = create_key(&node, "carol").await;
        attach(
            &node,
            &carol,
            "list",
            r#"{"Statement":{"Effect":"Allow","Action":"kinesis:List*","Resource":"*"}}"#,
        )
        .await;
        node.stop().await;
        carol
    };
    let node = Node::start_in(dir.path(), auth_options()).await;
    let client = client_with_key(&node.endpoint(), &carol.id, &carol.secret);
    client
        .list_streams()
        .send()
        .await
        .expect("carol's key and policy survived");
    let keys = auth_client(&node, Some(admin()))
        .await
        .list_access_keys(pb::ListAccessKeysRequest {})
        .await
        .expect("list")
        .into_inner()
        .keys;
    let listed = keys
        .iter()
        .find(|k| k.access_key_id == carol.id)
        .expect("carol listed");
    assert_eq!(listed.user, "carol");
    assert_eq!(listed.policies, ["list"]);
    assert!(keys.iter().any(|k| k.access_key_id == ADMIN_ID && k.admin));

    auth_client(&node, Some(admin()))
        .await
        .delete_access_key(pb::DeleteAccessKeyRequest {
            access_key_id: carol.id.clone(),
        })
        .await
        .expect("delete");
    let error = client.list_streams().send().await.unwrap_err();
    assert_eq!(error.code(), Some("UnrecognizedClientException"));
    node.stop().await;
}
