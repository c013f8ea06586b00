//! Rebuilding a session on a new backend: its session state first, then the
//! open unit, with every reply the client already received checked against
//! its digest.
//!
//! Requests are written while replies are read (the server may block
//! writing a large reply before it reads the next request), replies to
//! requests the client already has are swallowed, and the reply to the
//! request in flight is checked up to the byte where the old server stopped;
//! from there on it is the client's again.

use std::collections::HashMap;

use crate::stream::Stream;
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use understudy_protocol::backend::{tag, ErrorFields, ParameterStatus};
use understudy_protocol::frame::HEADER_LEN;
use understudy_protocol::scan::Piece;
use understudy_protocol::{Frame, DEFAULT_MAX_MESSAGE_LEN};

use crate::journal::session::Snapshot;
use crate::journal::{is_asynchronous, Journal, Reply};

/// Why a replay did not reproduce the session.
#[derive(Debug)]
pub enum ReplayError {
    /// The connection failed; another server may do better.
    Io(std::io::Error),
    /// The new server refused to restore the session state.
    Restore(ErrorFields),
    /// The new server sent invalid protocol.
    Protocol(String),
    /// The replayed unit produced different replies: the transaction sees a
    /// different history on the new server.
    Diverged(String),
    /// The transaction committed on the lost server, but results the client
    /// waits for were lost with it (why).
    ResultsLost(String),
}

impl std::fmt::Display for ReplayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplayError::Io(e) => write!(f, "connection to the new server failed: {e}"),
            ReplayError::Restore(e) => write!(f, "the new server refused the session state: {e}"),
            ReplayError::Protocol(e) => write!(f, "the new server sent an invalid message: {e}"),
            ReplayError::Diverged(why) => write!(f, "{why}"),
            ReplayError::ResultsLost(why) => {
                write!(
                    f,
                    "the transaction committed, but its results were lost: {why}"
                )
            }
        }
    }
}

/// Sends the session state (named prepared statements, settings, listens)
/// and waits until the server has applied all of it. Returns the
/// ParameterStatus values the server reported meanwhile.
pub async fn restore_session(
    stream: &mut Stream,
    rbuf: &mut BytesMut,
    journal: &Journal,
) -> Result<HashMap<String, String>, ReplayError> {
    restore_snapshot(stream, rbuf, &journal.session.snapshot()).await
}

/// Sends a session-state snapshot and waits until the server applied it.
pub async fn restore_snapshot(
    stream: &mut Stream,
    rbuf: &mut BytesMut,
    snapshot: &Snapshot,
) -> Result<HashMap<String, String>, ReplayError> {
    let out = &snapshot.messages;
    let mut awaiting_ready = snapshot.readies;
    let mut parameters = HashMap::new();
    if awaiting_ready == 0 {
        return Ok(parameters);
    }
    stream.write_all(out).await.map_err(ReplayError::Io)?;
    let mut error = None;
    while awaiting_ready > 0 {
        let frame = read_frame(stream, rbuf).await?;
        match frame.tag {
            tag::READY_FOR_QUERY => awaiting_ready -= 1,
            tag::ERROR_RESPONSE => {
                let fields = ErrorFields::parse(&frame.body)
                    .map_err(|e| ReplayError::Protocol(e.to_string()))?;
                error.get_or_insert(fields);
            }
            tag::PARAMETER_STATUS => {
                if let Ok(p) = ParameterStatus::parse(&frame.body) {
                    parameters.insert(p.name, p.value);
                }
            }
            _ => {}
        }
    }
    match error {
        Some(fields) => Err(ReplayError::Restore(fields)),
        None => Ok(parameters),
    }
}

/// The outcome of replaying the open unit.
pub struct Replayed {
    /// Bytes of the in-flight reply the client has not seen yet and that
    /// were already read; they go to the client first.
    pub tail: Bytes,
    /// ParameterStatus values reported during the replay.
    pub parameters: HashMap<String, String>,
}

