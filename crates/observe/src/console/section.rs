//! A console page fed by another capability: the binary registers one [`Section`] per
//! capability it wires (things, functions, streams, delivery streams, ...), and the console
//! lists each in its navigation and draws its [`Table`]. A new capability's page (the defender's
//! violations, say) is one more `Section` registered in `serve`: nothing in the console changes.

use std::future::Future;
use std::pin::Pin;

use serde::Serialize;
use serde_json::Value as Json;

/// What a section answers: a few headline figures and a table.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Table {
    /// Headline figures (`("things", 10000)`), shown as cards.
    pub summary: Vec<(String, Json)>,
    /// The table's column titles.
    pub columns: Vec<String>,
    /// Its rows, one value per column (at most [`MAX_ROWS`]; `summary` says how many exist).
    pub rows: Vec<Vec<Json>>,
}

/// Most rows a section returns: a console page stays small with 100,000 things.
pub const MAX_ROWS: usize = 200;

/// The future a section's read returns.
pub type SectionFuture<'a> = Pin<Box<dyn Future<Output = Result<Table, String>> + Send + 'a>>;

/// One page of the console, read from a capability.
pub trait Section: Send + Sync + 'static {
    /// Its id in URLs (`things`), lowercase letters and `-`.
    fn id(&self) -> &'static str;
    /// Its title in the navigation.
    fn title(&self) -> &'static str;
    /// Reads the current figures and rows.
    fn read(&self) -> SectionFuture<'_>;
}
