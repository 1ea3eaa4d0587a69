//! Permission checks against a model: random roles granting random keys, ranges, prefixes and
//! from-key ranges, random users holding random roles, and random requests; `AuthState::check`
//! must answer what checking every key of a finite universe one by one answers. The universe
//! holds every boundary a grant or a request can have (strings over `a`–`c` up to three bytes,
//! each also with `"\0"` appended), so a gap in the grants always contains one of its keys and
//! the key-by-key answer is exact.

use proptest::prelude::*;
use watchkv::auth::{AuthError, AuthOp, AuthState, PermType, Permission, ROOT};

fn universe() -> Vec<Vec<u8>> {
    let mut keys = vec![Vec::new()];
    for len in 1..=3 {
        let mut next = Vec::new();
        for k in keys.iter().filter(|k| k.len() == len - 1) {
            for c in b'a'..=b'c' {
                let mut s = k.clone();
                s.push(c);
                next.push(s);
            }
        }
        keys.extend(next);
    }
    let with_nul: Vec<Vec<u8>> = keys
        .iter()
        .map(|k| {
            let mut s = k.clone();
            s.push(0);
            s
        })
        .collect();
    keys.extend(with_nul);
    keys.sort();
    keys.dedup();
    keys
}

fn short_key() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(b'a'..=b'c', 1..=3)
}

/// A range end as clients send them: none (one key), `"\0"` (from the key), or a key.
fn range_end() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![Just(Vec::new()), Just(vec![0]), short_key()]
}

fn perm_type() -> impl Strategy<Value = PermType> {
    prop_oneof![Just(PermType::Read), Just(PermType::Write), Just(PermType::ReadWrite)]
}

/// A grant the store takes: a key, and an end that is none, `"\0"` or after the key (it
/// refuses the others, as etcd 3.5.8 does).
fn permission() -> impl Strategy<Value = Permission> {
    (perm_type(), short_key(), range_end())
        .prop_filter("a grant etcd takes", |(_, key, end)| {
            !key.is_empty() && (end.is_empty() || end == &[0] || key < end)
        })
        .prop_map(|(perm_type, key, range_end)| Permission { perm_type, key, range_end })
}

/// Whether `k` lies in the interval `[key, range_end)` as etcd reads a grant or a request.
fn contains(key: &[u8], range_end: &[u8], k: &[u8]) -> bool {
    match range_end {
        [] => k == key,
        [0] => k >= key,
        end => k >= key && k < end,
    }
}

fn allows(p: PermType, wanted: PermType) -> bool {
    p == PermType::ReadWrite || p == wanted
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn checks_match_a_key_by_key_model(
        roles in prop::collection::vec(prop::collection::vec(permission(), 0..5), 1..4),
        held in prop::collection::vec(any::<bool>(), 4),
        requests in prop::collection::vec((perm_type(), short_key(), range_end()), 1..20),
    ) {
        let mut state = AuthState::default();
        let mut apply = |op| state.apply(op).map(|_| ());
        apply(AuthOp::UserAdd { name: ROOT.into(), password_hash: None }).expect("root");
        apply(AuthOp::UserGrantRole { user: ROOT.into(), role: ROOT.into() }).expect("root role");
        apply(AuthOp::UserAdd { name: "u".into(), password_hash: None }).expect("user");
        for (i, perms) in roles.iter().enumerate() {
            let role = format!("r{i}");
            apply(AuthOp::RoleAdd(role.clone())).expect("role");
            for p in perms {
                apply(AuthOp::RoleGrantPermission { role: role.clone(), perm: Some(p.clone()) }).expect("grant");
            }
            if held[i] {
                apply(AuthOp::UserGrantRole { user: "u".into(), role }).expect("hold");
            }
        }
        apply(AuthOp::Enable).expect("enable");
        // A grant of an existing key and range replaces its type, as etcd's does.
        let mut granted: Vec<Permission> = Vec::new();
        for (_, perms) in roles.iter().enumerate().filter(|(i, _)| held[*i]) {
            let mut mine: Vec<Permission> = Vec::new();
            for p in perms {
                match mine.iter_mut().find(|m| m.key == p.key && m.range_end == p.range_end) {
                    Some(m) => m.perm_type = p.perm_type,
                    None => mine.push(p.clone()),
                }
            }
            granted.extend(mine);
        }
        let universe = universe();
        for (wanted, key, end) in requests {
            // An empty or inverted range is refused by etcd's interval tree whatever the grants
            // (nothing intersects it); the key-by-key model would allow it vacuously.
            if !end.is_empty() && end != [0] && end <= key {
                continue;
            }
            let wanted_keys: Vec<&Vec<u8>> = universe.iter().filter(|k| contains(&key, &end, k)).collect();
            let model = wanted_keys.iter().all(|k| {
                granted.iter().any(|g| allows(g.perm_type, wanted) && contains(&g.key, &g.range_end, k))
            });
            let got = state.check(Some("u"), wanted, &key, &end);
            prop_assert_eq!(got.is_ok(), model, "{:?} on [{:?}, {:?}) with grants {:?}", wanted, key, end, granted);
            if !model {
                prop_assert_eq!(got, Err(AuthError::PermissionDenied));
            }
            prop_assert!(state.check(Some(ROOT), wanted, &key, &end).is_ok(), "root may do anything");
            prop_assert_eq!(state.check(None, wanted, &key, &end), Err(AuthError::UserEmpty));
        }
    }
}
