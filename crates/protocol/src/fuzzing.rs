//! Bodies of the fuzz targets in `fuzz/` for the frontend and backend
//! message parsers, shared with the corpus replay in `tests/fuzz_corpus.rs`
//! so that `cargo test` runs every committed input through the same checks.
//!
//! Each function takes arbitrary bytes as a stream received from a peer and
//! panics when an invariant of the parsers does not hold:
//! - [`Frame::decode`] and the [`Scanner`] agree on frame boundaries, on the
//!   error and on how many bytes may be relayed, whatever the chunking;
//! - every decoded frame re-encodes to exactly the bytes it came from;
//! - every typed message that parses re-encodes to a message that parses
//!   to the same value (to the same bytes where the format is canonical).
//!
//! Not part of the public API.

use std::ops::ControlFlow;

use bytes::BytesMut;

use crate::backend::{
    tag as backend_tag, Authentication, BackendKeyData, ErrorFields, NotificationResponse,
    ParameterStatus, ReadyForQuery,
};
use crate::frame::HEADER_LEN;
use crate::frontend::{self, encode_password, parse_password, SaslInitialResponse};
use crate::scan::{Piece, Scanner, Stop};
use crate::{Frame, ProtocolError};

/// Largest frame the targets accept: small enough that the fuzzer reaches
/// [`ProtocolError::MessageTooLarge`] easily.
pub const FUZZ_MAX_MESSAGE_LEN: usize = 1 << 16;

/// Chunk sizes the stream is fed to the scanner in; `0` means "all at once".
const CHUNKINGS: [usize; 5] = [0, 1, 3, 7, 64];

/// A stream of client messages (after the startup packet).
pub fn frontend_stream(data: &[u8]) {
    check_stream(data, frontend_whole, check_frontend_message);
}

/// A stream of server messages.
pub fn backend_stream(data: &[u8]) {
    check_stream(data, backend_whole, check_backend_message);
}

/// Client messages the proxy looks at whole (the others it relays piecemeal).
fn frontend_whole(tag: u8, total: usize) -> bool {
    matches!(
        tag,
        frontend::tag::QUERY | frontend::tag::PARSE | frontend::tag::PASSWORD
    ) || total < 64
}

/// Server messages the proxy looks at whole.
fn backend_whole(tag: u8, _total: usize) -> bool {
    matches!(
        tag,
        backend_tag::READY_FOR_QUERY
            | backend_tag::ERROR_RESPONSE
            | backend_tag::NOTICE_RESPONSE
            | backend_tag::PARAMETER_STATUS
            | backend_tag::BACKEND_KEY_DATA
            | backend_tag::AUTHENTICATION
            | backend_tag::NOTIFICATION_RESPONSE
            | backend_tag::COMMAND_COMPLETE
    )
}

/// What [`Frame::decode`] makes of a whole stream.
struct Decoded {
    /// `(tag, total size)` of each complete frame.
    frames: Vec<(u8, usize)>,
    /// Bytes taken by those frames.
    consumed: usize,
    /// The error that stopped decoding, if any.
    error: Option<ProtocolError>,
}

/// What the scanner makes of the same stream.
struct Scanned {
    frames: Vec<(u8, usize)>,
    relayed: usize,
    error: Option<ProtocolError>,
}

fn check_stream(data: &[u8], whole: fn(u8, usize) -> bool, typed: fn(&Frame, &[u8])) {
    let decoded = decode_all(data, typed);
    let tail = &data[decoded.consumed..];
    let expected_relayed = match (
        &decoded.error,
        Frame::peek_header(tail, FUZZ_MAX_MESSAGE_LEN),
    ) {
        (None, Ok(Some((tag, total)))) if !whole(tag, total) => {
            assert!(total > tail.len(), "decode left a complete frame behind");
            data.len()
        }
        _ => decoded.consumed,
    };
    for chunk in CHUNKINGS {
        let scanned = scan_in_chunks(data, chunk, whole);
        assert_eq!(
            scanned.frames, decoded.frames,
            "frame boundaries, chunk {chunk}"
        );
        assert_eq!(scanned.error, decoded.error, "error, chunk {chunk}");
        if decoded.error.is_some() {
            // A scan that fails relays nothing of what it scanned: the
            // session ends there.
            assert!(
                scanned.relayed <= decoded.consumed,
                "bytes relayed, chunk {chunk}"
            );
        } else {
            assert_eq!(
                scanned.relayed, expected_relayed,
                "bytes relayed, chunk {chunk}"
            );
        }
    }
}

