//! The behaviour every [`MetaStore`] implementation must show. Run [`run`] against a
//! fresh, empty store; it panics with a description of the first difference.

use super::MetaStore;

/// Checks `store` (which must be empty) against the `MetaStore` contract.
pub fn run(store: &dyn MetaStore) {
    missing_keys_read_as_none(store);
    put_get_delete(store);
    trees_are_independent(store);
    scan_prefix_is_ordered_and_bounded(store);
    batches_apply_every_operation(store);
    batches_are_atomic_in_order(store);
    flush_succeeds(store);
}

fn missing_keys_read_as_none(store: &dyn MetaStore) {
    assert_eq!(store.get("missing", b"k").unwrap(), None, "missing tree");
    store.put("t0", b"present", b"1").unwrap();
    assert_eq!(store.get("t0", b"absent").unwrap(), None, "missing key");
    store.delete("t0", b"absent").unwrap();
}

fn put_get_delete(store: &dyn MetaStore) {
    store.put("t1", b"k", b"v1").unwrap();
    assert_eq!(store.get("t1", b"k").unwrap(), Some(b"v1".to_vec()));
    store.put("t1", b"k", b"v2").unwrap();
    assert_eq!(
        store.get("t1", b"k").unwrap(),
        Some(b"v2".to_vec()),
        "overwrite"
    );
    store.put("t1", b"", b"empty key").unwrap();
    assert_eq!(store.get("t1", b"").unwrap(), Some(b"empty key".to_vec()));
    store.put("t1", b"empty value", b"").unwrap();
    assert_eq!(store.get("t1", b"empty value").unwrap(), Some(Vec::new()));
    store.delete("t1", b"k").unwrap();
    assert_eq!(store.get("t1", b"k").unwrap(), None, "deleted");
}

fn trees_are_independent(store: &dyn MetaStore) {
    store.put("t2a", b"k", b"a").unwrap();
    store.put("t2b", b"k", b"b").unwrap();
    assert_eq!(store.get("t2a", b"k").unwrap(), Some(b"a".to_vec()));
    assert_eq!(store.get("t2b", b"k").unwrap(), Some(b"b".to_vec()));
    store.delete("t2a", b"k").unwrap();
    assert_eq!(store.get("t2b", b"k").unwrap(), Some(b"b".to_vec()));
    assert!(store.scan_prefix("t2a", b"").unwrap().is_empty());
}

fn scan_prefix_is_ordered_and_bounded(store: &dyn MetaStore) {
    for key in [&b"b/2"[..], b"a/1", b"b/10", b"b/1", b"c", b"b", b"b/\xff"] {
        store.put("t3", key, key).unwrap();
    }
    let keys: Vec<Vec<u8>> = store
        .scan_prefix("t3", b"b/")
        .unwrap()
        .into_iter()
        .map(|(k, v)| {
            assert_eq!(k, v, "scan returns each key's own value");
            k
        })
        .collect();
    assert_eq!(
        keys,
        vec![
            b"b/1".to_vec(),
            b"b/10".to_vec(),
            b"b/2".to_vec(),
            b"b/\xff".to_vec()
        ],
        "bytewise order, only the prefix"
    );
    assert_eq!(
        store.scan_prefix("t3", b"").unwrap().len(),
        7,
        "empty prefix scans the tree"
    );
    assert!(store.scan_prefix("t3", b"z").unwrap().is_empty());
}

fn batches_apply_every_operation(store: &dyn MetaStore) {
    store.put("t4a", b"gone", b"x").unwrap();
    store
        .apply_batch(vec![
            ("t4a", b"k1".to_vec(), Some(b"v1".to_vec())),
            ("t4b", b"k2".to_vec(), Some(b"v2".to_vec())),
            ("t4a", b"gone".to_vec(), None),
        ])
        .unwrap();
    assert_eq!(store.get("t4a", b"k1").unwrap(), Some(b"v1".to_vec()));
    assert_eq!(store.get("t4b", b"k2").unwrap(), Some(b"v2".to_vec()));
    assert_eq!(store.get("t4a", b"gone").unwrap(), None);
    store.apply_batch(Vec::new()).unwrap();
}

fn batches_are_atomic_in_order(store: &dyn MetaStore) {
    store
        .apply_batch(vec![
            ("t5", b"k".to_vec(), Some(b"first".to_vec())),
            ("t5", b"k".to_vec(), Some(b"second".to_vec())),
            ("t5", b"d".to_vec(), Some(b"x".to_vec())),
            ("t5", b"d".to_vec(), None),
        ])
        .unwrap();
    assert_eq!(
        store.get("t5", b"k").unwrap(),
        Some(b"second".to_vec()),
        "later write wins"
    );
    assert_eq!(store.get("t5", b"d").unwrap(), None, "later delete wins");
}

fn flush_succeeds(store: &dyn MetaStore) {
    store.put("t6", b"k", b"v").unwrap();
    store.flush().unwrap();
    assert_eq!(store.get("t6", b"k").unwrap(), Some(b"v".to_vec()));
}
