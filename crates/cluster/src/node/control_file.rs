//! Reading a data directory's control file (`global/pg_control`) directly, for
//! the two facts `pg_controldata` prints first: the cluster state and the latest
//! checkpoint.
//!
//! A switchover polls them every few milliseconds while the old primary shuts
//! down, to promote the standby as soon as the shutdown checkpoint is written —
//! the last record a primary writes — instead of when the old postmaster has
//! exited, which is tens of milliseconds later (its WAL senders wait for the
//! standby's last acknowledgement, then every process exits). Spawning
//! `pg_controldata` for each poll would cost more than that wait, so the file is
//! read here.
//!
//! Only the leading fields are read, whose layout has been the same since
//! PostgreSQL 11: `system_identifier` (8 bytes), `pg_control_version` (4),
//! `catalog_version_no` (4), `state` (4, then 4 of padding), `time` (8),
//! `checkPoint` (8). The server writes the file in place, so a read can race
//! with a write: the file's CRC-32C, stored right after the fields it covers,
//! is checked, and a read that does not match is no answer rather than a wrong
//! one.

use std::path::Path;

/// `pg_control_version` of PostgreSQL 11, the first with this layout.
const FIRST_VERSION: u32 = 1100;
/// The server writes this many bytes; the fields and their CRC come first.
const MAX_STRUCT_LEN: usize = 512;
/// `DB_SHUTDOWNED`: shut down cleanly as a primary.
const DB_SHUTDOWNED: u32 = 1;

/// What the control file says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlFile {
    /// `state` (`DBState`: 1 is "shut down", 6 "in production", …).
    pub state: u32,
    /// `checkPoint`: where the latest checkpoint record starts.
    pub checkpoint_lsn: u64,
}

impl ControlFile {
    /// The latest checkpoint, when the server shut down cleanly as a primary.
    pub fn shutdown_checkpoint(&self) -> Option<u64> {
        (self.state == DB_SHUTDOWNED).then_some(self.checkpoint_lsn)
    }
}

/// Reads `global/pg_control` of `data_dir`; None when it cannot be read, has
/// another layout, or was caught in the middle of a write.
pub fn read(data_dir: &Path) -> Option<ControlFile> {
    parse(&std::fs::read(data_dir.join("global").join("pg_control")).ok()?)
}

/// Parses the bytes of a control file (see the module documentation).
pub fn parse(bytes: &[u8]) -> Option<ControlFile> {
    let u32_at = |at: usize| Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?));
    let u64_at = |at: usize| Some(u64::from_ne_bytes(bytes.get(at..at + 8)?.try_into().ok()?));
    if u32_at(8)? < FIRST_VERSION || !crc_matches(bytes) {
        return None;
    }
    Some(ControlFile {
        state: u32_at(16)?,
        checkpoint_lsn: u64_at(32)?,
    })
}

/// True when some 4-byte-aligned position holds the CRC-32C of every byte
/// before it: where the CRC sits depends on the version (it follows the last
/// field), and a chance match among the ≈ 120 positions is a 1 in 35 million
/// event.
fn crc_matches(bytes: &[u8]) -> bool {
    let end = bytes.len().min(MAX_STRUCT_LEN);
    (40..end.saturating_sub(3)).step_by(4).any(|at| {
        let stored = u32::from_ne_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        crc32c::crc32c(&bytes[..at]) == stored
    })
}

#[cfg(test)]
mod tests {
    use super::{parse, DB_SHUTDOWNED};

    /// An 8 kB control file with the CRC at `crc_at`.
    fn file(version: u32, state: u32, checkpoint: u64, crc_at: usize) -> Vec<u8> {
        let mut bytes = vec![0u8; 8192];
        bytes[..8].copy_from_slice(&0x1234_5678_9abc_def0u64.to_ne_bytes());
        bytes[8..12].copy_from_slice(&version.to_ne_bytes());
        bytes[16..20].copy_from_slice(&state.to_ne_bytes());
        bytes[32..40].copy_from_slice(&checkpoint.to_ne_bytes());
        for (i, b) in bytes[40..crc_at].iter_mut().enumerate() {
            *b = (i * 7) as u8;
        }
        let crc = crc32c::crc32c(&bytes[..crc_at]);
        bytes[crc_at..crc_at + 4].copy_from_slice(&crc.to_ne_bytes());
        bytes
    }

    #[test]
    fn state_and_checkpoint_are_read_when_the_crc_matches() {
        let control = parse(&file(1300, DB_SHUTDOWNED, 0x0300_0060, 288)).expect("parsed");
        assert_eq!(control.shutdown_checkpoint(), Some(0x0300_0060));
        let running = parse(&file(1700, 6, 0x0400_0028, 296)).expect("parsed");
        assert_eq!(running.state, 6);
        assert_eq!(running.shutdown_checkpoint(), None);
    }

    #[test]
    fn a_torn_or_foreign_file_is_no_answer() {
        let mut torn = file(1300, DB_SHUTDOWNED, 0x0300_0060, 288);
        torn[33] ^= 1;
        assert_eq!(parse(&torn), None, "a byte changed after the CRC was taken");
        assert_eq!(
            parse(&file(1002, DB_SHUTDOWNED, 1, 288)),
            None,
            "PostgreSQL 10"
        );
        assert_eq!(parse(&[0u8; 20]), None, "too short");
    }
}