fn decode_all(data: &[u8], typed: fn(&Frame, &[u8])) -> Decoded {
    let mut buf = BytesMut::from(data);
    let mut frames = Vec::new();
    let mut consumed = 0;
    let error = loop {
        match Frame::decode(&mut buf, FUZZ_MAX_MESSAGE_LEN) {
            Ok(Some(frame)) => {
                let total = HEADER_LEN + frame.body.len();
                let original = &data[consumed..consumed + total];
                let mut encoded = BytesMut::new();
                frame.encode(&mut encoded);
                assert_eq!(&encoded[..], original, "a frame re-encodes to its bytes");
                typed(&frame, original);
                frames.push((frame.tag, total));
                consumed += total;
            }
            Ok(None) => break None,
            Err(e) => break Some(e),
        }
    };
    assert_eq!(
        &buf[..],
        &data[consumed..],
        "decode keeps what it did not take"
    );
    Decoded {
        frames,
        consumed,
        error,
    }
}

/// Feeds `data` to a scanner `chunk` bytes at a time (all at once for 0),
/// relaying like the proxy: `relay_upto` bytes leave the buffer after each
/// scan. A Terminate stops the scan after itself, and scanning resumes.
fn scan_in_chunks(data: &[u8], chunk: usize, whole: fn(u8, usize) -> bool) -> Scanned {
    let mut scanner = Scanner::new(FUZZ_MAX_MESSAGE_LEN);
    let mut pending: Vec<u8> = Vec::new();
    let mut relayed: Vec<u8> = Vec::new();
    let mut frames = Vec::new();
    // The frame being received: tag, total size, bytes seen.
    let mut current: Option<(u8, usize, usize)> = None;
    let chunk = if chunk == 0 { data.len().max(1) } else { chunk };
    for piece_of_input in data.chunks(chunk) {
        pending.extend_from_slice(piece_of_input);
        loop {
            let outcome = scanner.scan(&pending, whole, |piece| {
                on_piece(piece, whole, &mut current, &mut frames);
                match piece {
                    Piece::Start { tag: b'X', .. } => ControlFlow::Break(Stop::After),
                    _ => ControlFlow::Continue(()),
                }
            });
            match outcome {
                Ok(scanned) => {
                    assert!(scanned.relay_upto <= pending.len());
                    relayed.extend(pending.drain(..scanned.relay_upto));
                    if scanned.stopped.is_none() {
                        break;
                    }
                }
                Err(error) => {
                    assert_eq!(&relayed[..], &data[..relayed.len()]);
                    return Scanned {
                        frames,
                        relayed: relayed.len(),
                        error: Some(error),
                    };
                }
            }
        }
        assert_eq!(scanner.at_boundary(), current.is_none());
    }
    assert_eq!(
        &relayed[..],
        &data[..relayed.len()],
        "relayed bytes are the input"
    );
    Scanned {
        frames,
        relayed: relayed.len(),
        error: None,
    }
}

