//! What the app-facing API asks of the sync task: the commands on its bounded queue, the
//! requests that wait aside when that queue is full, and the batch loader's answers.

use tokio::sync::oneshot;

use crate::ids::SyncId;
use crate::vocab::QuotaExceeded;
use crate::wire::{ClientMessage, SubId};

/// Requests from the application to the sync task.
pub(crate) enum Command {
    Subscribe(SubId),
    Unsubscribe(SubId),
    Write(u64),
    /// Resize a window subscription (its new text is already recorded).
    Resize(SubId, u64),
    Fetch {
        table: String,
        keys: Vec<crate::value::Value>,
        reply: oneshot::Sender<FetchReply>,
    },
    /// A request without an answer to wait for (pins); dropped while offline, since
    /// whatever it concerns is re-sent on the next connection.
    Send(ClientMessage),
    /// A `Pin` whose answer is awaited: `Some` when a quota refused it. Dropped while
    /// offline, like [`Command::Send`].
    Pin(ClientMessage, oneshot::Sender<Option<QuotaExceeded>>),
    Rebind(std::net::UdpSocket, oneshot::Sender<std::io::Result<()>>),
}

/// An app request that may wait in [`super::ClientShared::deferred`] when the command queue is
/// full; ordered so that a subscription's requests keep their order by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Deferred {
    /// [`Command::Subscribe`].
    Subscribe(SubId),
    /// [`Command::Unsubscribe`].
    Unsubscribe(SubId),
    /// [`Command::Write`].
    Write(u64),
    /// [`Command::Resize`].
    Resize(SubId, u64),
}

impl Deferred {
    /// The command it stands for.
    pub(crate) fn command(self) -> Command {
        match self {
            Deferred::Subscribe(sub) => Command::Subscribe(sub),
            Deferred::Unsubscribe(sub) => Command::Unsubscribe(sub),
            Deferred::Write(seq) => Command::Write(seq),
            Deferred::Resize(sub, limit) => Command::Resize(sub, limit),
        }
    }
}

/// A batch-loader fetch answer: rows, or why there are none.
pub(crate) type FetchReply = Result<FetchAnswer, String>;

/// Rows fetched by key, consistent at `sync_id`, carrying `columns`.
#[derive(Debug, Default)]
pub(crate) struct FetchAnswer {
    pub sync_id: SyncId,
    pub rows: Vec<Vec<crate::value::Value>>,
    pub columns: Vec<String>,
}
