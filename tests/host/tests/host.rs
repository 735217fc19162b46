//! The host as a Spin stand-in: what it hands components (spin-* headers,
//! variables, stores), trap isolation, and checks of the app's components
//! and manifest against what Spin accepts.

mod common;

use common::*;
use hongbao::http::Endpoint;
use hongbao_host::client::Client;
use serde_json::json;
use std::collections::HashMap;

fn probe_manifest() -> std::path::PathBuf {
    root().join("tests/fixtures/probe/spin.toml")
}

fn probe() -> HostSpec {
    HostSpec {
        manifest: probe_manifest(),
        state_dir: None,
        env: vec![("SPIN_VARIABLE_SECRET".into(), "shh".into())],
        args: vec![],
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn components_get_spins_headers() {
    let host = HostProcess::start(&probe());
    let mut client = Client::new(host.addr);
    let reply = client.get("/probe/echo/abc/rest/of/it?x=1", &[("spin-path-info", "forged")]).await.unwrap();
    assert_eq!(reply.status, 200);
    let headers: HashMap<String, Vec<String>> =
        reply.json()["headers"].as_array().unwrap().iter().fold(HashMap::new(), |mut m, pair| {
            m.entry(pair[0].as_str().unwrap().to_owned()).or_default().push(pair[1].as_str().unwrap().to_owned());
            m
        });
    let one = |name: &str| headers.get(name).map(|v| v.join("|")).unwrap_or_default();
    assert_eq!(one("spin-path-info"), "/rest/of/it", "and the client's forged value is gone");
    assert_eq!(one("spin-full-url"), format!("http://{}/probe/echo/abc/rest/of/it?x=1", host.addr));
    assert_eq!(one("spin-matched-route"), "/probe/echo/:name/...");
    assert_eq!(one("spin-base-path"), "/");
    assert_eq!(one("spin-raw-component-route"), "/probe/echo/:name/...");
    assert_eq!(one("spin-component-route"), "/probe/echo/:name");
    assert_eq!(one("spin-path-match-name"), "abc");
    assert!(one("spin-client-addr").starts_with("127.0.0.1:"));
    let health = client.get("/.well-known/spin/health", &[]).await.unwrap();
    assert_eq!(health.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn variables_come_from_the_manifest_and_the_environment() {
    let host = HostProcess::start(&probe());
    let mut client = Client::new(host.addr);
    let seen = client.get("/probe/echo/x/y", &[]).await.unwrap().json();
    assert_eq!(seen["greeting"], "hello, probe", "default rendered through the component template");
    let vars: HashMap<String, String> = seen["variables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_str().unwrap().into(), p[1].as_str().unwrap().into()))
        .collect();
    assert_eq!(vars["secret"], "shh");

    let mut spec = probe();
    spec.env.push(("SPIN_VARIABLE_GREETING".into(), "你好".into()));
    let host = HostProcess::start(&spec);
    let seen = Client::new(host.addr).get("/probe/echo/x/y", &[]).await.unwrap().json();
    assert_eq!(seen["greeting"], "你好, probe", "SPIN_VARIABLE_GREETING overrides the default");

    // A required variable with no value stops the host at start, as in Spin.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hongbao-host"))
        .arg("-f")
        .arg(probe_manifest())
        .args(["up", "--memory", "--listen", "127.0.0.1:0"])
        .env_remove("SPIN_VARIABLE_SECRET")
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("secret"));
}

#[tokio::test(flavor = "multi_thread")]
async fn components_open_only_the_stores_they_are_granted() {
    let host = HostProcess::start(&probe());
    let mut client = Client::new(host.addr);
    assert_eq!(client.get("/probe/store/default", &[]).await.unwrap().json()["open"], "ok");
    assert_eq!(client.get("/probe/store/elsewhere", &[]).await.unwrap().json()["open"], "Error::AccessDenied");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trap_fails_only_its_own_request() {
    let host = HostProcess::start(&probe());
    let addr = host.addr;
    let tasks: Vec<_> = (0..240)
        .map(|i| {
            tokio::spawn(async move {
                let mut client = Client::new(addr);
                let path = if i % 4 == 0 { "/probe/trap" } else { "/probe/echo/ok/x" };
                (path, client.get(path, &[]).await.unwrap().status)
            })
        })
        .collect();
    for task in tasks {
        let (path, status) = task.await.unwrap();
        let expected = if path == "/probe/trap" { 500 } else { 200 };
        assert_eq!(status, expected, "{path}");
    }
    // Each trap is logged with its request id (the log is read by a thread:
    // wait for the lines, however slow the machine, up to a generous limit).
    let traps_logged =
        || host.log.lock().unwrap().iter().filter(|l| l.contains("request ") && l.contains("[probe]")).count();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while traps_logged() < 60 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(traps_logged(), 60);
}

#[tokio::test(flavor = "multi_thread")]
async fn traps_give_back_their_running_permits() {
    // Two requests may run at once: a trap that kept its permit would leave
    // the host unable to run anything after the second one.
    let host = HostProcess::start(&probe().arg("--max-running-requests").arg("2"));
    let addr = host.addr;
    for _ in 0..6 {
        assert_eq!(Client::new(addr).get("/probe/trap", &[]).await.unwrap().status, 500);
    }
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            tokio::spawn(async move {
                let path = if i % 8 == 0 { "/probe/trap" } else { "/probe/echo/ok/x" };
                let mut client = Client::new(addr);
                let reply = tokio::time::timeout(std::time::Duration::from_secs(30), client.get(path, &[]));
                (path, reply.await.expect("answered while others queued for a permit").unwrap().status)
            })
        })
        .collect();
    for task in tasks {
        let (path, status) = task.await.unwrap();
        assert_eq!(status, if path == "/probe/trap" { 500 } else { 200 }, "{path}");
    }
}

/// The host's log line on how the probe component was made ready.
async fn probe_compile_line(host: &HostProcess) -> String {
    host.log_line("component probe:").await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_start_loads_its_components_from_the_compilation_cache() {
    let cache = TempDir::new("compile-cache").unwrap();
    let spec = probe().arg("--compile-cache").arg(cache.0.to_str().unwrap());
    let first = HostProcess::start(&spec);
    assert!(probe_compile_line(&first).await.contains(": compiled in "));
    drop(first);
    let second = HostProcess::start(&spec);
    assert!(probe_compile_line(&second).await.contains(": loaded from cache in "));
    assert_eq!(Client::new(second.addr).get("/probe/echo/x/y", &[]).await.unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_disabled_compilation_cache_compiles_and_serves() {
    let host = HostProcess::start(&probe().arg("--disable-cache"));
    assert!(probe_compile_line(&host).await.contains(": compiled in "));
    assert_eq!(Client::new(host.addr).get("/probe/echo/x/y", &[]).await.unwrap().status, 200);
}

/// What a Spin 4 HTTP component may import: WASI 0.2 (std), WASI 0.3 rc
/// (HTTP), wasi:keyvalue draft2 and wasi:config, no outbound anything else.
fn allowed_import(name: &str) -> bool {
    let p2 = ["wasi:cli/", "wasi:io/", "wasi:clocks/", "wasi:random/"].iter().any(|p| name.starts_with(p))
        && name.contains("@0.2.");
    p2 || name == "wasi:http/types@0.3.0-rc-2026-03-15"
        || (name.starts_with("wasi:keyvalue/") && name.ends_with("@0.2.0-draft2"))
        || name == "wasi:config/store@0.2.0-draft-2024-09-27"
}

#[test]
fn components_import_only_standard_interfaces() {
    let manifest_path = app_manifest();
    ensure_built(&manifest_path);
    let manifest = hongbao_host::manifest::Manifest::load(&manifest_path).unwrap();
    let mut config = wasmtime::Config::new();
    config.wasm_component_model(true).wasm_component_model_async(true);
    let engine = wasmtime::Engine::new(&config).unwrap();
    assert_eq!(manifest.components.len(), 13);
    for (id, component) in &manifest.components {
        let wasm = wasmtime::component::Component::from_file(&engine, manifest.dir.join(&component.source)).unwrap();
        let ty = wasm.component_type();
        let imports: Vec<String> = ty.imports(&engine).map(|(name, _)| name.to_string()).collect();
        for name in &imports {
            assert!(allowed_import(name), "{id} imports {name}");
        }
        let exports: Vec<String> = ty.exports(&engine).map(|(name, _)| name.to_string()).collect();
        assert_eq!(exports, vec!["wasi:http/handler@0.3.0-rc-2026-03-15".to_string()], "{id}");
        let uses_store = imports.iter().any(|n| n.starts_with("wasi:keyvalue/"));
        assert_eq!(uses_store, id != "healthz", "{id}: only healthz stays away from the store");
    }
}

#[test]
fn the_manifest_declares_exactly_the_contracts_variables() {
    let manifest = hongbao_host::manifest::Manifest::load(&app_manifest()).unwrap();
    let declared: Vec<&str> = manifest.variables.keys().map(String::as_str).collect();
    let mut expected: Vec<&str> = hongbao::config::VARIABLES.iter().map(|v| v.name).collect();
    expected.sort_unstable();
    assert_eq!(declared, expected);
    for v in hongbao::config::VARIABLES {
        let d = &manifest.variables[v.name];
        assert_eq!(d.default.as_deref(), v.default, "{}", v.name);
        assert_eq!(d.required, v.default.is_none(), "{}", v.name);
        assert_eq!(d.secret, v.secret, "{}", v.name);
    }
    for (id, component) in &manifest.components {
        if id == "healthz" {
            assert!(component.key_value_stores.is_empty() && component.variables.is_empty());
            continue;
        }
        assert_eq!(component.key_value_stores, vec!["default".to_string()], "{id}");
        // Least privilege: only the secret its endpoints check (the same as
        // `hongbao::http::secrets` of the endpoints in its `component!` line).
        let endpoints = match id.as_str() {
            "wrap" => vec![Endpoint::Wrap],
            "payment" => vec![Endpoint::Payment],
            "grab" => vec![Endpoint::Grab],
            "open" => vec![Endpoint::Open],
            "query" => vec![Endpoint::Query, Endpoint::Sent, Endpoint::Received],
            "wallet" => vec![Endpoint::Wallet],
            "admin-expire" => vec![Endpoint::Expire],
            "admin-settle" => vec![Endpoint::Settle],
            "admin-reconcile" => vec![Endpoint::Reconcile],
            "admin-purge" => vec![Endpoint::Purge],
            "admin-sets" => vec![Endpoint::Placement, Endpoint::SetChange],
            "demo" => vec![Endpoint::DemoSignIn, Endpoint::DemoPayment],
            other => panic!("unexpected component {other}"),
        };
        let secrets = hongbao::http::secrets(hongbao::http::endpoints(&endpoints));
        assert_eq!(secrets.len(), 1, "{id}");
        for v in hongbao::config::VARIABLES {
            let given = !v.secret || secrets.contains(&v.name);
            let template = format!("{{{{ {} }}}}", v.name);
            assert_eq!(component.variables.get(v.name), given.then_some(&template), "{id}: {}", v.name);
        }
        let build = component.build.as_ref().expect("a build command");
        let package = component.source.file_stem().unwrap().to_str().unwrap().replace('_', "-");
        assert!(build.commands[0].ends_with(&format!("-p {package}")), "{id}: {:?}", build.commands);
    }
}

/// spin.sets.toml is spin.toml with a store label per SET, generated (so the
/// two never drift): `HONGBAO_WRITE_MANIFESTS=1 cargo test -p hongbao-host
/// --test host` writes it again after spin.toml changes.
#[test]
fn the_per_set_manifest_is_spin_toml_with_a_label_per_set() {
    let spin_toml = std::fs::read_to_string(app_manifest()).unwrap();
    let expected = hongbao_host::manifest::per_set_manifest(&spin_toml);
    let path = root().join("spin.sets.toml");
    if std::env::var_os("HONGBAO_WRITE_MANIFESTS").is_some() {
        std::fs::write(&path, &expected).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == expected,
        "spin.sets.toml is stale: HONGBAO_WRITE_MANIFESTS=1 cargo test -p hongbao-host --test host"
    );
    let manifest = hongbao_host::manifest::Manifest::load(&path).unwrap();
    let layout = hongbao::config::KvLayout::PerSet;
    let labels: Vec<String> = layout.labels().iter().chain(layout.replica_labels()).map(|l| l.to_string()).collect();
    assert_eq!(labels.len(), 2 * (hongbao::id::SETS as usize + 1));
    for (id, component) in &manifest.components {
        if id != "healthz" {
            assert_eq!(component.key_value_stores, labels, "{id}");
        }
    }
    assert_eq!(manifest.variables["kv_layout"].default.as_deref(), Some("sets"));
}

/// Every endpoint of the contract reaches the component that serves it: an
/// unauthenticated call answers 401 from the operation, not the catch-all's
/// 404 or another component's 405.
#[tokio::test(flavor = "multi_thread")]
async fn every_endpoint_is_routed_to_its_component() {
    let host = HostProcess::start(&HostSpec::app());
    let mut client = Client::new(host.addr);
    let id = "20261122302kbyca0rz6m2023py";
    for (method, path, code) in [
        ("POST", "/v1/packets".to_string(), "unauthorized"),
        ("POST", format!("/v1/packets/{id}/payment"), "bad_signature"),
        ("POST", format!("/v1/packets/{id}/grab"), "unauthorized"),
        ("POST", format!("/v1/packets/{id}/open"), "unauthorized"),
        ("GET", format!("/v1/packets/{id}"), "unauthorized"),
        ("GET", "/v1/users/me/sent".to_string(), "unauthorized"),
        ("GET", "/v1/users/me/received".to_string(), "unauthorized"),
        ("GET", "/v1/users/me/wallet".to_string(), "unauthorized"),
        ("POST", "/v1/admin/expire".to_string(), "unauthorized"),
        ("POST", "/v1/admin/settle".to_string(), "unauthorized"),
        ("GET", "/v1/admin/reconcile".to_string(), "unauthorized"),
        ("POST", "/v1/admin/purge".to_string(), "unauthorized"),
    ] {
        let reply = client.send(method, &path, &[], "{}").await.unwrap();
        assert_eq!(reply.code().as_deref(), Some(code), "{method} {path}");
    }
    let health = client.get("/healthz", &[]).await.unwrap();
    assert_eq!((health.status, &health.body[..]), (200, &b"ok"[..]));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_durable_store_is_spins_sqlite_table() {
    let state = TempDir::new("layout").unwrap();
    let mut host = HostProcess::start(&HostSpec::app().durable(&state.0));
    let mut api = Api::new(host.addr);
    let id = api.paid_packet("alice", "fixed", 300, 3).await;
    assert!(host.stop().success());
    let conn = rusqlite::Connection::open(state.0.join("sqlite_key_value.db")).unwrap();
    let columns: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info('spin_key_value') ORDER BY cid")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(columns, ["store", "key", "value"]);
    let packet_id = hongbao::PacketId::parse(&id).unwrap();
    let value: Vec<u8> = conn
        .query_row(
            "SELECT value FROM spin_key_value WHERE store = 'default' AND key = ?1",
            [hongbao::keys::packet(&packet_id)],
            |r| r.get(0),
        )
        .unwrap();
    let record = hongbao::record::Packet::decode(&value).unwrap();
    assert_eq!((record.id, record.total_fen.0), (id, 300));
}

/// A request that stalls (here: a client sending its body slowly) must not
/// hold up another request on the same component instance: WASI 0.3 runs up
/// to 16 requests at once on one instance, so nothing in a component may
/// block it (no thread sleep; CAS retries do not pause, busy waits answer
/// 429). Synchronised on events: the second request completes while the
/// first one's body is still half sent.
#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_request_does_not_block_its_instance() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let spec = HostSpec::app().arg("--max-instance-concurrent-reuse-count").arg("16");
    let host = HostProcess::start(&spec);
    let body = json!({"request_id": "slow", "kind": "lucky", "total_fen": 100, "count": 2}).to_string();
    let (first_half, second_half) = body.split_at(body.len() / 2);
    let mut slow = tokio::net::TcpStream::connect(host.addr).await.unwrap();
    let head = format!(
        "POST /v1/packets HTTP/1.1\r\nhost: test\r\nauthorization: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{first_half}",
        bearer("alice"),
        body.len()
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    let mut api = Api::new(host.addr);
    let quick = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        api.wrap("bob", json!({"request_id": "quick", "kind": "lucky", "total_fen": 100, "count": 2})),
    )
    .await
    .expect("served while the other request of the component is stalled");
    assert_eq!(quick.status, 201);
    slow.write_all(second_half.as_bytes()).await.unwrap();
    let mut answer = vec![0; 4096];
    let n = slow.read(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
}

/// `--clock-file`: components read the time from the file, and writing it
/// moves the time of a running host (seen through the times the app records).
#[tokio::test(flavor = "multi_thread")]
async fn components_read_the_time_from_the_clock_file() {
    let clock = Clock::new();
    let host = HostProcess::start(&HostSpec::app().var("packet_ttl_seconds", "600").clock(&clock));
    let mut api = Api::new(host.addr);
    let at = |seconds: i64| json!(hongbao::Timestamp(seconds).to_rfc3339());
    let wrapped =
        api.wrap("alice", json!({"request_id": "clock", "kind": "lucky", "total_fen": 100, "count": 2})).await;
    assert_eq!(wrapped.status, 201);
    let id = wrapped.json()["id"].as_str().unwrap().to_owned();
    let wrapped_at = clock.now();
    assert_eq!(api.query(&id, "alice").await.json()["created_at"], at(wrapped_at));
    clock.advance(100);
    assert_eq!(api.pay(&id, "pay-clock", 100).await.status, 200);
    let paid = api.query(&id, "alice").await.json();
    assert_eq!(paid["created_at"], at(wrapped_at));
    assert_eq!(paid["paid_at"], at(wrapped_at + 100));
    assert_eq!(paid["expires_at"], at(wrapped_at + 100 + 600));
}

#[test]
fn a_missing_or_garbled_clock_file_stops_the_host_at_start() {
    let dir = TempDir::new("bad-clock").unwrap();
    let path = dir.0.join("now");
    for contents in [None, Some("noon")] {
        if let Some(contents) = contents {
            std::fs::write(&path, contents).unwrap();
        }
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_hongbao-host"))
            .arg("-f")
            .arg(probe_manifest())
            .args(["up", "--memory", "--listen", "127.0.0.1:0", "--clock-file"])
            .arg(&path)
            .env("SPIN_VARIABLE_SECRET", "shh")
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{contents:?}: {stderr}");
        assert!(stderr.contains("clock file"), "{contents:?}: {stderr}");
    }
}
