//! Whether a running node's shared memory is mapped in huge pages, read from its
//! postmaster's `/proc/<pid>/smaps`.
//!
//! Every backend maps PostgreSQL's main shared memory segment (the shared buffers and
//! the tables sized by `max_connections`). In 4 kB pages, a backend's exit unmaps what
//! it touched one page-table entry at a time: 8–10 ms of CPU per backend with the
//! default 128 MB of shared buffers, measured with `perf` on the embedded cluster. A
//! switchover's fast shutdown waits for every backend to exit while the clients are
//! held, so that cost is paid in the pause, once per open connection. In 2 MB pages
//! the same exits cost a fraction of it. PostgreSQL takes huge pages only when the
//! kernel has them reserved (`huge_pages = try`, its default, and `vm.nr_hugepages`),
//! which is the machine owner's decision; this module tells whether it happened.

use std::path::Path;

/// How a node's main shared memory segment is mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedMemoryPages {
    /// Huge pages (a kernel page size above 4 kB).
    Huge,
    /// Base pages (4 kB).
    Base,
}

/// The mapping of the main shared memory segment of the postmaster `pid`; None when
/// its `smaps` cannot be read (process gone, or no permission) or shows no shared
/// mapping.
pub fn of_process(pid: i32) -> Option<SharedMemoryPages> {
    let smaps = std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("smaps"));
    smaps.ok().as_deref().and_then(main_segment_pages)
}

/// Reads `smaps` text: the largest shared mapping (`s` in the permissions) is the main
/// segment; the small System V segment and the dynamic shared memory segments are
/// ignored by that rule.
fn main_segment_pages(smaps: &str) -> Option<SharedMemoryPages> {
    let main = mappings(smaps)
        .into_iter()
        .filter(|m| m.shared)
        .filter_map(|m| Some((m.size_kb?, m.page_kb?)))
        .max_by_key(|(size_kb, _)| *size_kb);
    main.map(|(_, page_kb)| {
        if page_kb > 4 {
            SharedMemoryPages::Huge
        } else {
            SharedMemoryPages::Base
        }
    })
}

/// The mappings of `smaps` text, with the fields read here.
fn mappings(smaps: &str) -> Vec<Mapping> {
    let mut out: Vec<Mapping> = Vec::new();
    for line in smaps.lines() {
        if let Some(perms) = mapping_header(line) {
            out.push(Mapping {
                shared: perms.as_bytes().get(3) == Some(&b's'),
                size_kb: None,
                page_kb: None,
            });
        } else if let Some(mapping) = out.last_mut() {
            if let Some(kb) = field_kb(line, "Size:") {
                mapping.size_kb = Some(kb);
            } else if let Some(kb) = field_kb(line, "KernelPageSize:") {
                mapping.page_kb = Some(kb);
            }
        }
    }
    out
}

/// One mapping of `smaps`, as far as it has been read.
struct Mapping {
    shared: bool,
    size_kb: Option<u64>,
    page_kb: Option<u64>,
}

/// The permissions of a mapping's header line (`start-end perms offset dev inode
/// [path]`); None for a field line.
fn mapping_header(line: &str) -> Option<&str> {
    let mut words = line.split_whitespace();
    let range = words.next()?;
    let (start, end) = range.split_once('-')?;
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex(start) || !hex(end) {
        return None;
    }
    words.next()
}

/// The value of a `Name:   123 kB` field line.
fn field_kb(line: &str, name: &str) -> Option<u64> {
    let rest = line.strip_prefix(name)?;
    rest.trim().strip_suffix("kB")?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The three shared mappings of a PostgreSQL 15 postmaster, main segment first.
    fn postmaster_smaps(main_path: &str, main_page_kb: u64) -> String {
        format!(
            "55d1c0a00000-55d1c0b2b000 r--p 00000000 fd:00 1837 /usr/lib/postgresql/15/bin/postgres\n\
             Size:               1196 kB\n\
             KernelPageSize:        4 kB\n\
             MMUPageSize:           4 kB\n\
             Rss:                 980 kB\n\
             7f4d8f200000-7f4d98c00000 rw-s 00000000 00:11 4079410                    {main_path}\n\
             Size:             157696 kB\n\
             KernelPageSize:     {main_page_kb} kB\n\
             MMUPageSize:        {main_page_kb} kB\n\
             Rss:                   0 kB\n\
             VmFlags: rd wr sh mr mw me ms\n\
             7f4d98d61000-7f4d98d72000 rw-s 00000000 00:1b 64334                      /dev/shm/PostgreSQL.3454876328\n\
             Size:                 68 kB\n\
             KernelPageSize:        4 kB\n\
             MMUPageSize:           4 kB\n\
             Rss:                   4 kB\n\
             7f4d9c488000-7f4d9c489000 rw-s 00000000 00:01 5079913                    /SYSV00a4a3ec (deleted)\n\
             Size:                  4 kB\n\
             KernelPageSize:        4 kB\n\
             MMUPageSize:           4 kB\n\
             Rss:                   4 kB\n\
             7ffd5a1e0000-7ffd5a201000 rw-p 00000000 00:00 0                          [stack]\n\
             Size:                132 kB\n\
             KernelPageSize:        4 kB\n"
        )
    }

    #[test]
    fn a_main_segment_in_2_mb_pages_is_huge() {
        let smaps = postmaster_smaps("/anon_hugepage (deleted)", 2048);
        assert_eq!(main_segment_pages(&smaps), Some(SharedMemoryPages::Huge));
    }

    #[test]
    fn a_main_segment_in_4_kb_pages_is_base_even_beside_other_shared_mappings() {
        let smaps = postmaster_smaps("/dev/zero (deleted)", 4);
        assert_eq!(main_segment_pages(&smaps), Some(SharedMemoryPages::Base));
    }

    #[test]
    fn no_shared_mapping_or_no_text_tells_nothing() {
        let private = "7ffd5a1e0000-7ffd5a201000 rw-p 00000000 00:00 0 [stack]\n\
                       Size:                132 kB\n\
                       KernelPageSize:        4 kB\n";
        assert_eq!(main_segment_pages(private), None);
        assert_eq!(main_segment_pages(""), None);
    }

    #[test]
    fn a_process_that_does_not_exist_tells_nothing() {
        // Pids are below 2^22 on Linux.
        assert_eq!(of_process(i32::MAX), None);
    }

    #[test]
    fn every_mapping_of_a_real_smaps_is_found() {
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("own smaps");
        let found = mappings(&smaps);
        // A Rust test binary maps at least its own segments, the heap, the stack and
        // the C library.
        assert!(found.len() > 5, "{} mappings", found.len());
        assert!(found
            .iter()
            .all(|m| m.size_kb.is_some() && m.page_kb.is_some()));
    }
}
