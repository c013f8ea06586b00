//! Resolving a COMMIT that was in flight when the backend was lost: the
//! ledger on the new primary says whether it took effect. If it did, the
//! client gets the replies a successful COMMIT would have produced; if not,
//! the transaction is replayed and committed on the new primary. A
//! transaction that took effect while the results of statements sent with
//! its COMMIT never arrived cannot be answered: those results are lost, and
//! the client is told so rather than given made-up ones.

use crate::stream::Stream;
use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use understudy_protocol::backend::sqlstate::{
    SERIALIZATION_FAILURE, TRANSACTION_RESOLUTION_UNKNOWN,
};
use understudy_protocol::backend::{tag, ErrorFields, ReadyForQuery, Severity, TransactionStatus};
use understudy_protocol::frontend::{encode_query, tag as ftag};
use understudy_protocol::FrameWriter;

use super::replay::{read_frame, ReplayError};
use crate::journal::request::Expect;
use crate::journal::{Journal, Reply};
use crate::ledger;
use crate::relay::StandbyWait;

/// What the ledger says about the unit's COMMIT.
pub enum CommitOutcome {
    /// No COMMIT was in flight, or it did not take effect: replay.
    Replay,
    /// It took effect; these bytes are the client's replies.
    Committed(BytesMut),
    /// It took effect, and its `COMMIT AND CHAIN` opened a transaction the
    /// client is now in: these bytes are the client's replies, and the
    /// statement opens that transaction on the new server.
    CommittedAndChained(BytesMut, String),
    /// It took effect, but the client still waits for results only the lost
    /// server had (why, for the client's error).
    ResultsLost(String),
}

/// Asks the new primary whether the unit's stamped transaction committed.
pub async fn resolve(
    stream: &mut Stream,
    rbuf: &mut BytesMut,
    journal: &Journal,
    old: &[Reply],
) -> Result<CommitOutcome, ReplayError> {
    let Some(token) = journal.commit_token else {
        return Ok(CommitOutcome::Replay);
    };
    let outstanding: Vec<usize> = (0..old.len())
        .filter(|&i| !old[i].done && !journal.requests()[i].injected)
        .collect();
    if outstanding.is_empty() {
        return Ok(CommitOutcome::Replay);
    }
    match token_committed(stream, rbuf, token).await? {
        Some(true) => {}
        Some(false) => return Ok(CommitOutcome::Replay),
        None => {
            return Err(ReplayError::Diverged(
                "the commit ledger could not be read on the new server".into(),
            ))
        }
    }
    let requests = journal.requests();
    let end = outstanding
        .iter()
        .position(|&i| requests[i].expect == Expect::Ready)
        .ok_or_else(|| ReplayError::Diverged("the COMMIT in flight has no end".into()))?;
    if end + 1 != outstanding.len() {
        return Ok(CommitOutcome::ResultsLost(
            "requests were pipelined behind it".into(),
        ));
    }
    // Acknowledgements, the COMMIT's own completion and ReadyForQuery can be
    // stood in for; what a statement sent with the COMMIT returned (its rows,
    // its row count) cannot.
    let unanswered = outstanding.iter().any(|&i| {
        matches!(requests[i].tag, ftag::EXECUTE | ftag::QUERY) && !journal.request_commits(i)
    });
    if unanswered {
        return Ok(CommitOutcome::ResultsLost(
            "statements sent with the COMMIT had not been answered yet".into(),
        ));
    }
    // The chained transaction keeps the committed one's isolation level and
    // access mode: it is opened again by the statement that told them.
    let chained = match outstanding.iter().find(|&&i| journal.request_chains(i)) {
        None => None,
        Some(&i) => match journal.opening_chained_by(i) {
            Some(opening) => Some(opening),
            None => {
                return Ok(CommitOutcome::ResultsLost(
                    "its COMMIT AND CHAIN opened a new transaction, which cannot be opened \
                     again on the new server with the same characteristics"
                        .into(),
                ))
            }
        },
    };
    let mut replies = BytesMut::new();
    let ready = ReadyForQuery {
        status: if chained.is_some() {
            TransactionStatus::InTransaction
        } else {
            TransactionStatus::Idle
        },
    };
    for &i in &outstanding {
        let request = &requests[i];
        if request.translated && request.tag != ftag::EXECUTE {
            // The client sent a simple Query: no acknowledgements.
            continue;
        }
        let frame = journal.frame(request).unwrap_or_default();
        match request.tag {
            ftag::QUERY => {
                command_complete(&mut replies);
                ready.encode(&mut replies);
            }
            ftag::PARSE => empty(&mut replies, tag::PARSE_COMPLETE),
            ftag::BIND => empty(&mut replies, tag::BIND_COMPLETE),
            ftag::CLOSE => empty(&mut replies, tag::CLOSE_COMPLETE),
            ftag::DESCRIBE => {
                if frame.get(5) == Some(&b'S') {
                    let mut w = FrameWriter::tagged(&mut replies, tag::PARAMETER_DESCRIPTION);
                    w.i16(0);
                    w.finish();
                }
                empty(&mut replies, tag::NO_DATA);
            }
            ftag::EXECUTE => command_complete(&mut replies),
            ftag::SYNC => ready.encode(&mut replies),
            _ => {}
        }
    }
    Ok(match chained {
        Some(opening) => CommitOutcome::CommittedAndChained(replies, opening),
        None => CommitOutcome::Committed(replies),
    })
}

