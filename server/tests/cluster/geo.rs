//! Geofencing tenants across nodes: Phoenix clients on different nodes create fences, move objects
//! (one at a time and in batches), subscribe and query; the owner is killed.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};

use super::{metric, node, redis_url, Client};
use crate::common::{Proc, Schema};

const TENANT: &str = "geo:cluster-city";

fn at(id: &str, lat: f64, lon: f64, ts: u64) -> Value {
    json!({ "id": id, "lat": lat, "lon": lon, "ts": ts })
}

fn is(fence: &str, object: &str, event: &str) -> impl Fn(&Value) -> bool {
    let (fence, object, event) = (fence.to_owned(), object.to_owned(), event.to_owned());
    move |e| e["fence"] == fence.as_str() && e["object"] == object.as_str() && e["event"] == event.as_str()
}

#[test]
#[ignore = "needs Redis and PostgreSQL: scripts/test starts them"]
fn cluster_geofence_events_and_live_queries_reach_members_on_every_node_and_survive_the_owner() {
    let schema = Schema::new("clustergeo");
    let (store, redis) = (schema.store_url(), redis_url());
    let mut nodes: Vec<Option<Proc>> = (0..3).map(|_| Some(node(&store, &redis, "127.0.0.1:0"))).collect();
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.as_ref().unwrap().addr).collect();

    // The first join makes its node the owner; the others join through it.
    let mut watcher = Client::join_with(addrs[0], "watcher", TENANT, &json!({ "fences": "*" }));
    let mut admin = Client::join(addrs[1], "admin", TENANT);
    let mut driver = Client::join(addrs[2], "driver", TENANT);
    assert_eq!(driver.joined, json!({ "fences": 0, "objects": 0 }), "counts from the owner");
    let owner = (0..3).find(|i| metric(addrs[*i], "rusher_cluster_leases_held") == 1).expect("an owner");
    assert_eq!(addrs.iter().map(|a| metric(*a, "rusher_cluster_leases_held")).sum::<u64>(), 1);

    let fence = json!({ "id": "depot", "geometry": { "type": "Point", "coordinates": [2.35, 48.85], "radius": 200 } });
    let created = admin.push_ok("fence_create", &fence);
    assert_eq!(created["fence"]["id"], "depot");
    let dup = admin.push("fence_create", &fence);
    assert_eq!(admin.reply(&dup)["status"], "error", "the owner's checks answer a forwarded push");
    // Subscriptions stay on the member's node.
    driver.push_ok("subscribe", &json!({ "fences": ["depot"] }));

    // A batch from a third node: outside, then inside, then further inside.
    let batch = json!({ "updates": [
        at("truck", 48.86, 2.35, 1_000), at("truck", 48.8501, 2.3501, 2_000),
        at("truck", 48.8502, 2.3502, 3_000), at("bad", 95.0, 0.0, 1_000),
    ] });
    let r = driver.push_ok("locations", &batch);
    assert_eq!((r["applied"].as_u64(), r["ignored"].as_u64()), (Some(3), Some(0)), "{r}");
    assert_eq!(r["errors"][0]["index"], 3, "{r}");
    for c in [&mut watcher, &mut driver] {
        c.until("the truck entering the depot", |c| {
            c.count("geofence_event", is("depot", "truck", "enter")) == 1
        });
    }

    // A live query on the first node sees an object the admin's node moves.
    let q = watcher.push_ok("query", &json!({ "key": "near", "lat": 48.80, "lon": 2.30, "radius": 500 }));
    assert_eq!(q["objects"], json!([]));
    admin.push_ok("location", &at("van", 48.8001, 2.3001, 1_000));
    watcher.until("the van entering the live query", |c| {
        c.count("key_entered", |e| e["query"] == "near" && e["id"] == "van") == 1
    });
    let near = admin.push_ok("nearby", &json!({ "lat": 48.85, "lon": 2.35, "radius": 1000 }));
    assert_eq!(near["objects"][0]["id"], "truck", "{near}");
    let joined_late = Client::join(addrs[2], "late", TENANT);
    assert_eq!(joined_late.joined, json!({ "fences": 1, "objects": 2 }));

    for c in [&mut watcher, &mut admin, &mut driver] {
        c.settle(Duration::from_millis(300));
    }
    assert_eq!(watcher.count("geofence_event", |_| true), 1, "one event, once: {:?}", watcher.events);
    assert_eq!(driver.count("geofence_event", |_| true), 1, "one event, once: {:?}", driver.events);
    assert_eq!(admin.count("geofence_event", |_| true), 0, "the admin subscribed to nothing");

    // The owner is killed. Its members are gone; the others reach a new owner, which loads the
    // tenant: the truck is still inside (no second enter), and leaving is reported.
    drop(nodes[owner].take());
    let mut survivors: Vec<Client> =
        [(1usize, admin), (2, driver)].into_iter().filter(|(i, _)| *i != owner).map(|(_, c)| c).collect();
    if owner != 0 {
        survivors.push(watcher);
    }
    let mover = survivors.iter().position(|c| c.user != "watcher").unwrap();
    survivors[mover].push_until_ok("location", &at("truck", 48.8503, 2.3503, 4_000));
    survivors[mover].push_ok("location", &at("truck", 48.87, 2.35, 5_000));
    for c in survivors.iter_mut().filter(|c| c.user != "admin") {
        c.until("the truck leaving the depot", |c| {
            c.count("geofence_event", is("depot", "truck", "exit")) == 1
        });
        c.settle(Duration::from_millis(300));
        assert_eq!(
            c.count("geofence_event", is("depot", "truck", "enter")),
            1,
            "no second enter: {:?}",
            c.events
        );
    }
    let list = survivors[0].push_ok("fence_list", &json!({}));
    assert_eq!(list["fences"][0]["id"], "depot", "the fence is stored: {list}");
    let survivors_leases: u64 =
        (0..3).filter(|i| *i != owner).map(|i| metric(addrs[i], "rusher_cluster_leases_held")).sum();
    assert_eq!(survivors_leases, 1, "a survivor owns the tenant");
}
