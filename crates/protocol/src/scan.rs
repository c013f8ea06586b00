//! Finds frame boundaries in a byte stream that is being relayed.
//!
//! The relay forwards bytes as soon as they arrive, even when a frame is only
//! partly received (a 100 MB `CopyData` or `DataRow` is never buffered
//! whole). The scanner walks frame headers, remembers how much of the current
//! frame is still to come, and hands the caller the complete body of only
//! those frames it asked to see (small control messages such as
//! `ReadyForQuery`). Nothing is copied: the caller relays `buf[..relay_upto]`.

use std::ops::ControlFlow;

use crate::frame::{Frame, HEADER_LEN};
use crate::ProtocolError;

/// Streaming frame scanner for one direction of one connection.
#[derive(Debug, Clone)]
pub struct Scanner {
    /// Bytes of the current frame that were announced but not yet seen.
    skip: usize,
    /// Largest frame accepted, in bytes (length field).
    max_len: usize,
}

/// A part of a frame, as the scanner reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece<'a> {
    /// The beginning of a frame.
    Start {
        /// The message type.
        tag: u8,
        /// Size of the whole frame, header included.
        total: usize,
        /// The bytes of the frame present now, header included.
        bytes: &'a [u8],
        /// Bytes of the frame still to come.
        rest: usize,
    },
    /// A later part of the frame started earlier.
    More {
        /// The bytes.
        bytes: &'a [u8],
        /// Bytes of the frame still to come.
        rest: usize,
    },
}

/// Where a scan stops when the callback breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// After the current piece: it is part of what may be relayed.
    After,
    /// Before the frame that the current `Start` piece begins: it stays in
    /// the buffer, and the next scan sees it again.
    Before,
}

/// Outcome of one [`Scanner::scan`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scanned {
    /// Bytes at the front of the buffer that may be relayed now. The rest is
    /// the start of a frame the scanner must see more of.
    pub relay_upto: usize,
    /// How the callback stopped the scan, if it did.
    pub stopped: Option<Stop>,
}

impl Scanner {
    /// A scanner that rejects frames longer than `max_len` bytes.
    pub fn new(max_len: usize) -> Self {
        Scanner { skip: 0, max_len }
    }

    /// The largest frame accepted.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// True when the scanner is between frames.
    pub fn at_boundary(&self) -> bool {
        self.skip == 0
    }

    /// Scans `buf` from its start; `buf` must begin where the previous scan's
    /// `relay_upto` ended.
    ///
    /// `on_piece` sees every frame: a [`Piece::Start`] when its header
    /// arrives, then [`Piece::More`] for the parts that arrive later. Frames
    /// for which `whole(tag, total)` is true are reported only once complete,
    /// in a single `Start` piece. The callback may return `Break` to stop
    /// after the current piece or before the frame it starts.
    pub fn scan(
        &mut self,
        buf: &[u8],
        whole: impl Fn(u8, usize) -> bool,
        mut on_piece: impl FnMut(Piece<'_>) -> ControlFlow<Stop>,
    ) -> Result<Scanned, ProtocolError> {
        let mut pos = 0;
        if self.skip > 0 {
            let n = self.skip.min(buf.len());
            self.skip -= n;
            pos = n;
            let flow = on_piece(Piece::More {
                bytes: &buf[..n],
                rest: self.skip,
            });
            if let ControlFlow::Break(stop) = flow {
                return Ok(Scanned {
                    relay_upto: pos,
                    stopped: Some(stop),
                });
            }
        }
        while self.skip == 0 {
            let Some((tag, total)) = Frame::peek_header(&buf[pos..], self.max_len)? else {
                break;
            };
            let available = buf.len() - pos;
            if available < total && whole(tag, total) {
                break;
            }
            let n = total.min(available);
            let bytes = &buf[pos..pos + n];
            pos += n;
            self.skip = total - n;
            let flow = on_piece(Piece::Start {
                tag,
                total,
                bytes,
                rest: self.skip,
            });
            match flow {
                ControlFlow::Continue(()) => {}
                ControlFlow::Break(Stop::After) => {
                    return Ok(Scanned {
                        relay_upto: pos,
                        stopped: Some(Stop::After),
                    })
                }
                ControlFlow::Break(Stop::Before) => {
                    self.skip = 0;
                    return Ok(Scanned {
                        relay_upto: pos - n,
                        stopped: Some(Stop::Before),
                    });
                }
            }
        }
        Ok(Scanned {
            relay_upto: pos,
            stopped: None,
        })
    }
}

/// The body of a complete frame given as a `Start` piece (header removed).
pub fn body_of(bytes: &[u8]) -> &[u8] {
    bytes.get(HEADER_LEN..).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use rand::{Rng, SeedableRng};

    use crate::FrameWriter;

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        let mut w = FrameWriter::tagged(&mut out, tag);
        w.bytes(body);
        w.finish();
        out.to_vec()
    }

