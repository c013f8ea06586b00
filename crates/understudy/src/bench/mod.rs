//! `understudy bench`: pgbench directly, through understudy and through
//! PgBouncer, side by side in one run.

use crate::cli::BenchArgs;
use crate::CliError;

/// Runs the benchmark described by `args`.
pub async fn run(args: BenchArgs) -> Result<(), CliError> {
    let _ = args;
    Err(CliError::Other("the benchmark is not available in this build".into()))
}
