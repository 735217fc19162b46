//! One dataset, two servers: what `hongbao-host up` wrote in a state
//! directory, `spin up --state-dir` on the same directory serves, and the
//! packet's opening goes on there (Spin's SQLite table and counter
//! encoding, as the host keeps them). Needs a Spin binary (`SPIN_BIN`, or
//! `spin` on PATH); skipped with one line without one.

mod common;

use common::*;

async fn open(api: &mut Api, id: &str, user: &str) -> serde_json::Value {
    let grabbed = api.grab(id, user).await;
    assert_eq!(grabbed.status, 200, "{:?}", grabbed.json());
    let ticket = grabbed.json()["ticket"].as_str().unwrap().to_owned();
    let opened = api.open(id, user, &ticket).await;
    assert_eq!(opened.status, 200, "{:?}", opened.json());
    opened.json()["claim"].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn spin_serves_and_continues_the_hosts_dataset() {
    let Some(bin) = spin_binary_or_skip() else {
        return;
    };
    let dir = TempDir::new("one-dataset").unwrap();
    let spec = HostSpec::app().durable(&dir.0);
    let (id, bob) = {
        let mut host = HostProcess::start(&spec);
        let mut api = Api::new(host.addr);
        let id = api.paid_packet("alice", "lucky", 1_000, 3).await;
        let bob = open(&mut api, &id, "bob").await;
        assert!(host.stop().success());
        (id, bob)
    };
    let spin = spin_up(&bin, &spec, None);
    let mut api = Api::new(spin.addr);
    let view = api.query(&id, "alice").await.json();
    assert_eq!((view["status"].as_str(), view["claims"][0].clone()), (Some("active"), bob.clone()));
    let again = api.grab(&id, "bob").await;
    assert_eq!((again.status, again.json()["claim"].clone()), (409, bob.clone()), "bob's claim is known");
    let carol = open(&mut api, &id, "carol").await;
    let dave = open(&mut api, &id, "dave").await;
    let view = api.query(&id, "alice").await.json();
    assert_eq!(view["status"], "exhausted");
    let sum: u64 = [&bob, &carol, &dave].iter().map(|c| c["amount_fen"].as_u64().unwrap()).sum();
    assert_eq!(sum, 1_000);
    let settled = api.admin("POST", "/v1/admin/settle").await.json();
    assert_eq!(settled["credited_fen"].as_u64(), Some(1_000), "{settled}");
}
