//! Which SETs take new packets (issue 27): drained SETs get no new packet,
//! restored ones do again, the log keeps every change, an instance's cached
//! copy is used only while fresh, and concurrent changes never lose one.

mod common;

use common::*;
use hongbao::alloc::Kind;
use hongbao::id::SETS;
use hongbao::ops::PlacementCache;
use hongbao::store::memory::MemoryStore;
use hongbao::{Config, Error, PacketId};
use std::collections::BTreeSet;

/// The SETs of `n` packets wrapped at `now` (by `sender`, one request id each).
fn sets_of_new_packets(store: &MemoryStore, now: hongbao::Timestamp, sender: &str, n: u32) -> BTreeSet<u32> {
    let config = config();
    (0..n)
        .map(|i| {
            let (status, view) = svc(store, &config, now)
                .wrap(sender, &wrap_request(&format!("r-{}-{i}", now.0), Kind::Lucky, 100, 2))
                .unwrap();
            assert_eq!(status, 201);
            PacketId::parse(&view.id).unwrap().set()
        })
        .collect()
}

#[test]
fn drained_sets_get_no_new_packet_until_restored() {
    let store = MemoryStore::new();
    let config = config();
    let mut admin = svc(&store, &config, T0);
    for set in [2, 5, 8] {
        admin.change_placement(set, false).unwrap();
    }
    let view = admin.placement().unwrap();
    assert_eq!((view.open_sets, view.drained_sets.clone()), (vec![0, 1, 3, 4, 6, 7, 9], vec![2, 5, 8]));
    // Many users, so the unpaid limit never bites.
    let sets: BTreeSet<u32> = (0..10).flat_map(|u| sets_of_new_packets(&store, T0, &format!("s{u}"), 15)).collect();
    assert_eq!(sets, [0, 1, 3, 4, 6, 7, 9].into(), "every open SET, no drained one");

    let restored = svc(&store, &config, T0.plus_seconds(60)).change_placement(5, true).unwrap();
    assert_eq!(restored.drained_sets, vec![2, 8]);
    let sets: BTreeSet<u32> =
        (0..10).flat_map(|u| sets_of_new_packets(&store, T0.plus_seconds(60), &format!("t{u}"), 15)).collect();
    assert!(sets.contains(&5) && !sets.contains(&2) && !sets.contains(&8), "{sets:?}");

    let log: Vec<(u32, &str, String)> = restored.log.iter().map(|c| (c.set, c.state, c.at.clone())).collect();
    let at = |s: i64| T0.plus_seconds(s).to_rfc3339();
    assert_eq!(
        log,
        vec![(2, "drained", at(0)), (5, "drained", at(0)), (8, "drained", at(0)), (5, "open", at(60))],
        "every change, in order"
    );
}

#[test]
fn a_change_to_the_state_a_set_is_in_logs_nothing_and_bad_changes_are_refused() {
    let store = MemoryStore::new();
    let config = config();
    let mut admin = svc(&store, &config, T0);
    assert_eq!(admin.change_placement(4, true).unwrap().log.len(), 0, "SET 4 is open already");
    admin.change_placement(4, false).unwrap();
    assert_eq!(admin.change_placement(4, false).unwrap().log.len(), 1, "a retried drain logs nothing more");
    assert!(matches!(admin.change_placement(SETS, false), Err(Error::InvalidArgument(_))));
    for set in (0..SETS).filter(|&s| s != 4 && s != 9) {
        admin.change_placement(set, false).unwrap();
    }
    let last = admin.change_placement(9, false);
    assert!(matches!(&last, Err(Error::InvalidArgument(m)) if m.contains("last open SET")), "{last:?}");
    let view = admin.placement().unwrap();
    assert_eq!((view.open_sets, view.log.len()), (vec![9], 9));
    assert_eq!(sets_of_new_packets(&store, T0, "alice", 5), [9].into());
}

/// The SET of a packet wrapped by user `u{i}` through an instance's cache.
fn wrap_at(store: &MemoryStore, config: &Config, cache: &PlacementCache, now: hongbao::Timestamp, i: u32) -> u32 {
    let mut s = svc(store, config, now).with_placement_cache(cache);
    let request = wrap_request(&format!("c-{}-{i}", now.0), Kind::Lucky, 100, 2);
    PacketId::parse(&s.wrap(&format!("u{i}"), &request).unwrap().1.id).unwrap().set()
}

#[test]
fn an_instance_places_by_its_cached_copy_only_while_it_is_fresh() {
    let store = MemoryStore::new();
    let mut config = config();
    config.placement_cache_seconds = 5;
    let cache = PlacementCache::new();
    wrap_at(&store, &config, &cache, T0, 0); // reads the log: every SET open
    let mut admin = svc(&store, &config, T0.plus_seconds(1));
    for set in 1..SETS {
        admin.change_placement(set, false).unwrap();
    }
    // Within the cache's 5 seconds the instance still places everywhere...
    let stale: BTreeSet<u32> = (0..40).map(|i| wrap_at(&store, &config, &cache, T0.plus_seconds(4), i)).collect();
    assert!(stale.len() > 1, "{stale:?}");
    // ...and from then on only into the one open SET.
    let fresh: BTreeSet<u32> = (0..40).map(|i| wrap_at(&store, &config, &cache, T0.plus_seconds(5), 100 + i)).collect();
    assert_eq!(fresh, [0].into());
    // Without a cache (or with 0 seconds) every wrap reads the log.
    svc(&store, &config, T0.plus_seconds(6)).change_placement(3, true).unwrap();
    config.placement_cache_seconds = 0;
    let now: BTreeSet<u32> = (0..40).map(|i| wrap_at(&store, &config, &cache, T0.plus_seconds(6), 200 + i)).collect();
    assert_eq!(now, [0, 3].into());
}

#[test]
fn concurrent_drains_and_restores_of_many_sets_never_lose_one() {
    let store = MemoryStore::new();
    let config = config();
    // Thread `set` drains and restores its SET in turn, 21 changes for an
    // even SET (ending drained), 22 for an odd one (ending open).
    std::thread::scope(|scope| {
        for set in 0..8u32 {
            let (store, config) = (&store, &config);
            scope.spawn(move || {
                for flip in 0..21 + set % 2 {
                    let open = flip % 2 == 1;
                    let mut s = hongbao::Service::new(store, config, sleeping_env(T0, u64::from(set * 100 + flip)));
                    s.change_placement(set, open).unwrap();
                }
            });
        }
    });
    let view = svc(&store, &config, T0).placement().unwrap();
    assert_eq!(view.drained_sets, vec![0, 2, 4, 6]);
    assert_eq!(view.open_sets, vec![1, 3, 5, 7, 8, 9]);
    // Every change is in the log.
    for set in 0..8 {
        assert_eq!(view.log.iter().filter(|c| c.set == set).count(), 21 + set as usize % 2, "SET {set}");
    }
}
