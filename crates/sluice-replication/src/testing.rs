//! Test support, not production code: the type config of the tests and a tiny in-memory
//! state machine, which openraft's storage suite needs beside the log store (it builds
//! both, and checks snapshot and apply behaviour through the state machine). It keeps
//! only the applied log id, the membership and the last snapshot; applying a normal
//! entry changes nothing else.

use futures_util::{Stream, TryStreamExt};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::type_config::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::{OptionalSend, StoredMembership};
use parking_lot::Mutex;
use std::io::{self, Cursor};
use std::sync::Arc;

openraft::declare_raft_types!(
    /// String commands and responses, u64 node ids and terms, the tokio runtime.
    pub(crate) TestConfig:
        AsyncRuntime = openraft_rt_tokio::TokioRuntime,
);

type Snap = SnapshotOf<TestConfig, Cursor<Vec<u8>>>;

#[derive(Default)]
struct Inner {
    applied: Option<LogIdOf<TestConfig>>,
    membership: StoredMembershipOf<TestConfig>,
    snapshot: Option<(SnapshotMetaOf<TestConfig>, Vec<u8>)>,
}

/// See the module docs.
#[derive(Clone, Default)]
pub(crate) struct MemStateMachine(Arc<Mutex<Inner>>);

impl RaftSnapshotBuilder<TestConfig> for MemStateMachine {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn build_snapshot(&mut self) -> Result<Snap, io::Error> {
        let mut inner = self.0.lock();
        let meta = SnapshotMetaOf::<TestConfig> {
            last_log_id: inner.applied,
            last_membership: inner.membership.clone(),
        };
        let mut data = Vec::new();
        ciborium::into_writer(&meta, &mut data).map_err(io::Error::other)?;
        inner.snapshot = Some((meta.clone(), data.clone()));
        Ok(Snap {
            meta,
            snapshot: Cursor::new(data),
        })
    }
}

impl RaftStateMachine<TestConfig> for MemStateMachine {
    type SnapshotData = Cursor<Vec<u8>>;
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<TestConfig>>, StoredMembershipOf<TestConfig>), io::Error> {
        let inner = self.0.lock();
        Ok((inner.applied, inner.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TestConfig>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            let log_id = entry.log_id();
            {
                let mut inner = self.0.lock();
                if let Some(membership) = entry.get_membership() {
                    inner.membership = StoredMembership::new(Some(log_id), membership);
                }
                inner.applied = Some(log_id);
            }
            if let Some(responder) = responder {
                responder.send(String::new());
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<TestConfig>,
        snapshot: Self::SnapshotData,
    ) -> Result<(), io::Error> {
        let data = snapshot.into_inner();
        let stored: SnapshotMetaOf<TestConfig> = ciborium::from_reader(&data[..])
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if stored != *meta {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "snapshot data does not match its meta",
            ));
        }
        let mut inner = self.0.lock();
        inner.applied = meta.last_log_id;
        inner.membership = meta.last_membership.clone();
        inner.snapshot = Some((meta.clone(), data));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snap>, io::Error> {
        let inner = self.0.lock();
        Ok(inner.snapshot.as_ref().map(|(meta, data)| Snap {
            meta: meta.clone(),
            snapshot: Cursor::new(data.clone()),
        }))
    }
}
