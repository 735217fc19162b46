//! The one place where hongbao meets Spin. A component is one line,
//! `hongbao_spin::component!(Grab);`, which exports the WASI 0.3
//! HTTP handler (`wasi:http/handler@0.3.0-rc-2026-03-15`) and serves the
//! endpoints named. This crate turns the WASI request into a
//! `hongbao::http::Request`, opens the key-value store as a `hongbao::Store`,
//! reads the application variables into a `hongbao::Config`, and writes the
//! answer back as a WASI response.
//!
//! Only standard imports are used: `wasi:http` 0.3, `wasi:keyvalue@0.2.0-draft2`
//! (store, atomics, batch) and `wasi:config/store@0.2.0-draft-2024-09-27`, the
//! synchronous twins Spin 4 offers beside its async `spin:key-value@3` and
//! `spin:variables@3`, so any WASI host with these interfaces can run us.
//!
//! Why not `#[spin_sdk::http_service]`: it converts every request into an
//! `http::Request`, and that layer (header parsing, body adapters) was the
//! largest avoidable part of each component. The raw WASI types are enough.

mod body;
mod kv;

pub use hongbao::http::{Endpoint, endpoints};
#[doc(hidden)]
pub use spin_sdk::wasip3;

use hongbao::{Config, Env, Error, Timestamp};
use spin_sdk::wasip3::http::types::{ErrorCode, Fields, Method, Request, Response};
use std::time::{SystemTime, UNIX_EPOCH};

/// Declares a Spin component serving the given endpoints, and with
/// `; files = NAME` the static files of `NAME: &[File]` under `/demo/` too
/// (only in demo mode). `NAME` is a bare name, declared beside the macro call.
#[macro_export]
macro_rules! component {
    ($($endpoint:ident),+ $(,)?) => {
        $crate::component!(@export [$($endpoint),+] |request| $crate::serve::<ENDPOINTS>(request));
    };
    ($($endpoint:ident),+ ; files = $files:ident) => {
        $crate::component!(@export [$($endpoint),+] |request| $crate::serve_with_files::<ENDPOINTS>(request, super::$files));
    };
    (@export [$($endpoint:ident),+] |$request:ident| $serve:expr) => {
        #[cfg(target_arch = "wasm32")]
        mod __hongbao_component {
            use $crate::wasip3::http::types::{ErrorCode, Request, Response};

            struct Component;
            $crate::wasip3::http::service::export!(Component with_types_in $crate::wasip3);

            impl $crate::wasip3::exports::http::handler::Guest for Component {
                async fn handle($request: Request) -> Result<Response, ErrorCode> {
                    const ENDPOINTS: u32 = $crate::endpoints(&[$($crate::Endpoint::$endpoint),+]);
                    $serve.await
                }
            }
        }
    };
}

/// A static file a component embeds (`include_bytes!`), served to `GET
/// /demo/{path}`; `index.html` also at `/demo` and `/demo/`.
pub struct File {
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
}

/// Where the embedded files are served.
const FILES_ROUTE: &str = "/demo";

/// Serves `files` under `/demo/` and everything else as `serve` does. The
/// files are the demo page, so they answer only in demo mode (404 otherwise,
/// like its endpoints).
pub async fn serve_with_files<const ENDPOINTS: u32>(
    request: Request,
    files: &'static [File],
) -> Result<Response, ErrorCode> {
    let target = request.get_path_with_query().unwrap_or_default();
    let path = target.split('?').next().unwrap_or_default();
    let Some(rest) = path.strip_prefix(FILES_ROUTE).filter(|rest| rest.is_empty() || rest.starts_with('/')) else {
        return serve::<ENDPOINTS>(request).await;
    };
    let name = match rest.trim_start_matches('/') {
        "" => "index.html",
        name => name,
    };
    let method = method_name(request.get_method());
    respond(file_response(load_config(ENDPOINTS), &method, files, name)).await
}

fn file_response(config: Result<&Config, Error>, method: &str, files: &[File], name: &str) -> hongbao::http::Response {
    let found = match config {
        Err(e) => Err(e),
        Ok(config) if !config.demo_mode => Err(Error::NoRoute),
        Ok(_) if method != "GET" => Err(Error::MethodNotAllowed),
        Ok(_) => files.iter().find(|f| f.path == name).ok_or(Error::NoRoute),
    };
    match found {
        Ok(file) => hongbao::http::Response {
            status: 200,
            headers: vec![
                ("content-type", file.content_type.into()),
                // The page changes with the app: always ask again.
                ("cache-control", "no-cache".into()),
                // Only its own files run, whatever a greeting holds.
                ("content-security-policy", "default-src 'self'".into()),
                ("x-content-type-options", "nosniff".into()),
            ],
            body: file.body.to_vec(),
        },
        Err(e) => hongbao::http::Response::error(&e),
    }
}

