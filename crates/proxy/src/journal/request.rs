//! What a client message asks of the server, as far as matching the
//! server's replies to it goes, and who wrote it.

use understudy_protocol::frontend::tag;

/// The server message that completes the reply to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// ReadyForQuery (simple Query, FunctionCall, Sync).
    Ready,
    /// ParseComplete.
    ParseComplete,
    /// BindComplete.
    BindComplete,
    /// RowDescription or NoData (after an optional ParameterDescription).
    Description,
    /// CommandComplete, EmptyQueryResponse or PortalSuspended.
    ExecuteEnd,
    /// CloseComplete.
    CloseComplete,
    /// No reply of its own (Flush, COPY data from the client, Terminate).
    Nothing,
}

impl Expect {
    /// The reply a client message with this type byte gets.
    pub fn of(client_tag: u8) -> Expect {
        match client_tag {
            tag::QUERY | tag::FUNCTION_CALL | tag::SYNC => Expect::Ready,
            tag::PARSE => Expect::ParseComplete,
            tag::BIND => Expect::BindComplete,
            tag::DESCRIBE => Expect::Description,
            tag::EXECUTE => Expect::ExecuteEnd,
            tag::CLOSE => Expect::CloseComplete,
            _ => Expect::Nothing,
        }
    }

    /// True for the messages of the extended query protocol, after an error
    /// in which the server skips everything up to the next Sync.
    pub fn is_extended(self) -> bool {
        matches!(
            self,
            Expect::ParseComplete
                | Expect::BindComplete
                | Expect::Description
                | Expect::ExecuteEnd
                | Expect::CloseComplete
        )
    }
}

/// Whose text a recorded message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    /// The client's: its statements may change what a replay needs.
    Client,
    /// The proxy's own (a commit stamp, a Flush): known to change nothing.
    Proxy,
}

/// How a completed command changes the session, from its CommandComplete tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandKind {
    /// Changes session state that a new backend must be given again
    /// (`SET`, `RESET`, `LISTEN`, `UNLISTEN`, `PREPARE`, `DEALLOCATE`).
    Session,
    /// `DISCARD ALL`: the session state is reset. (`DISCARD PLANS`,
    /// `SEQUENCES` and `TEMP` leave settings and prepared statements alone.)
    Discard,
    /// Transaction control (`BEGIN`, `COMMIT`, `ROLLBACK`, savepoints).
    Transaction,
    /// Anything else.
    Other,
}

impl CommandKind {
    /// Classifies a CommandComplete tag such as `SET` or `INSERT 0 1`.
    pub fn of_tag(command_tag: &[u8]) -> CommandKind {
        if command_tag == b"DISCARD ALL" {
            return CommandKind::Discard;
        }
        let word = command_tag.split(|&b| b == b' ').next().unwrap_or_default();
        match word {
            b"SET" | b"RESET" | b"LISTEN" | b"UNLISTEN" | b"PREPARE" | b"DEALLOCATE" => {
                CommandKind::Session
            }
            b"BEGIN" | b"START" | b"COMMIT" | b"ROLLBACK" | b"SAVEPOINT" | b"RELEASE" => {
                CommandKind::Transaction
            }
            _ => CommandKind::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_tags_are_classified_by_their_first_word() {
        assert_eq!(CommandKind::of_tag(b"SET"), CommandKind::Session);
        assert_eq!(CommandKind::of_tag(b"DEALLOCATE ALL"), CommandKind::Session);
        assert_eq!(CommandKind::of_tag(b"DISCARD ALL"), CommandKind::Discard);
        assert_eq!(CommandKind::of_tag(b"DISCARD PLANS"), CommandKind::Other);
        assert_eq!(CommandKind::of_tag(b"DISCARD TEMP"), CommandKind::Other);
        assert_eq!(
            CommandKind::of_tag(b"START TRANSACTION"),
            CommandKind::Transaction
        );
        assert_eq!(CommandKind::of_tag(b"INSERT 0 1"), CommandKind::Other);
        assert_eq!(CommandKind::of_tag(b"SETOF"), CommandKind::Other);
    }
}
