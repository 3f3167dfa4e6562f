//! A cluster of real `sluice server` processes on one machine, for fault tests.
//!
//! Node `i` (node id `i + 1`) listens for Kinesis, gRPC and admin requests on its own loopback
//! address `127.0.0.{i+1}` (all of 127/8 is loopback on Linux), on free ports, with a data
//! directory and a log file of its own in one temporary directory. A [`NodeProxy`]
//! stands in front of each node's gRPC listener and the node advertises the proxy's address,
//! so every peer connection to a node passes through its proxy; nodes bind their outgoing
//! peer connections to their own address, so the proxies tell the peers apart and can cut
//! any link ([`Cluster::partition`], [`Cluster::isolate`], [`Cluster::heal`]). Processes can be killed with SIGKILL, stopped
//! with SIGTERM, paused with SIGSTOP and restarted on the same directory, ports and flags.
//!
//! Node 0 bootstraps the cluster; every other node starts with `--join` and node 0's proxy
//! address. A node counts as started once `GET /readyz` on its admin address answers 200;
//! a node that exits or is not ready in time fails the test with the tail of every log.
//! Each node's standard output and error go to `<dir>/log` (see [`NodeInfo::log_path`]).
//!
//! The binary is [`crate::sluice_binary`] (`SLUICE_BIN`, or `target/<profile>/sluice`: build
//! it first with `cargo build -p sluice`). Dropping the cluster kills every process (and,
//! while panicking, prints the tail of every log first; with `SLUICE_KEEP_CLUSTER_DIR` set
//! in the environment, it also keeps the directory).
//!
//! ```no_run
//! use sluice_tests::cluster::{Cluster, ClusterOptions};
//!
//! # async fn example() {
//! let mut cluster = Cluster::start(ClusterOptions::default()).await; // 3 nodes
//! let client = cluster.client(0);
//! // ... create a stream and start writers on `client` ...
//! cluster.isolate(2); // node 2 can reach no peer and no peer can reach it
//! cluster.heal();
//! cluster.kill9(1);
//! cluster.restart(1).await; // same directory, ports and flags; waits for /readyz
//! cluster.pause(0); // SIGSTOP
//! cluster.resume(0); // SIGCONT
//! let added = cluster.add_node().await; // node 3 joins the running members
//! assert_eq!(cluster.node(added).node_id, 4);
//! let status = cluster.status(0).await.unwrap(); // members, placement, moves, as node 0 sees them
//! # }
//! ```

use crate::PortReservation;
use crate::faultproxy::NodeProxy;
use sluice_proto::v1 as pb;
use sluice_proto::v1::node_client::NodeClient;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

/// How to start a cluster.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Nodes started by [`Cluster::start`] (1 to 253).
    pub nodes: usize,
    /// `--replication-factor`; the server's default (3) when `None`.
    pub replication_factor: Option<u32>,
    /// `--fsync`.
    pub fsync: bool,
    /// `--throughput-limits` (AWS's per-shard limits); off unless a test is about them.
    pub throughput_limits: bool,
    /// `SLUICE_LOG_LEVEL` of every node, e.g. `warn` or `info,sluice=debug`.
    pub log_level: String,
    /// Further arguments for every node, after the harness's own.
    pub extra_args: Vec<String>,
    /// How long a node may take to answer `/readyz` with 200 after it is spawned.
    pub ready_timeout: Duration,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            nodes: 3,
            replication_factor: None,
            fsync: true,
            throughput_limits: false,
            log_level: "info".to_owned(),
            extra_args: Vec::new(),
            ready_timeout: Duration::from_secs(60),
        }
    }
}

/// Where one node of the cluster is.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    /// The node's index in the cluster (0 for the first).
    pub index: usize,
    /// `--node-id`: `index + 1`.
    pub node_id: u64,
    /// `127.0.0.{index + 1}`: every listener of the node, and the source of its peer
    /// connections.
    pub ip: IpAddr,
    pub kinesis_addr: SocketAddr,
    /// The node's own gRPC listener.
    pub grpc_addr: SocketAddr,
    /// The proxy in front of `grpc_addr`: what the node advertises and its peers dial.
    pub advertised_grpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub data_dir: PathBuf,
    /// The node's standard output and error, across restarts.
    pub log_path: PathBuf,
}

