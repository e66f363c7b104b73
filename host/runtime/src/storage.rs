//! Contract key-value storage: the trait the node implements over its store,
//! an in-memory implementation, and the per-call overlay that makes a call's
//! writes all-or-nothing.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;

/// Storage errors raised by a [`ContractStorage`] backend.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    #[error("storage backend failed: {0}")]
    Backend(String),
}

/// One write of a finished call, in the order the contract made it (later
/// writes to the same key were folded in already, so each key appears once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageWrite {
    pub key: String,
    /// `None` deletes the key.
    pub value: Option<Vec<u8>>,
}

/// Key-value storage private to each service, persisted by the node.
///
/// Every method takes the service name as namespace: a contract only ever
/// sees its own keys, and its data survives an upgrade of the contract (a new
/// version of the same `<service>.wasm` file; no other file can announce the
/// name). The node implements this over its redb
/// store; [`MemoryStorage`] serves tests.
///
/// The runtime only reads through this trait. A call's writes come back as
/// data, in [`Outcome::writes`](crate::Outcome::writes), once `purchase`
/// returned `ok`: the node hands them to the core with the run's outcome,
/// and they land in the same redb transaction as its "ran (requester,
/// State)" marker, so a run's effects are applied exactly once even across
/// a crash.
pub trait ContractStorage: Send + Sync {
    fn get(&self, service: &str, key: &str) -> Result<Option<Vec<u8>>, StorageError>;
    /// Keys of `service` starting with `prefix`, sorted, at most `limit`.
    fn keys(&self, service: &str, prefix: &str, limit: usize) -> Result<Vec<String>, StorageError>;
    /// Bytes held by `service`: sum of key and value lengths. The runtime
    /// enforces the per-service quota against it.
    fn usage_bytes(&self, service: &str) -> Result<u64, StorageError>;
}

/// In-memory [`ContractStorage`] for tests and tools.
#[derive(Default)]
pub struct MemoryStorage {
    services: Mutex<BTreeMap<String, BTreeMap<String, Vec<u8>>>>,
}

impl fmt::Debug for MemoryStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStorage").finish_non_exhaustive()
    }
}

impl MemoryStorage {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies a call's writes ([`Outcome::writes`](crate::Outcome::writes)),
    /// as the node's store does with the run's outcome.
    pub fn apply(&self, service: &str, writes: &[StorageWrite]) {
        let mut guard = self.lock();
        let map = guard.entry(service.to_string()).or_default();
        for write in writes {
            match &write.value {
                Some(value) => {
                    map.insert(write.key.clone(), value.clone());
                }
                None => {
                    map.remove(&write.key);
                }
            }
        }
    }

    /// A copy of everything `service` stored.
    pub fn dump(&self, service: &str) -> BTreeMap<String, Vec<u8>> {
        self.lock().get(service).cloned().unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, BTreeMap<String, Vec<u8>>>> {
        // A panic while holding this lock cannot leave the map half-updated
        // (apply builds nothing in place before inserting), so a poisoned
        // lock still holds consistent data.
        self.services.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ContractStorage for MemoryStorage {
    fn get(&self, service: &str, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.lock().get(service).and_then(|m| m.get(key).cloned()))
    }

    fn keys(&self, service: &str, prefix: &str, limit: usize) -> Result<Vec<String>, StorageError> {
        let guard = self.lock();
        let Some(map) = guard.get(service) else {
            return Ok(Vec::new());
        };
        Ok(map
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, _)| k.clone())
            .collect())
    }

    fn usage_bytes(&self, service: &str) -> Result<u64, StorageError> {
        Ok(self
            .lock()
            .get(service)
            .map_or(0, |m| m.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum()))
    }
}

/// Why a storage call stopped the contract.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StorageQuotaError {
    #[error("key of {len} bytes exceeds the {max} byte limit")]
    KeyTooLarge { len: usize, max: usize },
    #[error("value of {len} bytes exceeds the {max} byte limit")]
    ValueTooLarge { len: usize, max: usize },
    #[error("more than {max} writes in one call")]
    TooManyWrites { max: usize },
    #[error("service would hold {bytes} bytes, quota is {max}")]
    QuotaExceeded { bytes: u64, max: u64 },
    #[error("storage is not available while the node reads the contract's info")]
    NotAvailable,
}

/// Limits the overlay enforces.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StorageLimits {
    pub key_bytes_max: usize,
    pub value_bytes_max: usize,
    pub writes_max: usize,
    pub service_bytes_max: u64,
}

/// A call's view of its service's storage: reads fall through to the
/// backend, writes stay here until the call succeeds.
pub(crate) struct Overlay {
    backend: std::sync::Arc<dyn ContractStorage>,
    service: String,
    limits: StorageLimits,
    writes: BTreeMap<String, Option<Vec<u8>>>,
    /// Order in which keys were first written, so commits replay in order.
    order: Vec<String>,
    n_writes: usize,
    /// Bytes the service holds including this call's writes; loaded lazily
    /// at the first write because most calls never write.
    bytes_used: Option<u64>,
}

