//! Statement analyses cached by statement text, bounded in size: when full,
//! the cache is emptied and refilled by the statements in use (cheap, and a
//! working set smaller than the bound stays cached).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::analysis::Analysis;

/// Statements kept at most.
pub const CACHE_ENTRIES: usize = 4096;
/// Statements longer than this are analysed every time, never kept.
pub const MAX_CACHED_TEXT: usize = 16 * 1024;

/// Text → analysis (`None`: the text does not parse).
#[derive(Debug, Default)]
pub struct AnalysisCache {
    entries: Mutex<HashMap<String, Option<Arc<Analysis>>>>,
}

impl AnalysisCache {
    /// The analysis of `text`.
    pub fn get(&self, text: &str) -> Option<Arc<Analysis>> {
        if let Ok(entries) = self.entries.lock() {
            if let Some(found) = entries.get(text) {
                return found.clone();
            }
        }
        let analysis = Analysis::of(text).ok().map(Arc::new);
        if text.len() <= MAX_CACHED_TEXT {
            if let Ok(mut entries) = self.entries.lock() {
                if entries.len() >= CACHE_ENTRIES {
                    entries.clear();
                }
                entries.insert(text.to_owned(), analysis.clone());
            }
        }
        analysis
    }

    /// Number of statements cached.
    pub fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