    /// Feeds `stream` to a scanner in the given chunk sizes, relaying like
    /// the proxy does, and returns (tags seen, bodies of `Z` frames, bytes
    /// relayed).
    fn run(stream: &[u8], chunks: &[usize]) -> (Vec<u8>, Vec<Vec<u8>>, Vec<u8>) {
        let mut scanner = Scanner::new(1 << 20);
        let mut pending = Vec::new();
        let mut relayed = Vec::new();
        let mut tags = Vec::new();
        let mut bodies = Vec::new();
        let mut offset = 0;
        for &size in chunks.iter().chain(std::iter::repeat(&7)) {
            if offset >= stream.len() {
                break;
            }
            let end = (offset + size).min(stream.len());
            pending.extend_from_slice(&stream[offset..end]);
            offset = end;
            let scanned = scanner
                .scan(
                    &pending,
                    |t, _| t == b'Z',
                    |piece| {
                        if let Piece::Start {
                            tag, bytes, rest, ..
                        } = piece
                        {
                            tags.push(tag);
                            if tag == b'Z' {
                                assert_eq!(rest, 0);
                                bodies.push(body_of(bytes).to_vec());
                            }
                        }
                        ControlFlow::Continue(())
                    },
                )
                .unwrap();
            relayed.extend(pending.drain(..scanned.relay_upto));
        }
        (tags, bodies, relayed)
    }

    #[test]
    fn relays_everything_and_sees_each_frame_once_whatever_the_chunking() {
        let mut stream = Vec::new();
        stream.extend(frame(b'T', b"rowdesc"));
        stream.extend(frame(b'D', &vec![9u8; 5000]));
        stream.extend(frame(b'C', b"SELECT 1\0"));
        stream.extend(frame(b'Z', b"I"));
        stream.extend(frame(b'D', b""));
        stream.extend(frame(b'Z', b"T"));
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..200 {
            let chunks: Vec<usize> = (0..64).map(|_| rng.gen_range(1..40)).collect();
            let (tags, bodies, relayed) = run(&stream, &chunks);
            assert_eq!(tags, b"TDCZDZ");
            assert_eq!(bodies, vec![b"I".to_vec(), b"T".to_vec()]);
            assert_eq!(relayed, stream);
        }
    }

    #[test]
    fn pieces_of_a_frame_add_up_to_the_frame() {
        let stream = frame(b'D', &[5u8; 3000]);
        let mut scanner = Scanner::new(1 << 20);
        let mut seen = Vec::new();
        for chunk in stream.chunks(700) {
            let scanned = scanner
                .scan(
                    chunk,
                    |_, _| false,
                    |piece| {
                        match piece {
                            Piece::Start { bytes, .. } | Piece::More { bytes, .. } => {
                                seen.extend_from_slice(bytes)
                            }
                        }
                        ControlFlow::Continue(())
                    },
                )
                .unwrap();
            assert_eq!(scanned.relay_upto, chunk.len());
        }
        assert_eq!(seen, stream);
    }

    #[test]
    fn large_frames_are_relayed_before_they_are_complete() {
        let stream = frame(b'd', &vec![1u8; 100_000]);
        let mut scanner = Scanner::new(1 << 20);
        let scanned = scanner
            .scan(&stream[..1000], |_, _| false, |_| ControlFlow::Continue(()))
            .unwrap();
        assert_eq!(scanned.relay_upto, 1000);
        assert!(!scanner.at_boundary());
    }

    #[test]
    fn break_stops_after_the_frame() {
        let mut stream = frame(b'Q', b"select 1\0");
        stream.extend(frame(b'X', b""));
        stream.extend(frame(b'Q', b"select 2\0"));
        let mut scanner = Scanner::new(1 << 20);
        let scanned = scanner
            .scan(
                &stream,
                |_, _| true,
                |piece| match piece {
                    Piece::Start { tag: b'X', .. } => ControlFlow::Break(Stop::After),
                    _ => ControlFlow::Continue(()),
                },
            )
            .unwrap();
        assert_eq!(scanned.stopped, Some(Stop::After));
        assert_eq!(scanned.relay_upto, 14 + 5);
    }

    #[test]
    fn stop_before_leaves_the_frame_for_the_next_scan() {
        let mut stream = frame(b'D', b"row");
        stream.extend(frame(b'E', b"SFATAL\0\0"));
        let mut scanner = Scanner::new(1 << 20);
        let scanned = scanner
            .scan(
                &stream,
                |_, _| true,
                |piece| match piece {
                    Piece::Start { tag: b'E', .. } => ControlFlow::Break(Stop::Before),
                    _ => ControlFlow::Continue(()),
                },
            )
            .unwrap();
        assert_eq!(scanned.stopped, Some(Stop::Before));
        assert_eq!(scanned.relay_upto, 8);
        assert!(scanner.at_boundary());
    }

    #[test]
    fn a_bad_length_is_an_error() {
        let mut scanner = Scanner::new(1 << 20);
        let err = scanner
            .scan(b"Q\0\0\0\x01", |_, _| false, |_| ControlFlow::Continue(()))
            .unwrap_err();
        assert!(matches!(err, ProtocolError::LengthTooSmall { .. }));
    }
}