impl NodeInfo {
    /// The Kinesis endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.kinesis_addr)
    }
}

/// One node: where it is, its proxy, and its process while one runs.
struct Member {
    info: NodeInfo,
    proxy: NodeProxy,
    /// `--join` addresses, the same on every (re)start (empty for the bootstrap node).
    join: Vec<SocketAddr>,
    child: Option<Child>,
    paused: bool,
}

/// A running cluster of `sluice server` processes; see the module documentation.
pub struct Cluster {
    options: ClusterOptions,
    binary: PathBuf,
    root: Option<tempfile::TempDir>,
    members: Vec<Member>,
    /// Set once a failure has printed the logs, so that the drop does not print them again.
    logs_dumped: bool,
}

/// Lines of each log printed by [`Cluster::dump_logs`].
const LOG_TAIL_LINES: usize = 60;
/// How long [`Cluster::stop`] waits after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How often process state and readiness are polled.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How long [`Cluster::status`] waits for an answer.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

impl Cluster {
    /// Starts `options.nodes` nodes: node 0 first (it bootstraps), then the others joining it;
    /// returns once every node is ready.
    pub async fn start(options: ClusterOptions) -> Cluster {
        assert!(
            (1..=253).contains(&options.nodes),
            "a cluster has 1 to 253 nodes, not {}",
            options.nodes
        );
        let binary = crate::sluice_binary();
        assert!(
            binary.exists(),
            "{} is missing: build it with `cargo build -p sluice`",
            binary.display()
        );
        let root = tempfile::Builder::new()
            .prefix("sluice-cluster-")
            .tempdir()
            .expect("create the cluster directory");
        let mut cluster = Cluster {
            options,
            binary,
            root: Some(root),
            members: Vec::new(),
            logs_dumped: false,
        };
        cluster.add_member(Vec::new()).await;
        cluster.spawn(0);
        cluster.wait_ready(0).await;
        let bootstrap = vec![cluster.members[0].info.advertised_grpc_addr];
        for _ in 1..cluster.options.nodes {
            let index = cluster.add_member(bootstrap.clone()).await;
            cluster.spawn(index);
        }
        for index in 1..cluster.members.len() {
            cluster.wait_ready(index).await;
        }
        cluster
    }

    /// Starts one more node, joining every member that runs and is not paused; returns its
    /// index once it is ready.
    pub async fn add_node(&mut self) -> usize {
        let mut join = Vec::new();
        for index in 0..self.members.len() {
            if self.is_running(index) && !self.members[index].paused {
                join.push(self.members[index].info.advertised_grpc_addr);
            }
        }
        assert!(!join.is_empty(), "no running member to join");
        let index = self.add_member(join).await;
        self.spawn(index);
        self.wait_ready(index).await;
        index
    }

    /// The number of nodes, running or not.
    pub fn node_count(&self) -> usize {
        self.members.len()
    }

    pub fn node(&self, index: usize) -> &NodeInfo {
        &self.member(index).info
    }

    pub fn nodes(&self) -> impl Iterator<Item = &NodeInfo> {
        self.members.iter().map(|member| &member.info)
    }

    /// An AWS SDK client for the node's Kinesis endpoint (retries off, as in every suite).
    pub fn client(&self, index: usize) -> aws_sdk_kinesis::Client {
        crate::client_for(&self.node(index).endpoint())
    }

    /// The node's process id while a process is spawned for it.
    pub fn pid(&self, index: usize) -> Option<u32> {
        self.member(index).child.as_ref().map(Child::id)
    }

