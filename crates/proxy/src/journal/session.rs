//! The state a session has built up and a new backend must be given again:
//! settings (`SET`, `RESET`), `LISTEN`s, SQL `PREPARE`s — kept as the client
//! messages that made them, to be sent again in order — and the protocol
//! prepared statements (named Parse messages) that still exist.

use bytes::{BufMut, BytesMut};
use understudy_protocol::frontend::tag;

use super::request::Expect;
use super::{NotReplayable, Reply};

/// Session state of one session.
#[derive(Default)]
pub struct SessionState {
    /// Client messages that changed the session, in order; each entry ends
    /// with a message that gets ReadyForQuery (a Query or a Sync).
    script: Vec<BytesMut>,
    /// Named prepared statements: name and the Parse message that made it.
    prepared: Vec<(Vec<u8>, BytesMut)>,
    /// Why the state cannot be rebuilt, if it cannot.
    pub blocked: Option<NotReplayable>,
}

impl SessionState {
    /// The messages to send a new backend, in order: the named Parse
    /// messages first (followed by one Sync), then each settings entry.
    pub fn replay_script(&self) -> Vec<&[u8]> {
        let mut out: Vec<&[u8]> = self.prepared.iter().map(|(_, frame)| &frame[..]).collect();
        out.extend(self.script.iter().map(|entry| &entry[..]));
        out
    }

    /// Number of named prepared statements.
    pub fn prepared_count(&self) -> usize {
        self.prepared.len()
    }

    /// Number of settings entries.
    pub fn script_len(&self) -> usize {
        self.script.len()
    }

    fn bytes(&self) -> usize {
        self.script.iter().map(|e| e.len()).sum::<usize>()
            + self
                .prepared
                .iter()
                .map(|(n, f)| n.len() + f.len())
                .sum::<usize>()
    }

    fn block(&mut self, reason: NotReplayable) {
        if self.blocked.is_none() {
            self.blocked = Some(reason);
        }
    }

    /// A Parse message got ParseComplete.
    pub(super) fn parsed(&mut self, frame: Option<&[u8]>, max_bytes: usize) {
        let Some(frame) = frame else {
            return;
        };
        let Some(name) = first_cstr(frame.get(5..).unwrap_or_default()) else {
            return;
        };
        if name.is_empty() {
            return;
        }
        self.prepared.retain(|(n, _)| n != name);
        self.prepared.push((name.to_vec(), BytesMut::from(frame)));
        if self.bytes() > max_bytes {
            self.block(NotReplayable::SessionStateTooLarge);
        }
    }

    /// A Close message got CloseComplete.
    pub(super) fn closed(&mut self, frame: Option<&[u8]>) {
        let Some(body) = frame.and_then(|f| f.get(5..)) else {
            return;
        };
        if let Some((&b'S', rest)) = body.split_first() {
            if let Some(name) = first_cstr(rest) {
                self.prepared.retain(|(n, _)| n != name);
            }
        }
    }

    /// A unit ended with the session idle and did not roll back: keeps what
    /// it did to the session.
    pub(super) fn unit_finished(
        &mut self,
        requests: &[(u8, Reply, Option<&[u8]>)],
        max_bytes: usize,
    ) {
        if requests.iter().any(|(_, reply, _)| reply.discarded) {
            self.script.clear();
            self.prepared.clear();
        }
        let mut extended = BytesMut::new();
        let mut extended_session = false;
        for (message_tag, reply, frame) in requests {
            let expect = Expect::of(*message_tag);
            if reply.session_commands > 0 && reply.other_commands > 0 {
                self.block(NotReplayable::MixedSessionStatement);
                continue;
            }
            match (*message_tag, frame) {
                (tag::QUERY, _) if reply.session_commands == 0 || reply.failed => {}
                (tag::QUERY, Some(frame)) => self.script.push(BytesMut::from(*frame)),
                (tag::QUERY, None) => self.block(NotReplayable::MessageTooLarge),
                (_, Some(frame)) if expect.is_extended() || *message_tag == tag::SYNC => {
                    extended_session |= reply.session_commands > 0 && !reply.failed;
                    if reply.other_commands > 0 {
                        extended.clear();
                        extended_session = false;
                        continue;
                    }
                    extended.put_slice(frame);
                    if *message_tag == tag::SYNC {
                        if extended_session {
                            self.script.push(std::mem::take(&mut extended));
                        }
                        extended.clear();
                        extended_session = false;
                    }
                }
                _ => {}
            }
        }
        if self.bytes() > max_bytes {
            self.block(NotReplayable::SessionStateTooLarge);
        }
    }
}

fn first_cstr(bytes: &[u8]) -> Option<&[u8]> {
    let end = bytes.iter().position(|&b| b == 0)?;
    Some(&bytes[..end])
}
