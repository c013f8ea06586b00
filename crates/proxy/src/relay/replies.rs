//! The server's side of the relay: follows its replies and the transaction
//! status, holds back a FATAL error, cuts out the replies meant for the proxy
//! (stamps, acknowledgements of translated Queries), and rewrites what a
//! move changed.

use std::ops::ControlFlow;

use bytes::BytesMut;
use understudy_protocol::backend::sqlstate::{IN_FAILED_TRANSACTION, SERIALIZATION_FAILURE};
use understudy_protocol::backend::{self, ErrorFields, ParameterStatus, Severity};
use understudy_protocol::scan::{body_of, Piece, Stop};

use crate::error::{SessionError, Side};
use crate::journal::{is_asynchronous, server_message_needed_whole};
use crate::metrics::{self, ProxyMetrics};

use super::pipe::take_server_frame;
use super::{joined, Pipe, RelayState, SyncHold};

/// Scans bytes from the server: follows replies and the transaction
/// status, holds back a FATAL error, and rewrites the pid of the session's
/// own notifications after a move.
pub(super) fn scan_server(
    pipe: &mut Pipe,
    state: &mut RelayState,
    metrics: &ProxyMetrics,
) -> Result<(), SessionError> {
    // Only when a message is replaced are bytes copied into `assembled`.
    let mut assembled: Option<BytesMut> = None;
    loop {
        let journal = &mut state.journal;
        let parameters = &mut state.parameters;
        let rewrite_pid = (state.backend_pid != state.client_pid).then_some(state.backend_pid);
        let failed_over = state.failed_over_transaction.is_some();
        let proxy_pending = journal.proxy_replies_pending();
        let rules = &mut state.rules;
        let (tracking, wants_rows) = match rules.as_deref() {
            Some(r) if r.tracking() => (true, r.results.wants_rows()),
            Some(_) => (false, false),
            None => (false, false),
        };
        let mut masked_row: Option<(usize, BytesMut)> = None;
        let mut refusal: Option<(usize, ErrorFields)> = None;
        let mut fatal = None;
        let mut replace = None;
        let mut drop = None;
        let mut unchanged = None;
        let mut copy_in = false;
        let mut notifications = Vec::new();
        let mut offset = 0;
        let scanned = pipe
            .scanner
            .scan(
                &pipe.buf,
                |tag, _| {
                    proxy_pending
                        || server_message_needed_whole(tag)
                        || tag == backend::tag::PARAMETER_STATUS
                        || tag == backend::tag::NOTIFICATION_RESPONSE
                        || (tracking && tag == backend::tag::ROW_DESCRIPTION)
                        || (wants_rows
                            && matches!(tag, backend::tag::DATA_ROW | backend::tag::COPY_DATA))
                },
                |piece| {
                    let start = offset;
                    match piece {
                        Piece::Start { bytes, .. } | Piece::More { bytes, .. } => {
                            offset += bytes.len()
                        }
                    }
                    if let Piece::Start {
                        tag, bytes, total, ..
                    } = piece
                    {
                        // A FATAL error is the server ending the connection
                        // (e.g. its postmaster died), not the stamp's reply:
                        // it is held like any other, and the stamp stays in
                        // flight for the failover to resolve.
                        if proxy_pending
                            && !is_asynchronous(tag)
                            && !is_fatal_error(tag, bytes)
                            && journal.next_reply_is_proxys(tag)
                        {
                            drop = Some(total);
                            return ControlFlow::Break(Stop::Before);
                        }
                        match tag {
                            backend::tag::ERROR_RESPONSE => {
                                metrics::inc(&metrics.server_errors_total);
                                if let Ok(fields) = ErrorFields::parse(body_of(bytes)) {
                                    if fields.is_fatal() {
                                        fatal = Some(fields);
                                        return ControlFlow::Break(Stop::Before);
                                    }
                                    if let Some((code, message)) = rules.as_deref().and_then(|r| {
                                        r.refusals.of_error(&fields.code, &fields.message)
                                    }) {
                                        let error = ErrorFields::new(
                                            Severity::Error,
                                            code,
                                            message.to_owned(),
                                        );
                                        if let (Some(rules), true) =
                                            (rules.as_deref_mut(), tracking)
                                        {
                                            rules.results.server_message(tag, bytes);
                                        }
                                        refusal = Some((total, error));
                                        return ControlFlow::Break(Stop::Before);
                                    }
                                    if failed_over && fields.code == IN_FAILED_TRANSACTION {
                                        if let (Some(rules), true) =
                                            (rules.as_deref_mut(), tracking)
                                        {
                                            rules.results.server_message(tag, bytes);
                                        }
                                        replace = Some(total);
                                        return ControlFlow::Break(Stop::Before);
                                    }
                                }
                            }
                            backend::tag::READY_FOR_QUERY if bytes.get(5) == Some(&b'I') => {
                                // The failed transaction is over.
                                state.failed_over_transaction = None;
                            }
                            backend::tag::COPY_IN_RESPONSE | backend::tag::COPY_BOTH_RESPONSE => {
                                copy_in = true;
                            }
                            backend::tag::PARAMETER_STATUS => {
                                if let Ok(p) = ParameterStatus::parse(body_of(bytes)) {
                                    // A value the client has already is not
                                    // repeated, as PostgreSQL does not: a
                                    // backend opened on a standby before its
                                    // promotion hears `in_hot_standby` turn
                                    // off, which the client never saw on.
                                    if parameters.get(&p.name) == Some(&p.value) {
                                        unchanged = Some(total);
                                        return ControlFlow::Break(Stop::Before);
                                    }
                                    parameters.insert(p.name, p.value);
                                }
                            }
                            backend::tag::NOTIFICATION_RESPONSE => {
                                if let (Some(pid), Some(b)) = (rewrite_pid, bytes.get(5..9)) {
                                    if i32::from_be_bytes([b[0], b[1], b[2], b[3]]) == pid {
                                        notifications.push(start + 5);
                                    }
                                }
                            }
                            _ => {}
                        }
                        if let (Some(rules), true) =
                            (rules.as_deref_mut(), tracking && bytes.len() == total)
                        {
                            if let Some((row, n)) = rules.results.server_message(tag, bytes) {
                                metrics::add(&metrics.masked_values_total, n);
                                masked_row = Some((total, row));
                                return ControlFlow::Break(Stop::Before);
                            }
                        }
                    }
                    journal.server_piece(piece);
                    ControlFlow::Continue(())
                },
            )
            .map_err(|source| SessionError::Protocol {
                side: Side::Server,
                source,
            })?;
        for at in notifications {
            pipe.buf[at..at + 4].copy_from_slice(&state.client_pid.to_be_bytes());
        }
        let relayed = pipe.buf.split_to(scanned.relay_upto);
        if let Some(total) = drop {
            // The reply to the proxy's own stamp, or an acknowledgement of
            // a translated Query: the client never sees it, except a stamp's
            // error, which it gets as a warning (its COMMIT will
            // then report ROLLBACK, as PostgreSQL does for a failed
            // transaction).
            let out = assembled.get_or_insert_with(BytesMut::new);
            let frame = take_server_frame(pipe, total, &relayed, out, &mut state.journal);
            if frame[0] == backend::tag::ERROR_RESPONSE {
                if let Ok(mut fields) = ErrorFields::parse(body_of(&frame)) {
                    if state.journal.stamp_is_implicit() {
                        // The Sync will roll the batch back: the client
                        // must hear it failed.
                        fields.message = format!(
                            "understudy could not record the commit, so the statement was rolled back: {}",
                            fields.message
                        );
                        fields.encode_error(out);
                    } else {
                        fields.severity = "WARNING".into();
                        fields.message =
                            format!("understudy could not record the commit: {}", fields.message);
                        fields.encode_notice(out);
                    }
                }
            }
            continue;
        }
        if let Some(total) = unchanged {
            let out = assembled.get_or_insert_with(BytesMut::new);
            take_server_frame(pipe, total, &relayed, out, &mut state.journal);
            continue;
        }
        if let Some((total, error)) = refusal {
            // A Parse refused by a rule: the server's error for its
            // stand-in statement becomes the refusal. The journal digests
            // the server's bytes, which a replay reproduces.
            let out = assembled.get_or_insert_with(BytesMut::new);
            take_server_frame(pipe, total, &relayed, out, &mut state.journal);
            error.encode_error(out);
            continue;
        }
        if let Some((total, row)) = masked_row {
            // A row with masked values: the journal digests the server's
            // own bytes (a replay compares them with the new server's), the
            // client gets the masked row.
            let out = assembled.get_or_insert_with(BytesMut::new);
            take_server_frame(pipe, total, &relayed, out, &mut state.journal);
            out.extend_from_slice(&row);
            continue;
        }
        // Every command of the failed transaction hears why, until it ends:
        // the first 25P02 may answer a request the client does not wait for
        // (a driver's deferred Close), so it is not enough to rewrite one.
        if let (Some(total), Some(why)) = (replace, state.failed_over_transaction.clone()) {
            // The errors the client gets after its transaction was failed
            // over say so, with the code drivers retry on.
            let _ = pipe.buf.split_to(total);
            let out = assembled.get_or_insert_with(BytesMut::new);
            out.extend_from_slice(&relayed);
            let start = out.len();
            ErrorFields::new(Severity::Error, SERIALIZATION_FAILURE, why)
                .with_hint("Retry the transaction.")
                .encode_error(out);
            let replacement = out.split_off(start);
            state.journal.server_piece(Piece::Start {
                tag: backend::tag::ERROR_RESPONSE,
                total: replacement.len(),
                bytes: &replacement,
                rest: 0,
            });
            out.extend_from_slice(&replacement);
            continue;
        }
        pipe.out = joined(assembled.take(), relayed);
        if fatal.is_some() {
            state.server_fatal = fatal;
            pipe.done_reading = true;
        }
        state.copy_in_refused();
        if state.sync_hold == SyncHold::Waiting {
            if copy_in {
                // The server wants the client's data (a COPY the batch check
                // did not recognise): the Sync must go, without a stamp.
                state.sync_hold = SyncHold::Pass;
            } else if state.journal.outstanding() == 0 {
                state.sync_hold = SyncHold::Ready;
            }
        }
        if state.journal.has_committed() {
            let committed = state.journal.take_committed();
            let mut not_kept = None;
            if let Some((log, identity)) = &state.commit_log {
                for unit in committed {
                    if !unit.whole {
                        not_kept = Some(unit.token);
                    }
                    log.push(identity, unit);
                }
            }
            if let (Some(token), Some((log, _))) = (not_kept, state.commit_log.clone()) {
                state.wait_for_standbys(token, &log);
            }
        }
        return Ok(());
    }
}

/// True for an ErrorResponse (whole frame `bytes`) of severity FATAL or PANIC.
fn is_fatal_error(tag: u8, bytes: &[u8]) -> bool {
    tag == backend::tag::ERROR_RESPONSE
        && ErrorFields::parse(body_of(bytes)).is_ok_and(|fields| fields.is_fatal())
}