/// Errors of overlay operations: a quota violation or a backend failure.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum OverlayError {
    #[error(transparent)]
    Quota(#[from] StorageQuotaError),
    #[error(transparent)]
    Backend(#[from] StorageError),
}

impl Overlay {
    pub fn new(backend: std::sync::Arc<dyn ContractStorage>, service: String, limits: StorageLimits) -> Self {
        Overlay {
            backend,
            service,
            limits,
            writes: BTreeMap::new(),
            order: Vec::new(),
            n_writes: 0,
            bytes_used: None,
        }
    }

    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, OverlayError> {
        if let Some(pending) = self.writes.get(key) {
            return Ok(pending.clone());
        }
        Ok(self.backend.get(&self.service, key)?)
    }

    pub fn set(&mut self, key: String, value: Option<Vec<u8>>) -> Result<(), OverlayError> {
        if key.len() > self.limits.key_bytes_max {
            return Err(StorageQuotaError::KeyTooLarge {
                len: key.len(),
                max: self.limits.key_bytes_max,
            }
            .into());
        }
        if let Some(value) = &value
            && value.len() > self.limits.value_bytes_max
        {
            return Err(StorageQuotaError::ValueTooLarge {
                len: value.len(),
                max: self.limits.value_bytes_max,
            }
            .into());
        }
        self.n_writes += 1;
        if self.n_writes > self.limits.writes_max {
            return Err(StorageQuotaError::TooManyWrites {
                max: self.limits.writes_max,
            }
            .into());
        }
        let used = match self.bytes_used {
            Some(used) => used,
            None => self.backend.usage_bytes(&self.service)?,
        };
        let old_len = self.get(&key)?.map_or(0, |v| (key.len() + v.len()) as u64);
        let new_len = value.as_ref().map_or(0, |v| (key.len() + v.len()) as u64);
        let bytes = used.saturating_sub(old_len) + new_len;
        // Deleting or shrinking is always allowed so a full service can
        // clean up after itself.
        if new_len > old_len && bytes > self.limits.service_bytes_max {
            return Err(StorageQuotaError::QuotaExceeded {
                bytes,
                max: self.limits.service_bytes_max,
            }
            .into());
        }
        self.bytes_used = Some(bytes);
        if !self.writes.contains_key(&key) {
            self.order.push(key.clone());
        }
        self.writes.insert(key, value);
        Ok(())
    }

    pub fn keys(&self, prefix: &str, limit: usize) -> Result<Vec<String>, OverlayError> {
        // Ask for enough keys that deletions in this call cannot leave fewer
        // than `limit` visible ones.
        let deleted = self.writes.values().filter(|v| v.is_none()).count();
        let mut keys: std::collections::BTreeSet<String> = self
            .backend
            .keys(&self.service, prefix, limit.saturating_add(deleted))?
            .into_iter()
            .collect();
        for (key, value) in self.writes.range(prefix.to_string()..) {
            if !key.starts_with(prefix) {
                break;
            }
            match value {
                Some(_) => keys.insert(key.clone()),
                None => keys.remove(key),
            };
        }
        Ok(keys.into_iter().take(limit).collect())
    }

    /// The writes to commit, in first-write order.
    pub fn into_writes(mut self) -> Vec<StorageWrite> {
        self.order
            .into_iter()
            .map(|key| {
                let value = self.writes.remove(&key).flatten();
                StorageWrite { key, value }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn limits() -> StorageLimits {
        StorageLimits {
            key_bytes_max: 8,
            value_bytes_max: 16,
            writes_max: 4,
            service_bytes_max: 40,
        }
    }

    #[test]
    fn overlay_reads_its_own_writes_and_commits_in_order() {
        let backend = Arc::new(MemoryStorage::new());
        backend.apply(
            "svc",
            &[StorageWrite {
                key: "a".into(),
                value: Some(b"1".to_vec()),
            }],
        );
        let mut overlay = Overlay::new(backend.clone(), "svc".into(), limits());
        overlay.set("b".into(), Some(b"2".to_vec())).unwrap();
        overlay.set("a".into(), None).unwrap();
        assert_eq!(overlay.get("a").unwrap(), None);
        assert_eq!(overlay.get("b").unwrap(), Some(b"2".to_vec()));
        assert_eq!(overlay.keys("", 10).unwrap(), vec!["b".to_string()]);
        // Nothing reached the backend yet.
        assert_eq!(backend.get("svc", "a").unwrap(), Some(b"1".to_vec()));
        let writes = overlay.into_writes();
        assert_eq!(writes[0].key, "b");
        assert_eq!(writes[1].value, None);
    }

    #[test]
    fn overlay_enforces_sizes_and_quota() {
        let backend = Arc::new(MemoryStorage::new());
        let mut overlay = Overlay::new(backend, "svc".into(), limits());
        assert!(matches!(
            overlay.set("123456789".into(), Some(vec![])),
            Err(OverlayError::Quota(StorageQuotaError::KeyTooLarge { .. }))
        ));
        assert!(matches!(
            overlay.set("k".into(), Some(vec![0; 17])),
            Err(OverlayError::Quota(StorageQuotaError::ValueTooLarge { .. }))
        ));
        overlay.set("k1".into(), Some(vec![0; 16])).unwrap();
        overlay.set("k2".into(), Some(vec![0; 16])).unwrap();
        assert!(matches!(
            overlay.set("k3".into(), Some(vec![0; 16])),
            Err(OverlayError::Quota(StorageQuotaError::QuotaExceeded {
                bytes: 54,
                max: 40
            }))
        ));
        // Shrinking stays allowed when full; the fifth write hits the count.
        overlay.set("k1".into(), None).unwrap();
        assert!(matches!(
            overlay.set("k4".into(), None),
            Err(OverlayError::Quota(StorageQuotaError::TooManyWrites { max: 4 }))
        ));
    }
}
