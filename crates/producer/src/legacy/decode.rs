//! Rows as each database returns them, turned into event values.

use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{Column as _, Row as _, TypeInfo as _, ValueRef as _};
use tandem_event::{Row, Value};

use crate::Result;

/// SQLite types values, not columns: decode each value by its own storage class.
pub(super) fn decode_sqlite(row: &SqliteRow) -> Result<Row, sqlx::Error> {
    let mut out = Row::new();
    for (i, column) in row.columns().iter().enumerate() {
        let raw = row.try_get_raw(i)?;
        let declared = column.type_info().name().to_ascii_uppercase();
        let value = if raw.is_null() {
            Value::Null
        } else {
            let storage = raw.type_info().name().to_ascii_uppercase();
            match storage.as_str() {
                "INTEGER" if declared.contains("BOOL") => {
                    Value::Boolean(row.try_get_unchecked::<i64, _>(i)? != 0)
                }
                "INTEGER" | "BOOLEAN" => Value::Long(row.try_get_unchecked(i)?),
                "REAL" => Value::Double(row.try_get_unchecked(i)?),
                "BLOB" => Value::Bytes(row.try_get_unchecked(i)?),
                _ => Value::String(row.try_get_unchecked(i)?),
            }
        };
        out.insert(column.name().to_owned(), value);
    }
    Ok(out)
}

pub(super) fn decode_postgres(row: &PgRow) -> Result<Row, sqlx::Error> {
    let mut out = Row::new();
    for (i, column) in row.columns().iter().enumerate() {
        let value = if row.try_get_raw(i)?.is_null() {
            Value::Null
        } else {
            match column.type_info().name() {
                "BOOL" => Value::Boolean(row.try_get(i)?),
                "INT2" => Value::Long(row.try_get::<i16, _>(i)?.into()),
                "INT4" => Value::Long(row.try_get::<i32, _>(i)?.into()),
                "INT8" => Value::Long(row.try_get(i)?),
                "FLOAT4" => Value::Double(row.try_get::<f32, _>(i)?.into()),
                "FLOAT8" => Value::Double(row.try_get(i)?),
                "BYTEA" => Value::Bytes(row.try_get(i)?),
                _ => Value::String(row.try_get_unchecked(i)?),
            }
        };
        out.insert(column.name().to_owned(), value);
    }
    Ok(out)
}
