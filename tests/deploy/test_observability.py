"""The Grafana dashboard and the Prometheus alert rules match what a node exports.

Both files are checked for structure (every panel has a data source and queries; every
alert has an expression, a duration, a severity and a summary), then a real `sluice server`
(SLUICE_BIN) is started with an admin listener, driven through the Kinesis JSON API so that
the per-stream, per-shard, fan-out and gateway series exist, and scraped: every metric name
any expression uses must be one the node exports (a histogram's name as `_bucket`, `_sum`,
`_count`; a counter's as `_total`), or `up`, which Prometheus itself records.
"""

from __future__ import annotations

import http.client
import json
import pathlib
import re
import socket
import subprocess
import time
from typing import Any, Iterator

import pytest
import yaml
from conftest import REPO, sluice_binary

DASHBOARD = REPO / "deploy" / "grafana" / "sluice.json"
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yaml"
START_TIMEOUT_SECS = 30
TARGET = "Kinesis_20131202."
# Series Prometheus adds itself, not the node.
SCRAPE_SERIES = {"up"}

PROMQL_WORDS = {
    # aggregations and their modifiers
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
    "count_values", "group", "by", "without", "on", "ignoring", "group_left", "group_right",
    # operators and keywords
    "and", "or", "unless", "bool", "offset",
    # functions the files may use
    "rate", "irate", "increase", "delta", "idelta", "deriv", "histogram_quantile",
    "abs", "absent", "absent_over_time", "clamp_min", "clamp_max", "ceil", "floor", "round",
    "label_replace", "label_join", "max_over_time", "min_over_time", "avg_over_time",
    "sum_over_time", "count_over_time", "last_over_time", "changes", "resets", "time",
    "timestamp", "vector", "scalar", "sort", "sort_desc", "predict_linear",
}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects."""
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range and subquery selectors
    text = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text
    )  # grouping label lists
    names = set()
    for token in re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        if token in PROMQL_WORDS or re.fullmatch(r"e\d*|Inf|NaN", token):
            continue
        names.add(token)
    return names


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    assert set(document) == {"groups"}, "a plain rule file: only `groups`"
    rules = [rule for group in document["groups"] for rule in group["rules"]]
    assert rules
    return rules


def expressions() -> list[str]:
    exprs = [t["expr"] for p in panels(dashboard()) for t in p["targets"]]
    exprs += [rule["expr"] for rule in alert_rules()]
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            match = re.fullmatch(r"label_values\((\w+),\s*\w+\)", variable["definition"])
            assert match, variable["definition"]
            exprs.append(match.group(1))
    return exprs


def test_dashboard_structure() -> None:
    board = dashboard()
    assert board["schemaVersion"] == 39
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    stream = variables["stream"]
    assert stream["definition"] == "label_values(sluice_incoming_records_total, stream)"
    assert stream["datasource"]["uid"] == "${datasource}"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    titles = []
    for panel in panels(board):
        titles.append(panel["title"])
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], f"{panel['title']} has no queries"
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
    assert len(titles) == len(set(titles)), "panel titles are unique"
    all_exprs = " ".join(t["expr"] for p in panels(board) for t in p["targets"])
    assert "histogram_quantile(0.5," in all_exprs and "histogram_quantile(0.99," in all_exprs


def test_alert_structure() -> None:
    names = []
    for rule in alert_rules():
        assert rule.get("alert"), rule
        names.append(rule["alert"])
        assert rule.get("expr"), rule["alert"]
        assert re.fullmatch(r"\d+[smh]", str(rule.get("for", ""))), rule["alert"]
        assert rule.get("labels", {}).get("severity") in {"warning", "critical"}, rule["alert"]
        assert rule.get("annotations", {}).get("summary"), rule["alert"]
    assert len(names) == len(set(names)), "alert names are unique"


def test_metric_name_extraction() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, op) (rate(sluice_gateway_request_duration_seconds_bucket'
        '{status=~"5..", stream=~"$stream"}[$__rate_interval]))) / on(instance) up > 1e3'
    )
    assert metric_names(expr) == {"sluice_gateway_request_duration_seconds_bucket", "up"}


# ----- a real node -------------------------------------------------------------------------


def free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class Kinesis:
    """Unsigned Kinesis JSON calls (the node runs without authentication)."""

    def __init__(self, port: int):
        self.port = port

    def call(self, operation: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request(
                "POST",
                "/",
                body=json.dumps(body).encode(),
                headers={
                    "content-type": "application/x-amz-json-1.1",
                    "x-amz-target": TARGET + operation,
                    "authorization": "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240101/us-east-1/kinesis/aws4_request, SignedHeaders=host, Signature=00",
                },
            )
            response = connection.getresponse()
            if response.getheader("content-type") == "application/vnd.amazon.eventstream":
                # SubscribeToShard: the subscription started; hang up.
                return response.status, {}
            return response.status, json.loads(response.read() or b"{}")
        finally:
            connection.close()

    def ok(self, operation: str, body: dict[str, Any]) -> dict[str, Any]:
        status, answer = self.call(operation, body)
        assert status == 200, (operation, answer)
        return answer

    def answers(self) -> bool:
        try:
            self.call("ListStreams", {})
            return True
        except OSError:
            return False


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[set[str], str]:
    """(names the node exports, the scraped text) after a few calls of each kind."""
    root = tmp_path_factory.mktemp("observability")
    kinesis_port, grpc_port, admin_port = free_ports(3)
    log = open(root / "server.log", "wb")
    process = subprocess.Popen(
        [
            str(sluice_binary()), "server",
            "--data-dir", str(root / "data"),
            "--kinesis-addr", f"127.0.0.1:{kinesis_port}",
            "--grpc-addr", f"127.0.0.1:{grpc_port}",
            "--admin-addr", f"127.0.0.1:{admin_port}",
            "--fsync", "false",
        ],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        env={"PATH": "/usr/bin:/bin", "NO_COLOR": "1", "HOME": str(root)},
    )
    try:
        kinesis = Kinesis(kinesis_port)
        deadline = time.monotonic() + START_TIMEOUT_SECS
        while not kinesis.answers():
            assert process.poll() is None, (root / "server.log").read_text()
            assert time.monotonic() < deadline, "the node did not answer"
            time.sleep(0.05)
        text = drive_and_scrape(kinesis, admin_port)
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        log.close()
    return exposed_names(text), text


def drive_and_scrape(kinesis: Kinesis, admin_port: int) -> str:
    stream = "observed"
    kinesis.ok("CreateStream", {"StreamName": stream, "ShardCount": 1})
    deadline = time.monotonic() + 10
    while kinesis.ok("DescribeStreamSummary", {"StreamName": stream})[
        "StreamDescriptionSummary"
    ]["StreamStatus"] != "ACTIVE":
        assert time.monotonic() < deadline, "the stream did not become ACTIVE"
        time.sleep(0.05)
    kinesis.ok("EnableEnhancedMonitoring", {"StreamName": stream, "ShardLevelMetrics": ["ALL"]})
    kinesis.ok("PutRecord", {"StreamName": stream, "PartitionKey": "k", "Data": "dmFsdWU="})
    kinesis.ok(
        "PutRecords",
        {"StreamName": stream, "Records": [{"PartitionKey": f"k{i}", "Data": "dmFsdWU="} for i in range(3)]},
    )
    status, _ = kinesis.call("PutRecord", {"StreamName": "absent", "PartitionKey": "k", "Data": "eA=="})
    assert status == 400
    iterator = kinesis.ok(
        "GetShardIterator",
        {"StreamName": stream, "ShardId": "shardId-000000000000", "ShardIteratorType": "TRIM_HORIZON"},
    )["ShardIterator"]
    # More than five calls a second: the sixth is throttled (provisioned limits are on).
    statuses = [kinesis.call("GetRecords", {"ShardIterator": iterator})[0] for _ in range(8)]
    assert 200 in statuses and 400 in statuses, statuses
    arn = kinesis.ok("DescribeStreamSummary", {"StreamName": stream})["StreamDescriptionSummary"]["StreamARN"]
    consumer = kinesis.ok("RegisterStreamConsumer", {"StreamARN": arn, "ConsumerName": "app"})["Consumer"]
    deadline = time.monotonic() + 10
    while kinesis.ok("DescribeStreamConsumer", {"ConsumerARN": consumer["ConsumerARN"]})[
        "ConsumerDescription"
    ]["ConsumerStatus"] != "ACTIVE":
        assert time.monotonic() < deadline, "the consumer did not become ACTIVE"
        time.sleep(0.05)
    subscribe = {
        "ConsumerARN": consumer["ConsumerARN"],
        "ShardId": "shardId-000000000000",
        "StartingPosition": {"Type": "TRIM_HORIZON"},
    }
    assert kinesis.call("SubscribeToShard", subscribe)[0] == 200
    assert kinesis.call("SubscribeToShard", subscribe)[0] == 400  # within five seconds

    # The per-group Raft series appear at the next refresh of the Raft gauges (every 5 s).
    deadline = time.monotonic() + 15
    while True:
        text = scrape(admin_port)
        if 'sluice_raft_shard_term{stream="observed",shard="shardId-000000000000"}' in text:
            return text
        assert time.monotonic() < deadline, f"no per-group raft series:\n{text}"
        time.sleep(0.2)


def scrape(admin_port: int) -> str:
    connection = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=10)
    try:
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        text = response.read().decode()
        assert response.status == 200, text
    finally:
        connection.close()
    return text


def exposed_names(text: str) -> set[str]:
    """Sample names, and the names each declared family's samples take (prometheus-client
    declares only families that have samples: the calls above must reach every one)."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split(" ", 3)
            names |= {
                "counter": {f"{family}_total"},
                "gauge": {family},
                "histogram": {f"{family}_bucket", f"{family}_sum", f"{family}_count"},
            }.get(kind, {family})
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def test_every_metric_the_files_use_is_exported(exported: tuple[set[str], str]) -> None:
    names, text = exported
    used = set().union(*(metric_names(expr) for expr in expressions()))
    assert used, "the files use metrics"
    missing = sorted(used - names - SCRAPE_SERIES)
    assert not missing, f"not exported by the node: {missing}\n{text}"


