//! Owns the encoding of a store snapshot into a stream of chunks, as etcd's
//! `Maintenance.Snapshot` sends them (etcd server/etcdserver/api/v3rpc/maintenance.go
//! `Snapshot`): the body in chunks of 32 KiB with `remaining_bytes` counting down to 0, then the
//! 32-byte sha256 of the body as the last chunk. A thread of its own encodes, into a channel of
//! a few chunks, so memory stays bounded whatever the store's size, a slow client slows only
//! that thread, and the store actor (which only took the point-in-time view) goes on with
//! writes and watchers. The gRPC service and the HTTP gateway both stream from here.

use std::io;

use tokio::sync::mpsc;
use watchkv::snapshot::SnapshotHeader;
use watchkv::{Error, Result, StoreSnapshot};

/// Bytes of snapshot per chunk (etcd `snapshotSendBufferSize`).
pub const CHUNK_BYTES: usize = 32 * 1024;
/// Chunks encoded ahead of the client.
const CHANNEL_CHUNKS: usize = 4;

/// One message of a snapshot stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotChunk {
    /// Body bytes still to come after this chunk (0 on the last body chunk and on the
    /// checksum).
    pub remaining_bytes: u64,
    /// The bytes.
    pub blob: Vec<u8>,
}

/// The chunks of a snapshot as they are encoded. Dropping them stops the encoding thread at
/// its next chunk. When the store lets go of its database to reopen it after a storage failure
/// ([`crate::Handle::storage_releases`]), the stream ends with an error: the thread drops its
/// view, whose handle on the database would otherwise keep the store from reopening for as
/// long as a client that stopped reading stays connected.
pub struct SnapshotChunks {
    chunks: Option<mpsc::Receiver<Result<SnapshotChunk>>>,
    releases: tokio_stream::wrappers::WatchStream<u64>,
}

impl futures::Stream for SnapshotChunks {
    type Item = Result<SnapshotChunk>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        let this = &mut *self;
        let Some(chunks) = this.chunks.as_mut() else { return Poll::Ready(None) };
        if let Poll::Ready(Some(_)) = futures::Stream::poll_next(std::pin::Pin::new(&mut this.releases), cx) {
            this.chunks = None;
            tracing::warn!("snapshot stream ended: the store is reopening its database after a storage failure");
            return Poll::Ready(Some(Err(Error::Poisoned)));
        }
        chunks.poll_recv(cx)
    }
}

/// Starts encoding `snapshot` on a thread of its own; returns the revisions it is at and the
/// chunks, which end early when `releases` changes (see [`SnapshotChunks`]). An error ends the
/// chunks (and the stream: a client never takes a cut-off snapshot for a whole one).
///
/// # Errors
/// `Io` if the thread cannot be started.
pub fn spawn(
    snapshot: StoreSnapshot,
    releases: tokio::sync::watch::Receiver<u64>,
) -> Result<(SnapshotHeader, SnapshotChunks)> {
    let header = snapshot.header();
    let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
    let mut thread_releases = releases.clone();
    std::thread::Builder::new().name("watchkv-snapshot".into()).spawn(move || {
        let started = std::time::Instant::now();
        match encode(&snapshot, &tx, &mut thread_releases) {
            Ok(total) => tracing::info!(
                revision = header.revision,
                total_bytes = total,
                took = ?started.elapsed(),
                "sent a snapshot"
            ),
            Err(EncodeError::ClientGone) => {
                tracing::info!(revision = header.revision, "snapshot stream closed by the client");
            }
            Err(EncodeError::Failed(e)) => {
                tracing::error!(revision = header.revision, error = %e, "snapshot failed");
                let _ = tx.blocking_send(Err(e));
            }
        }
    })?;
    let releases = tokio_stream::wrappers::WatchStream::from_changes(releases);
    Ok((header, SnapshotChunks { chunks: Some(rx), releases }))
}

enum EncodeError {
    ClientGone,
    Failed(Error),
}

/// Sends the body and the checksum; returns the body's length.
fn encode(
    snapshot: &StoreSnapshot,
    tx: &mpsc::Sender<Result<SnapshotChunk>>,
    releases: &mut tokio::sync::watch::Receiver<u64>,
) -> Result<u64, EncodeError> {
    let total = snapshot.body_len().map_err(EncodeError::Failed)?;
    let sink = ChunkSink { tx, releases, buf: Vec::with_capacity(CHUNK_BYTES), sent: 0, total, gone: false };
    let (mut sink, written, digest) = match snapshot.write_body(sink) {
        Ok(done) => done,
        Err(Error::Io(e)) if e.kind() == io::ErrorKind::BrokenPipe => return Err(EncodeError::ClientGone),
        Err(e) => return Err(EncodeError::Failed(e)),
    };
    sink.send_buffered().map_err(|_| EncodeError::ClientGone)?;
    if written != total || sink.sent != total {
        // The two passes read one point-in-time view; if they disagree the counts sent were
        // wrong, and the client must not keep the file.
        return Err(EncodeError::Failed(Error::Internal(format!(
            "snapshot body is {written} bytes, {total} were announced"
        ))));
    }
    let checksum = Ok(SnapshotChunk { remaining_bytes: 0, blob: digest.to_vec() });
    if !send_unless_released(tx, sink.releases, checksum) {
        return Err(EncodeError::ClientGone);
    }
    Ok(total)
}

/// Sends `item`, waiting while the channel is full; `false` if the client went away, or if
/// the store lets go of its database meanwhile (this thread's view must go with it, even when
/// the client has stopped reading and nothing would ever make room: [`SnapshotChunks`]).
fn send_unless_released(
    tx: &mpsc::Sender<Result<SnapshotChunk>>,
    releases: &mut tokio::sync::watch::Receiver<u64>,
    item: Result<SnapshotChunk>,
) -> bool {
    futures::executor::block_on(async {
        tokio::select! {
            biased;
            _ = releases.changed() => false,
            sent = tx.send(item) => sent.is_ok(),
        }
    })
}

/// Cuts what the encoder writes into chunks and sends them, waiting while the channel is full.
struct ChunkSink<'a> {
    tx: &'a mpsc::Sender<Result<SnapshotChunk>>,
    releases: &'a mut tokio::sync::watch::Receiver<u64>,
    buf: Vec<u8>,
    sent: u64,
    total: u64,
    gone: bool,
}

impl ChunkSink<'_> {
    fn send_buffered(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let blob = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK_BYTES));
        self.sent += blob.len() as u64;
        let chunk = SnapshotChunk { remaining_bytes: self.total.saturating_sub(self.sent), blob };
        if !send_unless_released(self.tx, self.releases, Ok(chunk)) {
            self.gone = true;
        }
        if self.gone {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "the snapshot's client went away"));
        }
        Ok(())
    }
}

impl io::Write for ChunkSink<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK_BYTES - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK_BYTES {
            self.send_buffered()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
