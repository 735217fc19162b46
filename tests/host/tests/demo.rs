//! The demo page (functions/demo) on the real host: nothing of it answers
//! unless `demo_mode` is true; in demo mode its files and two endpoints serve,
//! and two members send and open a packet in headless Chromium
//! (tests/browser/demo.mjs), with the money checked through the API after.

mod common;

use common::*;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;

fn demo_host() -> HostProcess {
    HostProcess::start(&HostSpec::app().var("demo_mode", "true").arg("--tick").arg("1"))
}

#[tokio::test(flavor = "multi_thread")]
async fn without_demo_mode_the_demo_is_not_there() {
    let host = HostProcess::start(&HostSpec::app());
    let mut api = Api::new(host.addr);
    let alice = bearer("alice");
    let id = api.paid_packet("alice", "fixed", 200, 2).await;
    for (method, path, body) in [
        ("GET", "/demo", String::new()),
        ("GET", "/demo/", String::new()),
        ("GET", "/demo/app.js", String::new()),
        ("PUT", "/demo/", String::new()),
        ("POST", "/v1/demo/sign-in", json!({"name": "mallory"}).to_string()),
        ("GET", "/v1/demo/sign-in", String::new()),
        ("POST", "/v1/demo/payment", json!({"packet_id": id}).to_string()),
    ] {
        let reply = api.client.send(method, path, &[("authorization", &alice)], body).await.unwrap();
        assert_eq!((reply.status, reply.code().as_deref()), (404, Some("not_found")), "{method} {path}");
        assert!(!String::from_utf8_lossy(&reply.body).contains("token"), "{method} {path}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn in_demo_mode_the_page_and_its_endpoints_serve() {
    let host = demo_host();
    let mut api = Api::new(host.addr);
    for (path, content_type) in [
        ("/demo", "text/html"),
        ("/demo/", "text/html"),
        ("/demo/index.html", "text/html"),
        ("/demo/app.js", "text/javascript"),
        ("/demo/style.css", "text/css"),
    ] {
        let reply = api.client.get(path, &[]).await.unwrap();
        assert_eq!(reply.status, 200, "{path}");
        assert!(reply.header("content-type").unwrap().starts_with(content_type), "{path}");
        assert!(!reply.body.is_empty(), "{path}");
    }
    let page = api.client.get("/demo/", &[]).await.unwrap();
    assert!(String::from_utf8_lossy(&page.body).contains("/demo/app.js"), "the page loads its script by absolute path");
    assert_eq!(api.client.get("/demo/missing.js", &[]).await.unwrap().code().as_deref(), Some("not_found"));
    let post = api.client.post("/demo/", &[], "").await.unwrap();
    assert_eq!((post.status, post.code().as_deref()), (405, Some("method_not_allowed")));

    let signed = api.client.post("/v1/demo/sign-in", &[], json!({"name": "alice"}).to_string()).await.unwrap();
    assert_eq!(signed.status, 200);
    let token = format!("Bearer {}", signed.json()["token"].as_str().unwrap());
    let body = json!({"request_id": "demo", "kind": "lucky", "total_fen": 300, "count": 3}).to_string();
    let wrapped = api.client.post("/v1/packets", &[("authorization", &token)], body).await.unwrap();
    assert_eq!(wrapped.status, 201);
    let id = wrapped.json()["id"].as_str().unwrap().to_owned();
    let pay = json!({"packet_id": id}).to_string();
    let by_bob = api.client.post("/v1/demo/payment", &[("authorization", &bearer("bob"))], pay.clone()).await.unwrap();
    assert_eq!((by_bob.status, by_bob.code().as_deref()), (422, Some("invalid_argument")));
    let paid = api.client.post("/v1/demo/payment", &[("authorization", &token)], pay).await.unwrap();
    assert_eq!((paid.status, paid.json()["status"].as_str()), (200, Some("active")));
    let Outcome::Claimed(claim) = grab_and_open(&mut api, &id, "bob").await.unwrap().0 else { panic!("bob claims") };
    assert!(claim["amount_fen"].as_u64().unwrap() >= 1);
}

/// Where the browser test's tools are, or why they are not there.
fn browser_tools() -> Result<(PathBuf, PathBuf), String> {
    let chromium = PathBuf::from(std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()));
    let script = root().join("tests/browser/demo.mjs");
    if !chromium.exists() {
        return Err(format!("no Chromium at {} (apt-get install chromium)", chromium.display()));
    }
    if Command::new("node").arg("--version").output().is_err() {
        return Err("no node (apt-get install nodejs npm)".into());
    }
    if !root().join("tests/browser/node_modules/playwright-core").exists() {
        return Err("no playwright-core (npm ci --prefix tests/browser)".into());
    }
    Ok((chromium, script))
}

/// The browser test's tools, or `None` after saying why they are missing.
/// Only where `HONGBAO_REQUIRE_BROWSER` is set (.ci/run sets it after
/// installing them) is a missing tool a failure, so a skip hides nothing there.
fn browser_tools_or_skip() -> Option<(PathBuf, PathBuf)> {
    match browser_tools() {
        Ok(tools) => Some(tools),
        Err(why) if std::env::var_os("HONGBAO_REQUIRE_BROWSER").is_none() => {
            eprintln!("skipped the browser test: {why}");
            None
        }
        Err(why) => panic!("the browser test is required but cannot run: {why}"),
    }
}

/// Runs tests/browser/demo.mjs against the app at `addr` (the packet's
/// whole story in two browser contexts), then checks through the API that
/// what the page showed is what the service holds, wallets included.
async fn members_send_and_open_in_chromium(addr: std::net::SocketAddr, (chromium, script): (PathBuf, PathBuf)) {
    let shots = TempDir::new("demo-shot").unwrap();
    let screenshot = match std::env::var_os("HONGBAO_WRITE_SCREENSHOT") {
        Some(_) => {
            std::fs::create_dir_all(root().join("docs")).unwrap();
            root().join("docs/demo.png")
        }
        None => shots.0.join("demo.png"),
    };
    let base = format!("http://{addr}");
    let run = tokio::task::spawn_blocking({
        let screenshot = screenshot.clone();
        move || Command::new("node").arg(&script).arg(&base).arg(&screenshot).env("CHROMIUM", &chromium).output()
    });
    let output = run.await.unwrap().expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "demo.mjs failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert_png(&screenshot);

    let shown: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let id = shown["packet"].as_str().unwrap();
    let mut api = Api::new(addr);
    let packet = api.query(id, "alice").await.json();
    assert_eq!((packet["status"].as_str(), packet["total_fen"].as_u64()), (Some("exhausted"), Some(888)));
    let claims = |list: &serde_json::Value| {
        let mut claims: Vec<(String, u64)> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["user"].as_str().unwrap().to_owned(), c["amount_fen"].as_u64().unwrap()))
            .collect();
        claims.sort();
        claims
    };
    let held = claims(&packet["claims"]);
    assert_eq!(held, claims(&shown["claims"]));
    assert_eq!(held.iter().map(|(_, fen)| fen).sum::<u64>(), 888);
    for (user, fen) in &held {
        assert_eq!(api.user("wallet", user).await.json()["balance_fen"].as_u64(), Some(*fen), "{user}'s wallet");
    }
    let report = api.admin("GET", &format!("/v1/admin/reconcile?day={}", id_day(id))).await.json();
    assert_eq!(report["mismatches"], json!([]), "{report}");
}