def test_the_calls_moved_the_cloudwatch_named_series(exported: tuple[set[str], str]) -> None:
    _, text = exported
    shard = 'stream="observed",shard="shardId-000000000000"'
    for sample in [
        'sluice_put_record_success_total{stream="observed"} 1',
        'sluice_put_records_success_total{stream="observed"} 1',
        'sluice_incoming_records_total{stream="observed"} 4',
        f"sluice_shard_incoming_records_total{{{shard}}} 4",
        'sluice_subscribe_to_shard_rate_exceeded_total{stream="observed",consumer="app"} 1',
        'sluice_gateway_request_duration_seconds_count{op="PutRecord",status="400"} 1',
    ]:
        assert f"\n{sample}\n" in text, f"{sample} missing from\n{text}"
    for series in [
        'sluice_get_records_iterator_age_milliseconds{stream="observed"}',
        f"sluice_shard_iterator_age_milliseconds{{{shard}}}",
        f"sluice_shard_read_provisioned_throughput_exceeded_total{{{shard}}}",
        'sluice_subscribe_to_shard_event_millis_behind_latest{stream="observed",consumer="app"}',
        'sluice_segments{stream="observed"}',
        'sluice_disk_bytes{stream="observed"}',
    ]:
        assert f"\n{series} " in text, f"{series} missing from\n{text}"