fn on_piece(
    piece: Piece<'_>,
    whole: fn(u8, usize) -> bool,
    current: &mut Option<(u8, usize, usize)>,
    frames: &mut Vec<(u8, usize)>,
) {
    let (tag, total, seen, rest) = match piece {
        Piece::Start {
            tag,
            total,
            bytes,
            rest,
        } => {
            assert!(
                current.is_none(),
                "a frame starts before the last one ended"
            );
            assert!(bytes.len() >= HEADER_LEN && bytes[0] == tag);
            if whole(tag, total) {
                assert_eq!(rest, 0, "a frame asked whole arrives whole");
            }
            (tag, total, bytes.len(), rest)
        }
        Piece::More { bytes, rest } => {
            let (tag, total, seen) = current.take().expect("More follows a Start");
            (tag, total, seen + bytes.len(), rest)
        }
    };
    assert_eq!(seen + rest, total, "pieces add up to the frame");
    if rest == 0 {
        frames.push((tag, total));
    } else {
        *current = Some((tag, total, seen));
    }
}

/// Re-encodes a frame built by `encode` and returns its body.
fn reencoded(encode: impl FnOnce(&mut BytesMut)) -> (BytesMut, Frame) {
    let mut out = BytesMut::new();
    encode(&mut out);
    let bytes = out.clone();
    let frame = Frame::decode(&mut out, usize::MAX >> 1)
        .expect("an encoded message decodes")
        .expect("an encoded message is complete");
    assert!(out.is_empty(), "an encoder writes exactly one frame");
    (bytes, frame)
}

fn check_frontend_message(frame: &Frame, original: &[u8]) {
    if frame.tag != frontend::tag::PASSWORD {
        return;
    }
    if let Ok(message) = SaslInitialResponse::parse(&frame.body) {
        let (bytes, again) = reencoded(|out| message.encode(out));
        assert_eq!(
            SaslInitialResponse::parse(&again.body).as_ref(),
            Ok(&message)
        );
        let declared = frame.body.len() - message.data.len() - 4;
        let declared_len = i32::from_be_bytes(
            frame.body[declared..declared + 4]
                .try_into()
                .expect("four bytes"),
        );
        if declared_len >= 0 {
            assert_eq!(&bytes[..], original, "SASLInitialResponse is canonical");
        }
    }
    if let Ok(password) = parse_password(&frame.body) {
        let (bytes, _) = reencoded(|out| encode_password(password, out));
        assert_eq!(&bytes[..], original, "PasswordMessage is canonical");
    }
}

fn check_backend_message(frame: &Frame, original: &[u8]) {
    let body = &frame.body[..];
    match frame.tag {
        backend_tag::AUTHENTICATION => {
            if let Ok(message) = Authentication::parse(body) {
                let (bytes, again) = reencoded(|out| message.encode(out));
                assert_eq!(Authentication::parse(&again.body).as_ref(), Ok(&message));
                if !matches!(message, Authentication::Unsupported { .. }) {
                    assert_eq!(&bytes[..], original, "Authentication is canonical");
                }
            }
        }
        backend_tag::ERROR_RESPONSE | backend_tag::NOTICE_RESPONSE => {
            if let Ok(fields) = ErrorFields::parse(body) {
                let (_, again) = reencoded(|out| fields.encode_error(out));
                assert_eq!(ErrorFields::parse(&again.body).as_ref(), Ok(&fields));
            }
        }
        backend_tag::BACKEND_KEY_DATA => {
            if let Ok(key) = BackendKeyData::parse(body) {
                assert_eq!(&reencoded(|out| key.encode(out)).0[..], original);
            }
        }
        backend_tag::PARAMETER_STATUS => {
            if let Ok(status) = ParameterStatus::parse(body) {
                assert_eq!(&reencoded(|out| status.encode(out)).0[..], original);
            }
        }
        backend_tag::READY_FOR_QUERY => {
            if let Ok(ready) = ReadyForQuery::parse(body) {
                assert_eq!(&reencoded(|out| ready.encode(out)).0[..], original);
            }
        }
        backend_tag::NOTIFICATION_RESPONSE => {
            if let Ok(notification) = NotificationResponse::parse(body) {
                assert_eq!(&reencoded(|out| notification.encode(out)).0[..], original);
            }
        }
        _ => {}
    }
}