/// The browser test, on the project's host (its `--tick` settles).
#[tokio::test(flavor = "multi_thread")]
async fn two_members_send_and_open_a_packet_in_chromium() {
    let Some(tools) = browser_tools_or_skip() else { return };
    let host = demo_host();
    members_send_and_open_in_chromium(host.addr, tools).await;
}

/// The demo unchanged on real Spin, with its SQLite store and with Redis: its
/// files and endpoints, then the same browser test. Spin has no ticker, so a
/// task here plays the operator's settle cron.
#[tokio::test(flavor = "multi_thread")]
async fn the_demo_works_on_spin_up() {
    for target in [Target::Spin, Target::SpinRedis] {
        let Some(spin) = target.start(HostSpec::app().var("demo_mode", "true")) else { return };
        let mut api = Api::new(spin.addr);
        let page = api.client.get("/demo/", &[]).await.unwrap();
        assert_eq!(page.status, 200, "{target:?}");
        assert!(page.header("content-type").unwrap().starts_with("text/html"), "{target:?}");
        let signed = api.client.post("/v1/demo/sign-in", &[], json!({"name": "carol"}).to_string()).await.unwrap();
        assert_eq!((signed.status, signed.json()["user"].as_str()), (200, Some("carol")), "{target:?}");
        let Some(tools) = browser_tools_or_skip() else { return };
        let addr = spin.addr;
        let settle = tokio::spawn(async move {
            let mut api = Api::new(addr);
            loop {
                api.admin("POST", "/v1/admin/settle").await;
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        });
        members_send_and_open_in_chromium(spin.addr, tools).await;
        settle.abort();
    }
}

/// The packet id's creation day, as reconcile takes it.
fn id_day(id: &str) -> String {
    hongbao::PacketId::parse(id).unwrap().day().to_string()
}

fn assert_png(path: &Path) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 10_000, "{} is a real screenshot", path.display());
}
