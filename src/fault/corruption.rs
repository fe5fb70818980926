//! corruption: a committed change that ruins the data, written through the primary like any client write. There
//! is nothing to revert (a replica copies it within milliseconds): a drill's point-in-time restore to before it
//! is what undoes it, and the journal entry says so.

use super::journal::Journal;
use super::{journal_before_applying, ActiveFault};
use crate::component::postgres;
use crate::scenario::CorruptionKind;
use crate::targets::local::LocalStack;
use crate::targets::TargetError;

pub async fn apply(
    stack: &LocalStack,
    journal: &Journal,
    how: CorruptionKind,
) -> Result<ActiveFault, TargetError> {
    let component = match how {
        CorruptionKind::Flushall => "redis",
        CorruptionKind::DeletePoints => "qdrant",
        _ => "postgres",
    };
    let description = format!("corrupt the {component} ledger ({})", how.name());
    // No revert steps: the committed change is the fault; recovery restores it away.
    let entry = journal_before_applying(journal, "corruption", &description, Vec::new())?;
    let requested_at = std::time::Instant::now();
    let member = match how {
        CorruptionKind::Flushall => {
            crate::component::redis::flushall(&stack.redis_endpoints()).await
        }
        CorruptionKind::DeletePoints => {
            crate::component::qdrant::delete_all_points(&stack.qdrant_endpoints()).await
        }
        _ => postgres::corrupt(&stack.postgres_endpoints(), how).await,
    }
    .map_err(TargetError::Fault)?;
    // Effective when the commit was acknowledged.
    Ok(ActiveFault::effective_now(
        entry,
        description,
        vec![format!("{component} on {member}")],
        requested_at,
    ))
}
