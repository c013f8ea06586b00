//! Answering the requests a client still waits for when the proxy gives its
//! unit up after a move — the transaction could not be replayed (`40001`),
//! or nothing can tell whether it committed (`08007`): each request gets the
//! reply that keeps the client's protocol state right (one error, then a
//! ReadyForQuery for every Query and Sync).

use bytes::BytesMut;
use understudy_protocol::backend::{tag, ErrorFields, ReadyForQuery, TransactionStatus};
use understudy_protocol::frontend::tag as ftag;
use understudy_protocol::FrameWriter;

use crate::journal::request::Expect;
use crate::journal::{Journal, Reply};

/// How the outstanding requests are answered.
pub struct Answers {
    /// The error of the first request that runs something.
    pub error: ErrorFields,
    /// The error of every later Query or FunctionCall (each waits for a
    /// result of its own); `None` gives them only their ReadyForQuery.
    pub later_queries: Option<ErrorFields>,
    /// A Close before the error completes (closing cannot fail) instead of
    /// getting it.
    pub closes_complete: bool,
    /// A Sync before the error gets it (it would have committed an
    /// implicit transaction) instead of only its ReadyForQuery.
    pub syncs_fail: bool,
    /// The status of every ReadyForQuery.
    pub status: TransactionStatus,
}

/// The replies to the requests of `journal`'s unit that `old` (the replies
/// the client received) shows unanswered, proxy requests excluded; and
/// whether one of them got `answers.error`.
pub fn answer_outstanding(journal: &Journal, old: &[Reply], answers: &Answers) -> (BytesMut, bool) {
    let mut out = BytesMut::new();
    let mut first = true;
    for (request, old) in journal.requests().iter().zip(old) {
        if old.done || request.injected || request.expect == Expect::Nothing {
            continue;
        }
        match request.tag {
            ftag::CLOSE if first && answers.closes_complete => {
                FrameWriter::tagged(&mut out, tag::CLOSE_COMPLETE).finish();
            }
            ftag::SYNC if first && !answers.syncs_fail => {}
            _ if first => {
                answers.error.encode_error(&mut out);
                first = false;
            }
            ftag::QUERY | ftag::FUNCTION_CALL => {
                if let Some(error) = &answers.later_queries {
                    error.encode_error(&mut out);
                }
            }
            _ => {}
        }
        if request.expect == Expect::Ready {
            ReadyForQuery {
                status: answers.status,
            }
            .encode(&mut out);
        }
    }
    (out, !first)
}
