//! Named slices: the accounts moved together. A slice's query is run once, when the slice is
//! created (or re-evaluated on request); its members are kept.

use serde::Serialize;
use sqlx::{Any, Transaction};
use tandem_event::now_millis;

use super::accounts::insert;
use super::Store;
use crate::{Error, Result, State};

/// A slice and how it was chosen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Slice {
    pub name: String,
    /// The SQL that chose its members, or none for a list.
    pub query: Option<String>,
    pub created_at: i64,
    pub members: Vec<String>,
}

pub(super) async fn add_member(
    tx: &mut Transaction<'_, Any>,
    slice: &str,
    account: &str,
) -> Result<bool> {
    let added = sqlx::query(
        "INSERT INTO migration_slice_members (slice, account, added_at) VALUES ($1, $2, $3) \
         ON CONFLICT (slice, account) DO NOTHING",
    )
    .bind(slice)
    .bind(account)
    .bind(now_millis())
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(added == 1)
}

/// Makes the slice new accounts are enrolled into, if it does not exist yet (a list).
pub(super) async fn ensure_slice(tx: &mut Transaction<'_, Any>, name: &str) -> Result<()> {
    sqlx::query(
        "INSERT INTO migration_slices (name, query, created_at) VALUES ($1, NULL, $2) \
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .bind(now_millis())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Makes the accounts members of the slice, recording those the migration does not know yet
/// as pending; returns the accounts that were not members.
async fn enlist(
    tx: &mut Transaction<'_, Any>,
    name: &str,
    accounts: &[String],
    actor: &str,
) -> Result<Vec<String>> {
    let mut added = Vec::new();
    let reason = format!("member of slice {name}");
    for account in accounts {
        insert(tx, account, State::Pending, actor, &reason).await?;
        if add_member(tx, name, account).await? {
            added.push(account.clone());
        }
    }
    Ok(added)
}

impl Store {
    /// Creates a slice with its members; members the migration does not know yet are recorded
    /// as pending.
    pub async fn create_slice(
        &self,
        name: &str,
        query: Option<&str>,
        members: &[String],
        actor: &str,
    ) -> Result<Slice> {
        let mut tx = self.pool.begin().await?;
        let created = sqlx::query(
            "INSERT INTO migration_slices (name, query, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(query)
        .bind(now_millis())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if created == 0 {
            return Err(Error::SliceExists(name.to_owned()));
        }
        enlist(&mut tx, name, members, actor).await?;
        tx.commit().await?;
        self.slice(name).await
    }

    /// Adds accounts to a slice (a re-evaluated query); returns those that were not members.
    pub async fn add_members(
        &self,
        name: &str,
        accounts: &[String],
        actor: &str,
    ) -> Result<Vec<String>> {
        self.slice(name).await?;
        let mut tx = self.pool.begin().await?;
        let added = enlist(&mut tx, name, accounts, actor).await?;
        tx.commit().await?;
        Ok(added)
    }

    pub async fn slice(&self, name: &str) -> Result<Slice> {
        let row: Option<(String, Option<String>, i64)> =
            sqlx::query_as("SELECT name, query, created_at FROM migration_slices WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        let (name, query, created_at) = row.ok_or_else(|| Error::UnknownSlice(name.to_owned()))?;
        let members = self.members(&name).await?;
        Ok(Slice {
            name,
            query,
            created_at,
            members,
        })
    }

    /// The accounts of a slice, by name (none for a slice that does not exist yet).
    pub async fn members(&self, name: &str) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT account FROM migration_slice_members WHERE slice = $1 ORDER BY account",
        )
        .bind(name)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(a,)| a).collect())
    }

    /// Every slice, by name.
    pub async fn slices(&self) -> Result<Vec<Slice>> {
        let names: Vec<(String,)> =
            sqlx::query_as("SELECT name FROM migration_slices ORDER BY name")
                .fetch_all(&self.pool)
                .await?;
        let mut slices = Vec::with_capacity(names.len());
        for (name,) in names {
            slices.push(self.slice(&name).await?);
        }
        Ok(slices)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::store;
    use super::*;

    #[tokio::test]
    async fn a_slice_keeps_its_members() -> Result<()> {
        let (_dir, store) = store().await;
        let slice = store
            .create_slice(
                "eu",
                Some("SELECT id FROM accounts"),
                &["a".into(), "b".into()],
                "ops",
            )
            .await?;
        assert_eq!(slice.members, ["a", "b"]);
        assert_eq!(
            store.account("a").await?.map(|a| a.state),
            Some(State::Pending)
        );
        assert!(matches!(
            store.create_slice("eu", None, &[], "ops").await,
            Err(Error::SliceExists(_))
        ));
        let added = store
            .add_members("eu", &["b".into(), "c".into()], "ops")
            .await?;
        assert_eq!(added, ["c"]);
        assert!(matches!(
            store.slice("us").await,
            Err(Error::UnknownSlice(_))
        ));
        assert_eq!(store.slices().await?.len(), 1);
        Ok(())
    }
}