/// Replays the journal's open unit on `stream` and verifies it against
/// `old`, the replies the client received from the lost backend. On success
/// the journal is where it was before the move, the server is where the old
/// one stopped, and `rbuf` holds the server's next unread bytes.
pub async fn replay_unit(
    stream: &mut Stream,
    rbuf: &mut BytesMut,
    journal: &mut Journal,
    old: &[Reply],
) -> Result<Replayed, ReplayError> {
    let mut parameters = HashMap::new();
    if journal.is_idle() {
        return Ok(Replayed {
            tail: Bytes::new(),
            parameters,
        });
    }
    let in_flight = old.iter().position(|r| !r.done).unwrap_or(old.len());
    let count = old.len();
    let mut requests = BytesMut::new();
    let mut answered_len = 0;
    for (i, request) in journal.requests().iter().enumerate() {
        match journal.frame(request) {
            Some(frame) => requests.extend_from_slice(frame),
            None => {
                return Err(ReplayError::Diverged(
                    "a request of the transaction was not kept".into(),
                ))
            }
        }
        if i < in_flight {
            answered_len = requests.len();
        }
    }
    journal.restart_replies();
    // The requests whose replies the client already has are verified before
    // the rest (the request in flight and what follows, e.g. its COMMIT) is
    // sent: a transaction that diverges must not commit on the new server.
    let (answered, pending) = requests.split_at(answered_len);
    let (verified_tx, verified_rx) = tokio::sync::oneshot::channel::<()>();

    let (mut reader, mut writer) = tokio::io::split(&mut *stream);
    let write = async {
        writer.write_all(answered).await?;
        // Without Sync or Flush the server keeps extended-protocol replies.
        writer.write_all(&FLUSH).await?;
        writer.flush().await?;
        // Sent only once the answered requests are verified: a transaction
        // that diverged must never reach its COMMIT on the new server.
        if verified_rx.await.is_ok() {
            writer.write_all(pending).await?;
            writer.flush().await?;
        }
        Ok::<(), std::io::Error>(())
    };
    let verify = async {
        // Dropped with this future: a failed verification releases the writer.
        let mut verified_tx = Some(verified_tx);
        loop {
            if journal.requests().len() != count {
                return Err(ReplayError::Diverged(
                    "the transaction ended early on the new server".into(),
                ));
            }
            let owner = journal.next_reply_owner();
            if owner.is_none_or(|i| i >= in_flight) {
                if let Some(tx) = verified_tx.take() {
                    let _ = tx.send(());
                }
                if in_flight == count {
                    return Ok(Bytes::new());
                }
                let now = &journal.requests()[in_flight].reply;
                if owner != Some(in_flight) && now.bytes < old[in_flight].bytes {
                    return Err(ReplayError::Diverged(
                        "the statement in flight returned less on the new server".into(),
                    ));
                }
                if now.bytes == old[in_flight].bytes {
                    return check(now, &old[in_flight]).map(|()| Bytes::new());
                }
            }
            let frame = read_whole(&mut reader, rbuf).await?;
            let tag = frame[0];
            if tag == tag::ERROR_RESPONSE {
                if let Ok(fields) = ErrorFields::parse(&frame[HEADER_LEN..]) {
                    if fields.is_fatal() {
                        return Err(ReplayError::Restore(fields));
                    }
                }
            }
            if tag == tag::PARAMETER_STATUS {
                if let Ok(p) = ParameterStatus::parse(&frame[HEADER_LEN..]) {
                    parameters.insert(p.name, p.value);
                }
            }
            let owner = journal.next_reply_owner();
            match owner {
                Some(i) if i == in_flight && !is_asynchronous(tag) => {
                    let missing = (old[i].bytes - journal.requests()[i].reply.bytes) as usize;
                    if frame.len() <= missing {
                        feed(journal, &frame);
                        continue;
                    }
                    journal.server_piece(Piece::Start {
                        tag,
                        total: frame.len(),
                        bytes: &frame[..missing],
                        rest: frame.len() - missing,
                    });
                    check(&journal.requests()[i].reply, &old[i])?;
                    let tail = frame.slice(missing..);
                    journal.server_piece(Piece::More {
                        bytes: &tail,
                        rest: 0,
                    });
                    return Ok(tail);
                }
                Some(i) if !is_asynchronous(tag) => {
                    feed(journal, &frame);
                    let now = &journal.requests()[i].reply;
                    if i < in_flight && now.done {
                        check(now, &old[i])?;
                    }
                }
                _ => feed(journal, &frame),
            }
        }
    };
    let Ok((written, verified)) =
        tokio::time::timeout(REPLAY_LIMIT, async { tokio::join!(write, verify) }).await
    else {
        return Err(ReplayError::Diverged(format!(
            "the replay did not finish within {} s",
            REPLAY_LIMIT.as_secs()
        )));
    };
    let tail = verified?;
    written.map_err(ReplayError::Io)?;
    Ok(Replayed { tail, parameters })
}

/// How long a replay may take. Past it the transaction is failed (its
/// pending requests, its COMMIT among them, were never sent).
const REPLAY_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);
/// A Flush message: the server sends what it holds, and answers nothing.
const FLUSH: [u8; 5] = [understudy_protocol::frontend::tag::FLUSH, 0, 0, 0, 4];

fn check(now: &Reply, old: &Reply) -> Result<(), ReplayError> {
    if now.same_result(old) {
        Ok(())
    } else {
        Err(ReplayError::Diverged(format!(
            "a result the client already received differs on the new server ({} bytes before, {} now)",
            old.bytes, now.bytes
        )))
    }
}

fn feed(journal: &mut Journal, frame: &[u8]) {
    journal.server_piece(Piece::Start {
        tag: frame[0],
        total: frame.len(),
        bytes: frame,
        rest: 0,
    });
}

/// Reads one whole frame (header included).
pub(crate) async fn read_whole<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut R,
    rbuf: &mut BytesMut,
) -> Result<Bytes, ReplayError> {
    loop {
        if let Some((_, total)) = Frame::peek_header(rbuf, DEFAULT_MAX_MESSAGE_LEN)
            .map_err(|e| ReplayError::Protocol(e.to_string()))?
        {
            if rbuf.len() >= total {
                return Ok(rbuf.split_to(total).freeze());
            }
            rbuf.reserve(total - rbuf.len());
        } else {
            rbuf.reserve(4096);
        }
        let n = reader.read_buf(rbuf).await.map_err(ReplayError::Io)?;
        if n == 0 {
            return Err(ReplayError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
    }
}

pub(super) async fn read_frame(
    stream: &mut Stream,
    rbuf: &mut BytesMut,
) -> Result<Frame, ReplayError> {
    let whole = read_whole(stream, rbuf).await?;
    Ok(Frame {
        tag: whole[0],
        body: whole.slice(HEADER_LEN..),
    })
}
