//! What a repair changes in the store: the ID map entry of a document it created, updated or
//! deleted, and the mirror's image of the legacy row it repaired from.

use tandem_event::Row;

use super::mirror::Mapped;
use super::Store;
use crate::Result;

impl Store {
    /// Records `resource`/`root_key` of `target` as mapped to a cloud document (with the hash
    /// of what was written), or as having none.
    pub async fn set_cloud_id(
        &self,
        target: &str,
        (resource, root_key): (&str, &str),
        mapped: Option<&Mapped>,
    ) -> Result<()> {
        match mapped {
            Some((cloud_id, hash)) => {
                sqlx::query(
                    "INSERT INTO consumer_id_map (account, resource, root_key, cloud_id, doc_hash) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (account, resource, root_key) \
                     DO UPDATE SET cloud_id = excluded.cloud_id, doc_hash = excluded.doc_hash",
                )
                .bind(target)
                .bind(resource)
                .bind(root_key)
                .bind(cloud_id)
                .bind(hash)
                .execute(&self.pool)
                .await?;
            }
            None => {
                sqlx::query(
                    "DELETE FROM consumer_id_map \
                     WHERE account = $1 AND resource = $2 AND root_key = $3",
                )
                .bind(target)
                .bind(resource)
                .bind(root_key)
                .execute(&self.pool)
                .await?;
            }
        }
        Ok(())
    }

    /// Puts the legacy row's current image in the mirror, keeping the `(epoch, version)` the
    /// mirror has for it (none yet: the lowest), so later events order as before.
    pub async fn set_mirror_data(
        &self,
        target: &str,
        (entity_type, entity_id): (&str, &str),
        data: &Row,
    ) -> Result<()> {
        let data = serde_json::to_string(data)?;
        sqlx::query(
            "INSERT INTO consumer_mirror (account, entity_type, entity_id, epoch, version, data) \
             VALUES ($1, $2, $3, 0, 0, $4) ON CONFLICT (account, entity_type, entity_id) \
             DO UPDATE SET data = excluded.data",
        )
        .bind(target)
        .bind(entity_type)
        .bind(entity_id)
        .bind(data)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
