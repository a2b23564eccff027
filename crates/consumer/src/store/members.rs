//! The members of each consumer group, as they see themselves: how many partitions each holds
//! and when it last said so (see the consumer's group watchdog).

use super::Store;
use crate::Result;

impl Store {
    /// Records that `member` of `group` holds `assigned` partitions, now (by the store's
    /// clock, which every member shares); forgets members not seen for ten minutes. Returns how
    /// many members were seen within `live_for` (this one included).
    pub async fn heartbeat(
        &self,
        group: &str,
        member: &str,
        assigned: usize,
        live_for: std::time::Duration,
    ) -> Result<usize> {
        let now = self.clock.now_millis().await?;
        let live_since_ms = now - i64::try_from(live_for.as_millis()).unwrap_or(i64::MAX);
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO consumer_members (consumer_group, member, assigned, seen_at_ms) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (consumer_group, member) DO UPDATE SET \
             assigned = excluded.assigned, seen_at_ms = excluded.seen_at_ms",
        )
        .bind(group)
        .bind(member)
        .bind(i64::try_from(assigned).unwrap_or(i64::MAX))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM consumer_members WHERE consumer_group = $1 AND seen_at_ms < $2")
            .bind(group)
            .bind(now - 600_000)
            .execute(&mut *tx)
            .await?;
        let (live,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM consumer_members WHERE consumer_group = $1 AND seen_at_ms >= $2",
        )
        .bind(group)
        .bind(live_since_ms)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(usize::try_from(live).unwrap_or(1).max(1))
    }

    /// Forgets `member` of `group` (it stopped cleanly).
    pub async fn leave_group(&self, group: &str, member: &str) -> Result<()> {
        sqlx::query("DELETE FROM consumer_members WHERE consumer_group = $1 AND member = $2")
            .bind(group)
            .bind(member)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
