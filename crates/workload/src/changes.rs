//! The workload's random changes: creates, updates of roots, of embedded children and of
//! references, children moving between parents, and deletes.

use rand::rngs::StdRng;
use rand::Rng;
use tandem_event::now_millis;

use super::LegacyDb;

impl LegacyDb {
    /// One random change to an account: creates, updates of roots, of embedded children and of
    /// references, children moving between parents, and deletes that keep the data consistent
    /// (nothing deleted is still referred to).
    pub async fn random_change(&self, account: &str, rng: &mut StdRng) -> sqlx::Result<Change> {
        let now = now_millis();
        let mut deleted = None;
        let update = |sql: &'static str| sqlx::query(sql).bind(account).bind(now);
        let written = match rng.random_range(0..13) {
            0 => {
                self.add_contact(account, rng).await?;
                2
            }
            1 => {
                self.add_property(account, rng).await?;
                1
            }
            2 => {
                self.add_tenancy(account, rng).await?;
                1
            }
            3 | 4 => match self.random_id("contacts", account, rng).await? {
                Some(id) => update(
                    "UPDATE contacts SET email = 'updated.' || id || '.' || $2 || '@example.com', \
                     changed_at_ms = $2 WHERE account_id = $1 AND id = $3",
                )
                .bind(id)
                .execute(&self.pool)
                .await?
                .rows_affected(),
                None => 0,
            },
            5 => match self.random_id("contact_phones", account, rng).await? {
                Some(id) => update(
                    "UPDATE contact_phones SET number = '+44 161 496 ' || ($2 % 10000), \
                     changed_at_ms = $2 WHERE account_id = $1 AND id = $3",
                )
                .bind(id)
                .execute(&self.pool)
                .await?
                .rows_affected(),
                None => 0,
            },
            6 => match self.random_id("properties", account, rng).await? {
                Some(id) => update(
                    "UPDATE properties SET bedrooms = (bedrooms % 5) + 1, changed_at_ms = $2 \
                     WHERE account_id = $1 AND id = $3",
                )
                .bind(id)
                .execute(&self.pool)
                .await?
                .rows_affected(),
                None => 0,
            },
            7 => match (
                self.random_id("properties", account, rng).await?,
                self.random_id("contacts", account, rng).await?,
            ) {
                // A reference changes: the property gets another owner.
                (Some(property), Some(owner)) => update(
                    "UPDATE properties SET owner_contact_id = $3, changed_at_ms = $2 \
                     WHERE account_id = $1 AND id = $4",
                )
                .bind(owner)
                .bind(property)
                .execute(&self.pool)
                .await?
                .rows_affected(),
                _ => 0,
            },
            9 => match self.random_id("contact_phones", account, rng).await? {
                // A phone is removed from its contact.
                Some(id) => {
                    sqlx::query("DELETE FROM contact_phones WHERE account_id = $1 AND id = $2")
                        .bind(account)
                        .bind(id)
                        .execute(&self.pool)
                        .await?
                        .rows_affected()
                }
                None => 0,
            },
            10 => match (
                self.random_id("contact_phones", account, rng).await?,
                self.random_id("contacts", account, rng).await?,
            ) {
                // A phone moves to another contact: both contacts' documents change.
                (Some(phone), Some(contact)) => update(
                    "UPDATE contact_phones SET contact_id = $3, changed_at_ms = $2 \
                     WHERE account_id = $1 AND id = $4",
                )
                .bind(contact)
                .bind(phone)
                .execute(&self.pool)
                .await?
                .rows_affected(),
                _ => 0,
            },
            11 => match self.random_id("tenancies", account, rng).await? {
                // A tenancy ends: its lease and its charge go.
                Some(id) => {
                    let rows =
                        sqlx::query("DELETE FROM tenancies WHERE account_id = $1 AND id = $2")
                            .bind(account)
                            .bind(id)
                            .execute(&self.pool)
                            .await?
                            .rows_affected();
                    deleted = (rows > 0).then_some(("leases", id));
                    rows
                }
                None => 0,
            },
            12 => match self.random_id("properties", account, rng).await? {
                // A property is sold off, unless a tenancy still refers to it.
                Some(id) => {
                    let rows = sqlx::query(
                        "DELETE FROM properties WHERE account_id = $1 AND id = $2 AND NOT EXISTS \
                         (SELECT 1 FROM tenancies t WHERE t.account_id = $1 AND t.property_id = $2)",
                    )
                    .bind(account)
                    .bind(id)
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                    deleted = (rows > 0).then_some(("properties", id));
                    rows
                }
                None => 0,
            },
            _ => match self.random_id("tenancies", account, rng).await? {
                Some(id) => sqlx::query(
                    "UPDATE tenancies SET rent = $3, changed_at_ms = $2 \
                     WHERE account_id = $1 AND id = $4",
                )
                .bind(account)
                .bind(now)
                .bind(rent(rng))
                .bind(id)
                .execute(&self.pool)
                .await?
                .rows_affected(),
                None => 0,
            },
        };
        Ok(Change {
            rows: written,
            deleted: deleted.map(|(collection, id)| Deleted {
                collection,
                id: id.to_string(),
                at_ms: now,
            }),
        })
    }
}

/// What one random change did.
#[derive(Debug, Clone, Default)]
pub struct Change {
    /// Rows written.
    pub rows: u64,
    /// The root row it deleted, if it deleted one.
    pub deleted: Option<Deleted>,
}

/// A deleted root row, named by the cloud collection its resource lives in and its key.
#[derive(Debug, Clone)]
pub struct Deleted {
    pub collection: &'static str,
    pub id: String,
    /// When the legacy row was deleted (epoch millis).
    pub at_ms: i64,
}

/// An exact decimal rent as text, e.g. "1234.50".
pub(crate) fn rent(rng: &mut StdRng) -> String {
    format!(
        "{}.{:02}",
        rng.random_range(400..3000),
        rng.random_range(0..100)
    )
}
