//! The server's durable store: records by kind and key, written in atomic batches.
//!
//! The server keeps its whole state in memory and writes every change through the store
//! before it answers, so the store only has to load everything at start and apply batches.
//! That keeps the trait small enough for another backend (a replicated log, etcd) later.
//! Heartbeats, `agentConnected` and utilization never come here: they are in memory only.

use std::path::Path;

use rusqlite::{params, Connection};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: {source}")]
    Sqlite {
        path: String,
        source: rusqlite::Error,
    },
    #[error("store record {kind}/{key}: {source}")]
    Decode {
        kind: String,
        key: String,
        source: serde_json::Error,
    },
}

/// One change of a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    Put {
        kind: &'static str,
        key: String,
        value: String,
    },
    Delete {
        kind: &'static str,
        key: String,
    },
}

impl Write {
    pub fn put<T: serde::Serialize>(kind: &'static str, key: &str, value: &T) -> Write {
        Write::Put {
            kind,
            key: key.to_string(),
            // Records are plain structs of strings and numbers: serializing cannot fail.
            value: serde_json::to_string(value).unwrap_or_default(),
        }
    }

    pub fn delete(kind: &'static str, key: &str) -> Write {
        Write::Delete {
            kind,
            key: key.to_string(),
        }
    }
}

/// A durable map of (kind, key) to a JSON value.
pub trait Store: Send {
    /// Every record, as (kind, key, value).
    fn load(&mut self) -> Result<Vec<(String, String, String)>, StoreError>;
    /// Applies the writes all or none, durable when this returns.
    fn apply(&mut self, batch: &[Write]) -> Result<(), StoreError>;
}

/// Decodes one loaded record.
pub fn decode<T: serde::de::DeserializeOwned>(
    kind: &str,
    key: &str,
    value: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(value).map_err(|source| StoreError::Decode {
        kind: kind.to_string(),
        key: key.to_string(),
        source,
    })
}

/// SQLite in WAL mode with `synchronous=FULL`: a commit is fsynced to the WAL before the API
/// answers, so an acknowledged write survives a power cut too, not only a crash of the
/// server (NORMAL would only lose the last commits on power loss, but "durable before the
/// API answers" is the promise). Writes are rare (user actions and task state changes;
/// heartbeats stay in memory), so the fsync per commit is affordable.
pub struct SqliteStore {
    conn: Connection,
    path: String,
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let p = path.display().to_string();
        let err = |source| StoreError::Sqlite {
            path: p.clone(),
            source,
        };
        let conn = Connection::open(path).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS objects (
                kind TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
                PRIMARY KEY (kind, key)) WITHOUT ROWID;",
        )
        .map_err(err)?;
        Ok(SqliteStore { conn, path: p })
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }
}

impl Store for SqliteStore {
    fn load(&mut self) -> Result<Vec<(String, String, String)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT kind, key, value FROM objects ORDER BY kind, key")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for r in rows {
            out.push(r.map_err(|e| self.err(e))?);
        }
        Ok(out)
    }

    fn apply(&mut self, batch: &[Write]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let path = self.path.clone();
        let err = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        for w in batch {
            match w {
                Write::Put { kind, key, value } => tx.execute(
                    "INSERT OR REPLACE INTO objects (kind, key, value) VALUES (?1, ?2, ?3)",
                    params![kind, key, value],
                ),
                Write::Delete { kind, key } => tx.execute(
                    "DELETE FROM objects WHERE kind = ?1 AND key = ?2",
                    params![kind, key],
                ),
            }
            .map_err(err)?;
        }
        tx.commit().map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_survive_reopen_and_deletes_apply() {
        let dir = std::env::temp_dir().join(format!("skiff-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.db");
        {
            let mut s = SqliteStore::open(&path).unwrap();
            s.apply(&[
                Write::put("cluster", "a", &1),
                Write::put("cluster", "b", &2),
            ])
            .unwrap();
            s.apply(&[Write::delete("cluster", "a"), Write::put("task", "x", &"y")])
                .unwrap();
        }
        let mut s = SqliteStore::open(&path).unwrap();
        let all = s.load().unwrap();
        assert_eq!(
            all,
            vec![
                ("cluster".into(), "b".into(), "2".into()),
                ("task".into(), "x".into(), "\"y\"".into())
            ]
        );
        let v: u32 = decode("cluster", "b", &all[0].2).unwrap();
        assert_eq!(v, 2);
        assert!(decode::<u32>("task", "x", &all[1].2).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