fn empty(out: &mut BytesMut, message: u8) {
    FrameWriter::tagged(out, message).finish();
}

fn command_complete(out: &mut BytesMut) {
    let mut w = FrameWriter::tagged(out, tag::COMMAND_COMPLETE);
    w.cstr("COMMIT");
    w.finish();
}

/// Whether the transaction stamped with `token` committed, by the ledger on
/// the server behind `stream`; `None` when the ledger could not be read.
async fn token_committed(
    stream: &mut Stream,
    rbuf: &mut BytesMut,
    token: i64,
) -> Result<Option<bool>, ReplayError> {
    let mut out = BytesMut::new();
    encode_query(&ledger::committed_sql(token), &mut out);
    stream.write_all(&out).await.map_err(ReplayError::Io)?;
    let mut committed = None;
    loop {
        let frame = read_frame(stream, rbuf).await?;
        match frame.tag {
            tag::DATA_ROW => committed = Some(frame.body.ends_with(b"t")),
            tag::ERROR_RESPONSE => committed = None,
            tag::READY_FOR_QUERY => break,
            _ => {}
        }
    }
    Ok(committed)
}

/// What the client gets for a COMMIT whose acknowledgement waited for the
/// standbys when its server was lost (`relay::standby_wait`): the kept
/// replies when the new primary has the transaction; `40001` when it does
/// not (the transaction took effect nowhere that still serves); `08007`
/// when its ledger cannot tell.
pub async fn held_commit_reply(
    stream: &mut Stream,
    rbuf: &mut BytesMut,
    wait: &StandbyWait,
) -> Result<BytesMut, ReplayError> {
    let fields = match token_committed(stream, rbuf, wait.token).await? {
        Some(true) => return Ok(wait.held.clone()),
        Some(false) => {
            tracing::warn!(
                token = wait.token,
                "a committed transaction too large for the commit log was lost with its \
                 primary before the standby received it; the client gets 40001"
            );
            ErrorFields::new(
                Severity::Error,
                SERIALIZATION_FAILURE,
                "the transaction committed on a primary that was lost before its standby \
                 received it: it is not in the database"
                    .to_owned(),
            )
            .with_hint("Run the transaction again.")
        }
        None => ErrorFields::new(
            Severity::Error,
            TRANSACTION_RESOLUTION_UNKNOWN,
            "the transaction committed on a primary that was lost before its standby \
             confirmed it, and the commit ledger of the new primary could not be read"
                .to_owned(),
        ),
    };
    let mut reply = BytesMut::new();
    fields.encode_error(&mut reply);
    ReadyForQuery {
        status: TransactionStatus::Idle,
    }
    .encode(&mut reply);
    Ok(reply)
}