/// Serves one request for a component that owns the endpoint set `ENDPOINTS`.
pub async fn serve<const ENDPOINTS: u32>(request: Request) -> Result<Response, ErrorCode> {
    let method = method_name(request.get_method());
    let target = request.get_path_with_query().unwrap_or_else(|| "/".into());
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target.as_str(), None),
    };
    // One host call per header asked for (two for an open: content-length
    // and authorization) rather than copying all ~13 into the instance: each
    // name and value copied in is an allocation the host makes by calling
    // back into the guest.
    let headers = request.get_headers();
    let header = |name: &str| headers.get(name).into_iter().next().and_then(|v| String::from_utf8(v).ok());
    let body = match body::read_limited(request, &header).await {
        Ok(bytes) => bytes,
        Err(e) => return respond(hongbao::http::Response::error(&e)).await,
    };
    let request = hongbao::http::Request { method: &method, path, query, header: &header, body: &body };
    let config = load_config(ENDPOINTS);
    // A config that failed to load answers its error; any layout will do.
    let layout = config.as_ref().map_or(hongbao::config::KvLayout::Single, |c| c.kv_layout);
    let store = kv::Stores::shared(layout);
    let replicas = kv::Stores::replicas(layout);
    if let Ok(config) = config {
        store.use_batch_reads(config.kv_batch_reads);
        replicas.iter().for_each(|r| r.use_batch_reads(config.kv_batch_reads));
    }
    // Wrap's copy of the open SETs lives as long as the instance.
    static PLACEMENT: hongbao::ops::PlacementCache = hongbao::ops::PlacementCache::new();
    let response =
        hongbao::http::serve::<ENDPOINTS, _>(&*store, replicas.as_deref(), config, system_env(), &PLACEMENT, &request);
    if response.status >= 500 {
        // Spin collects component stderr in its logs.
        eprintln!("{method} {path} -> {} {}", response.status, String::from_utf8_lossy(&response.body));
    }
    respond(response).await
}

fn method_name(method: Method) -> String {
    match method {
        Method::Get => "GET".into(),
        Method::Head => "HEAD".into(),
        Method::Post => "POST".into(),
        Method::Put => "PUT".into(),
        Method::Delete => "DELETE".into(),
        Method::Connect => "CONNECT".into(),
        Method::Options => "OPTIONS".into(),
        Method::Trace => "TRACE".into(),
        Method::Patch => "PATCH".into(),
        Method::Other(other) => other,
    }
}

/// All variables of this component, read once per instance: an instance is
/// reused for many requests (Spin 4, WASI 0.3), and application variables do
/// not change while the app runs. A failed read is not kept, so it is retried.
/// Only the secrets of the component's own endpoints are read and required.
fn load_config(endpoints: u32) -> Result<&'static Config, Error> {
    static CONFIG: std::sync::OnceLock<Config> = std::sync::OnceLock::new();
    if let Some(config) = CONFIG.get() {
        return Ok(config);
    }
    let pairs = spin_sdk::experimental::wasi::config::store::get_all()
        .map_err(|e| Error::Internal(format!("reading variables: {e:?}")))?;
    let secrets = hongbao::http::secrets(endpoints);
    let config = Config::load_for(&secrets, |name| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))?;
    Ok(CONFIG.get_or_init(|| config))
}

/// The request's clock, the host's CSPRNG (`wasi:random`, one call per
/// draw: ids and seeds must be unguessable, and a request draws only a few),
/// and no pause between CAS retries: an instance serves up to 16 requests at
/// once (WASI 0.3), and a blocking sleep would stall them all. A CAS loop
/// retries at once and, out of attempts, answers 429 with `Retry-After`.
fn system_env() -> Env {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    Env::new(Timestamp(now), Box::new(rand::rand_core::UnwrapErr(rand::rngs::SysRng)), |_| {})
}

/// Writes a response: status, headers, and the body through a stream that a
/// spawned task fills (the host reads it after `handle` returns).
async fn respond(r: hongbao::http::Response) -> Result<Response, ErrorCode> {
    let entries: Vec<(String, Vec<u8>)> = r.headers.into_iter().map(|(k, v)| (k.to_owned(), v.into_bytes())).collect();
    let headers = Fields::from_list(&entries).map_err(|e| ErrorCode::InternalError(Some(format!("{e:?}"))))?;
    let (mut writer, reader) = wasip3::wit_stream::new::<u8>();
    let (trailers_writer, trailers) = wasip3::wit_future::new(|| Ok(None));
    let (response, _sent) = Response::new(headers, Some(reader), trailers);
    // A new response is 200 already: one host call fewer for most answers.
    if r.status != 200 {
        response.set_status_code(r.status).map_err(|()| ErrorCode::InternalError(Some("bad status".into())))?;
    }
    let body = r.body;
    wasip3::wit_bindgen::spawn(async move {
        writer.write_all(body).await;
        drop(writer);
        drop(trailers_writer);
    });
    Ok(response)
}
