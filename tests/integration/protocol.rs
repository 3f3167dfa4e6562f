//! The wire: HTTP/1.1 and cleartext HTTP/2 on one port, JSON and CBOR bodies (CBOR
//! timestamps as tag 1 over epoch milliseconds, as the AWS Java SDK sends them).

use crate::create_active;
use ciborium::value::Value as Cbor;
use sluice_tests::{Node, raw_request_version};

const CBOR: &str = "application/x-amz-cbor-1.1";
const JSON: &str = "application/x-amz-json-1.1";

fn cbor(value: &Cbor) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).unwrap();
    out
}

fn map(pairs: Vec<(&str, Cbor)>) -> Cbor {
    Cbor::Map(
        pairs
            .into_iter()
            .map(|(k, v)| (Cbor::Text(k.to_owned()), v))
            .collect(),
    )
}

fn get<'a>(value: &'a Cbor, key: &str) -> &'a Cbor {
    match value {
        Cbor::Map(pairs) => pairs
            .iter()
            .find(|(k, _)| matches!(k, Cbor::Text(t) if t == key))
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("no {key} in {value:?}")),
        _ => panic!("not a map: {value:?}"),
    }
}

#[tokio::test]
async fn http2_prior_knowledge_and_http1_on_one_port() {
    let node = Node::start().await;
    for http2 in [false, true] {
        let response = raw_request_version(
            node.kinesis_addr,
            Some("Kinesis_20131202.ListStreams"),
            JSON,
            b"{}".to_vec(),
            http2,
        )
        .await;
        assert_eq!(response.status, 200, "http2={http2}");
        assert_eq!(response.content_type, JSON);
        assert_eq!(response.json()["StreamNames"], serde_json::json!([]));
    }
}

#[tokio::test]
async fn cbor_round_trip_with_millisecond_timestamps() {
    let node = Node::start().await;
    create_active(&node.client(), "cb", 1).await;
    let call = |op: &str, body: Cbor| {
        let addr = node.kinesis_addr;
        let target = format!("Kinesis_20131202.{op}");
        async move {
            let response = raw_request_version(addr, Some(&target), CBOR, cbor(&body), true).await;
            let value: Cbor = ciborium::from_reader(&response.body[..]).expect("cbor body");
            (response.status, response.content_type, value)
        }
    };
    let (status, content_type, put) = call(
        "PutRecord",
        map(vec![
            ("StreamName", Cbor::Text("cb".into())),
            ("PartitionKey", Cbor::Text("pk".into())),
            ("Data", Cbor::Bytes(vec![0, 159, 146, 150])),
        ]),
    )
    .await;
    assert_eq!(status, 200, "{put:?}");
    assert_eq!(content_type, CBOR);
    assert!(matches!(get(&put, "SequenceNumber"), Cbor::Text(s) if s.len() == 56));

    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let (status, _, iterator) = call(
        "GetShardIterator",
        map(vec![
            ("StreamName", Cbor::Text("cb".into())),
            ("ShardId", Cbor::Text("shardId-000000000000".into())),
            ("ShardIteratorType", Cbor::Text("AT_TIMESTAMP".into())),
            // One minute ago, in milliseconds: a reader that took this for seconds would
            // ask for a time far in the future and be refused.
            (
                "Timestamp",
                Cbor::Tag(1, Box::new(Cbor::Integer((now_ms - 60_000).into()))),
            ),
        ]),
    )
    .await;
    assert_eq!(status, 200, "{iterator:?}");
    let (status, _, records) = call(
        "GetRecords",
        map(vec![(
            "ShardIterator",
            get(&iterator, "ShardIterator").clone(),
        )]),
    )
    .await;
    assert_eq!(status, 200);
    let Cbor::Array(list) = get(&records, "Records") else {
        panic!("records")
    };
    assert_eq!(list.len(), 1);
    assert_eq!(get(&list[0], "Data"), &Cbor::Bytes(vec![0, 159, 146, 150]));
    let Cbor::Tag(1, arrival) = get(&list[0], "ApproximateArrivalTimestamp") else {
        panic!("arrival timestamp is tag 1")
    };
    let arrival_ms: i128 = match arrival.as_ref() {
        Cbor::Integer(i) => i128::from(*i),
        Cbor::Float(f) => *f as i128,
        other => panic!("arrival {other:?}"),
    };
    assert!(
        (arrival_ms - now_ms as i128).abs() < 60_000,
        "arrival in milliseconds: {arrival_ms}"
    );

    let (status, _, error) = call(
        "DescribeStream",
        map(vec![("StreamName", Cbor::Text("missing".into()))]),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        get(&error, "__type"),
        &Cbor::Text("ResourceNotFoundException".into())
    );
}

#[tokio::test]
async fn health_readiness_and_metrics_answer_on_the_admin_port_and_the_kinesis_port() {
    let node = sluice_tests::Node::start_with(sluice_tests::NodeOptions {
        admin: true,
        // Probes and scrapes need no signature even when authentication is on.
        config: sluice_server::RawConfig {
            auth: Some("sigv4".into()),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let admin = node.admin_addr.expect("admin listener");
    for addr in [admin, node.kinesis_addr] {
        assert_eq!(
            sluice_tests::http_get(addr, "/healthz").await,
            (200, "ok\n".to_owned())
        );
        assert_eq!(
            sluice_tests::http_get(addr, "/readyz").await,
            (200, "ready\n".to_owned())
        );
        let (status, metrics) = sluice_tests::http_get(addr, "/metrics").await;
        assert_eq!(status, 200);
        assert!(metrics.contains("# EOF"), "{metrics}");
    }
    // The Kinesis API itself still wants a signature.
    let unsigned = sluice_tests::raw_request(
        node.kinesis_addr,
        Some("Kinesis_20131202.ListStreams"),
        "application/x-amz-json-1.1",
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(unsigned.status, 400);
    node.stop().await;
    assert!(tokio::net::TcpStream::connect(admin).await.is_err());
}