    /// Whether the node's process is alive (paused counts as alive).
    pub fn is_running(&mut self, index: usize) -> bool {
        match self.members[index].child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Whether the node is paused by [`Cluster::pause`].
    pub fn is_paused(&self, index: usize) -> bool {
        self.member(index).paused
    }

    /// SIGKILL: no shutdown path runs. Returns once the process is reaped.
    pub fn kill9(&mut self, index: usize) {
        let member = &mut self.members[index];
        let mut child = member
            .child
            .take()
            .unwrap_or_else(|| panic!("node {} is not running", member.info.node_id));
        member.paused = false;
        let _ = child.kill();
        let _ = child.wait();
    }

    /// SIGTERM (after SIGCONT if paused), then waits for the process to exit; SIGKILL after
    /// 10 s. Returns how it exited.
    pub async fn stop(&mut self, index: usize) -> ExitStatus {
        let member = &mut self.members[index];
        let node_id = member.info.node_id;
        let mut child = member
            .child
            .take()
            .unwrap_or_else(|| panic!("node {node_id} is not running"));
        if std::mem::take(&mut member.paused) {
            let _ = send_signal(&child, rustix::process::Signal::CONT);
        }
        let _ = send_signal(&child, rustix::process::Signal::TERM);
        let deadline = tokio::time::Instant::now() + STOP_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            if tokio::time::Instant::now() >= deadline {
                let _ = child.kill();
                return child.wait().expect("wait for a killed node");
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Starts the node's process again (after [`Cluster::kill9`] or [`Cluster::stop`]) with
    /// the same directory, ports and flags, and waits until it is ready.
    pub async fn restart(&mut self, index: usize) {
        self.restart_without_waiting(index);
        self.wait_ready(index).await;
    }

    /// Like [`Cluster::restart`], without waiting for readiness (a node that cannot reach a
    /// quorum may never become ready).
    pub fn restart_without_waiting(&mut self, index: usize) {
        assert!(
            !self.is_running(index),
            "node {} is still running: kill9 or stop it first",
            self.node(index).node_id
        );
        self.spawn(index);
    }

    /// Polls `GET /readyz` on the node's admin address until it answers 200; panics with
    /// every log's tail when the process exits or the ready timeout passes.
    pub async fn wait_ready(&mut self, index: usize) {
        let admin_addr = self.node(index).admin_addr;
        let node_id = self.node(index).node_id;
        let deadline = tokio::time::Instant::now() + self.options.ready_timeout;
        loop {
            let exited = match self.members[index].child.as_mut() {
                None => Some("is not running".to_owned()),
                Some(child) => match child.try_wait() {
                    Ok(Some(status)) => Some(format!("exited ({status})")),
                    Ok(None) | Err(_) => None,
                },
            };
            if let Some(exited) = exited {
                self.fail(&format!("node {node_id} {exited} before it was ready"));
            }
            if is_ready(admin_addr).await {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                self.fail(&format!(
                    "node {node_id} was not ready within {:?} (GET http://{admin_addr}/readyz)",
                    self.options.ready_timeout
                ));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// SIGSTOP: the process stays alive but does nothing; its connections stay open.
    pub fn pause(&mut self, index: usize) {
        let member = &mut self.members[index];
        let child = member
            .child
            .as_ref()
            .unwrap_or_else(|| panic!("node {} is not running", member.info.node_id));
        send_signal(child, rustix::process::Signal::STOP).expect("send SIGSTOP");
        member.paused = true;
    }

    /// SIGCONT after [`Cluster::pause`].
    pub fn resume(&mut self, index: usize) {
        let member = &mut self.members[index];
        let child = member
            .child
            .as_ref()
            .unwrap_or_else(|| panic!("node {} is not running", member.info.node_id));
        send_signal(child, rustix::process::Signal::CONT).expect("send SIGCONT");
        member.paused = false;
    }

    /// Cuts the link between nodes `a` and `b` in both directions: their connections to each
    /// other are reset and new ones refused until [`Cluster::heal`] or
    /// [`Cluster::reconnect`].
    pub fn partition(&self, a: usize, b: usize) {
        self.block_connections(a, b);
        self.block_connections(b, a);
    }

    /// Cuts every link between a node of `side_a` and a node of `side_b`.
    pub fn partition_groups(&self, side_a: &[usize], side_b: &[usize]) {
        for &a in side_a {
            for &b in side_b {
                self.partition(a, b);
            }
        }
    }

    /// Cuts every link between node `index` and the other nodes (the nodes that exist now; a
    /// node added later can reach it).
    pub fn isolate(&self, index: usize) {
        let others: Vec<usize> = (0..self.members.len())
            .filter(|&other| other != index)
            .collect();
        self.partition_groups(&[index], &others);
    }

    /// Cuts only the connections that node `from` opens to node `to` (its requests to `to`);
    /// the connections `to` opens to `from` keep working, replies included.
    pub fn block_connections(&self, from: usize, to: usize) {
        assert_ne!(from, to, "a node's link to itself cannot be cut");
        let source = self.node(from).ip;
        self.member(to).proxy.block_from(source);
    }

    /// Restores the link between `a` and `b` (both directions).
    pub fn reconnect(&self, a: usize, b: usize) {
        self.member(b).proxy.unblock_from(self.node(a).ip);
        self.member(a).proxy.unblock_from(self.node(b).ip);
    }

    /// Restores every link.
    pub fn heal(&self) {
        for member in &self.members {
            member.proxy.heal();
        }
    }

    /// The cluster as node `index` sees it: `sluice.v1.Node/GetClusterStatus` on the node's
    /// own gRPC listener (past its proxy), within five seconds.
    pub async fn status(&self, index: usize) -> Result<pb::GetClusterStatusResponse, String> {
        let endpoint = format!("http://{}", self.node(index).grpc_addr);
        let call = async move {
            let mut client = NodeClient::connect(endpoint)
                .await
                .map_err(|error| format!("connect: {error}"))?;
            client
                .get_cluster_status(pb::GetClusterStatusRequest {})
                .await
                .map(tonic::Response::into_inner)
                .map_err(|status| format!("GetClusterStatus: {status}"))
        };
        tokio::time::timeout(STATUS_TIMEOUT, call)
            .await
            .map_err(|_| format!("GetClusterStatus timed out after {STATUS_TIMEOUT:?}"))?
    }

    /// Waits (up to 30 s) until node `asked` knows a leader of `shard` of `stream`, and
    /// returns the leading node's index.
    pub async fn leader_of(&self, asked: usize, stream: &str, shard: &str) -> usize {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let leader = self.status(asked).await.ok().and_then(|status| {
                status
                    .shards
                    .iter()
                    .find(|s| s.stream_name == stream && s.shard_id == shard)
                    .map(|s| s.leader)
                    .filter(|leader| *leader != 0)
            });
            if let Some(leader) = leader {
                return (0..self.node_count())
                    .find(|i| self.node(*i).node_id == leader)
                    .expect("the leader is a node of the cluster");
            }
            if tokio::time::Instant::now() >= deadline {
                self.dump_logs();
                panic!("no leader of {stream}/{shard} known to node {asked}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Prints the last lines of every node's log to standard error (the test's output).
    pub fn dump_logs(&self) {
        for member in &self.members {
            let info = &member.info;
            let state = match (&member.child, member.paused) {
                (Some(child), true) => format!("pid {}, paused", child.id()),
                (Some(child), false) => format!("pid {}", child.id()),
                (None, _) => "not running".to_owned(),
            };
            eprintln!(
                "----- node {} ({}, {state}): last {LOG_TAIL_LINES} lines of {} -----",
                info.node_id,
                info.ip,
                info.log_path.display()
            );
            match std::fs::read(&info.log_path) {
                Ok(bytes) => {
                    let text = String::from_utf8_lossy(&bytes);
                    let lines: Vec<&str> = text.lines().collect();
                    for line in &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..] {
                        eprintln!("{line}");
                    }
                }
                Err(error) => eprintln!("(cannot read the log: {error})"),
            }
        }
    }

    /// Prints every log's tail, then panics with `message`.
    #[track_caller]
    fn fail(&mut self, message: &str) -> ! {
        self.dump_logs();
        self.logs_dumped = true;
        panic!("{message}");
    }

    fn member(&self, index: usize) -> &Member {
        self.members.get(index).unwrap_or_else(|| {
            panic!(
                "no node {index}: the cluster has {} nodes",
                self.members.len()
            )
        })
    }

    /// Creates the next node's directory, picks its ports and starts its proxy.
    async fn add_member(&mut self, join: Vec<SocketAddr>) -> usize {
        let index = self.members.len();
        let node_id = index as u64 + 1;
        let last_octet = u8::try_from(index + 1).expect("at most 253 nodes");
        assert!(last_octet < 255, "at most 253 nodes");
        let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, last_octet));
        let root = self.root.as_ref().expect("cluster directory").path();
        let dir = root.join(format!("node-{node_id}"));
        let data_dir = dir.join("data");
        std::fs::create_dir_all(&data_dir).expect("create the node's data directory");
        // The node's ports stay bound while the proxy picks its own, so all four differ.
        let ports = PortReservation::new(ip);
        let [grpc_addr, kinesis_addr, admin_addr] = ports.addrs();
        let proxy = NodeProxy::start(SocketAddr::new(ip, 0), grpc_addr)
            .await
            .expect("start the node's proxy");
        drop(ports);
        let info = NodeInfo {
            index,
            node_id,
            ip,
            kinesis_addr,
            grpc_addr,
            advertised_grpc_addr: proxy.addr(),
            admin_addr,
            data_dir,
            log_path: dir.join("log"),
        };
        self.members.push(Member {
            info,
            proxy,
            join,
            child: None,
            paused: false,
        });
        index
    }

    /// The `sluice server` arguments of a node: the same on every (re)start.
    fn server_args(&self, member: &Member) -> Vec<String> {
        let info = &member.info;
        let options = &self.options;
        let mut args: Vec<String> = vec![
            "server".into(),
            "--node-id".into(),
            info.node_id.to_string(),
            "--data-dir".into(),
            info.data_dir.display().to_string(),
            "--kinesis-addr".into(),
            info.kinesis_addr.to_string(),
            "--grpc-addr".into(),
            info.grpc_addr.to_string(),
            "--admin-addr".into(),
            info.admin_addr.to_string(),
            "--advertise-grpc-addr".into(),
            info.advertised_grpc_addr.to_string(),
            "--advertise-kinesis-addr".into(),
            info.kinesis_addr.to_string(),
            "--fsync".into(),
            options.fsync.to_string(),
            "--throughput-limits".into(),
            options.throughput_limits.to_string(),
        ];
        if let Some(factor) = options.replication_factor {
            args.extend(["--replication-factor".into(), factor.to_string()]);
        }
        if !member.join.is_empty() {
            let join: Vec<String> = member.join.iter().map(SocketAddr::to_string).collect();
            args.extend(["--join".into(), join.join(",")]);
        }
        args.extend(options.extra_args.iter().cloned());
        args
    }

    /// Spawns the node's process, its output appended to its log after a marker line.
    fn spawn(&mut self, index: usize) {
        let args = self.server_args(&self.members[index]);
        let member = &mut self.members[index];
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&member.info.log_path)
            .expect("open the node's log");
        writeln!(
            log,
            "===== sluice-tests: starting node {}: {} {}",
            member.info.node_id,
            self.binary.display(),
            args.join(" ")
        )
        .expect("write the node's log");
        let stderr: File = log.try_clone().expect("clone the log handle");
        let child = Command::new(&self.binary)
            .args(&args)
            .env("SLUICE_LOG_LEVEL", &self.options.log_level)
            // Plain text in the log file.
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|error| panic!("spawn {}: {error}", self.binary.display()));
        member.child = Some(child);
        member.paused = false;
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if !self.logs_dumped {
                self.dump_logs();
            }
            if std::env::var_os("SLUICE_KEEP_CLUSTER_DIR").is_some()
                && let Some(root) = self.root.take()
            {
                eprintln!("kept the cluster directory {}", root.keep().display());
            }
        }
        for member in &mut self.members {
            if let Some(mut child) = member.child.take() {
                if member.paused {
                    let _ = send_signal(&child, rustix::process::Signal::CONT);
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn send_signal(child: &Child, signal: rustix::process::Signal) -> std::io::Result<()> {
    rustix::process::kill_process(rustix::process::Pid::from_child(child), signal)?;
    Ok(())
}

/// Whether `GET /readyz` answers 200 within two seconds (a paused node never answers).
async fn is_ready(admin_addr: SocketAddr) -> bool {
    use http_body_util::Full;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    let Ok(request) = hyper::Request::get(format!("http://{admin_addr}/readyz"))
        .body(Full::new(bytes::Bytes::new()))
    else {
        return false;
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), client.request(request)).await,
        Ok(Ok(response)) if response.status() == hyper::StatusCode::OK
    )
}
