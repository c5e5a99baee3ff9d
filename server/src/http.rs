//! The HTTP side of the port: route a parsed request to a WebSocket upgrade or a plain response.

use std::time::{Duration, SystemTime};

use crate::auth::{self, TokenError};
use crate::config::Config;
use crate::metrics::Registry;
use crate::wire::handshake::{self, Request};

/// What to do with a request.
#[derive(Debug)]
pub enum Route {
    /// Write this response and close.
    Respond(Vec<u8>),
    /// Switch to Phoenix Channels V2 as `user`; `response` is the 101.
    Phoenix { user: String, response: Vec<u8> },
    /// Switch to the conformance echo endpoint; `response` is the 101.
    Echo { response: Vec<u8> },
    /// Switch to the websocket-shootout benchmark protocol; `response` is the 101.
    Shootout { response: Vec<u8> },
    /// Switch to the y-websocket protocol on document `doc`; `response` is the 101.
    Collab { doc: String, response: Vec<u8> },
    /// Answer with the plain text of document `doc`'s shared type `name` (from its owner).
    CollabText { doc: String, name: String },
}

fn plain(status: u16, body: &str) -> Route {
    Route::Respond(handshake::response(
        status,
        "text/plain; charset=utf-8",
        &[],
        format!("{body}\n").as_bytes(),
    ))
}

/// Lifetime of a development token (the key that signs it lasts only as long as the process anyway).
const DEV_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// Route one request. `anon` names an anonymous user in open mode (unique per connection).
pub fn route(req: &Request, cfg: &Config, registry: &Registry, anon: impl FnOnce() -> String) -> Route {
    match req.path.as_str() {
        "/healthz" if req.method == "GET" => plain(200, "ok"),
        "/metrics" if req.method == "GET" => Route::Respond(handshake::response(
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            &[],
            registry.render().as_bytes(),
        )),
        "/healthz" | "/metrics" => plain(405, "method not allowed"),
        "/dev/token" => dev_token(req, cfg),
        "/socket/websocket" => phoenix(req, cfg, anon),
        "/autobahn" if cfg.autobahn_echo => match upgrade(req, None) {
            Ok(response) => Route::Echo { response },
            Err(r) => r,
        },
        "/shootout" if cfg.shootout => match upgrade(req, None) {
            Ok(response) => Route::Shootout { response },
            Err(r) => r,
        },
        path => match path.strip_prefix("/collab/") {
            Some(rest) => collab(req, cfg, rest, anon),
            None => static_file(req, cfg),
        },
    }
}

/// Open development mode's sign-in: `{"name": "..."}` → `{"user", "token"}`, the token signed with the
/// key made at start, so a development app uses the same token flow as a production one. With a secret
/// the endpoint does not exist.
fn dev_token(req: &Request, cfg: &Config) -> Route {
    if cfg.token_key.is_some() {
        return plain(404, "not found");
    }
    if req.method != "POST" {
        return plain(405, "method not allowed: POST {\"name\": \"...\"}");
    }
    #[derive(serde::Deserialize)]
    struct SignIn {
        name: String,
    }
    let Ok(SignIn { name }) = serde_json::from_slice::<SignIn>(&req.body) else {
        return plain(400, "the body must be JSON {\"name\": \"...\"}");
    };
    match auth::mint(&cfg.dev_token_key, &name, DEV_TOKEN_TTL, SystemTime::now()) {
        Ok(token) => {
            let body = serde_json::json!({ "user": name, "token": token }).to_string();
            Route::Respond(handshake::response(
                200,
                "application/json",
                &[("Cache-Control", "no-store")],
                body.as_bytes(),
            ))
        }
        Err(e) => plain(400, &format!("name: {e}")),
    }
}

/// A file of the served directory, or 404 (saying how to build the app when none is served).
fn static_file(req: &Request, cfg: &Config) -> Route {
    let Some(files) = cfg.static_files.as_deref() else {
        if req.path == "/" || req.path == "/index.html" {
            return plain(
                404,
                "The web app is not built: run scripts/build-web, then restart rusher \
                 (or pass --static-dir DIR).",
            );
        }
        return plain(404, "not found");
    };
    let Some((url, file)) = files.get(&req.path) else {
        return plain(404, "not found");
    };
    if req.method != "GET" && req.method != "HEAD" {
        return plain(405, "method not allowed");
    }
    // Built assets carry a content hash in their name and never change; the rest is revalidated.
    let cache = if url.starts_with("/assets/") { "public, max-age=31536000, immutable" } else { "no-cache" };
    let mut response = handshake::response(200, file.content_type, &[("Cache-Control", cache)], &file.bytes);
    if req.method == "HEAD" {
        // The head a GET would send, Content-Length included, without the body.
        response.truncate(response.len() - file.bytes.len());
    }
    Route::Respond(response)
}

fn collab(req: &Request, cfg: &Config, rest: &str, anon: impl FnOnce() -> String) -> Route {
    let (doc, text) = match rest.strip_suffix("/text") {
        Some(doc) => (doc, true),
        None => (rest, false),
    };
    if !crate::topics::collab::valid_doc_name(doc) {
        return plain(404, "no such document: names are 1 to 128 bytes without '/' or control characters");
    }
    if let Err(r) = authenticate(req, cfg, anon) {
        return r;
    }
    if text {
        if req.method != "GET" {
            return plain(405, "method not allowed");
        }
        let name = req.query_param("type").unwrap_or("quill").to_owned();
        return Route::CollabText { doc: doc.to_owned(), name };
    }
    match upgrade(req, None) {
        Ok(response) => Route::Collab { doc: doc.to_owned(), response },
        Err(r) => r,
    }
}

/// Who the client is: the token's user when a secret is configured (401 without a token, 403 for a
/// bad one). In open mode, a token from `/dev/token` (403 if it is bad), else the `user` parameter,
/// else an anonymous name.
fn authenticate(req: &Request, cfg: &Config, anon: impl FnOnce() -> String) -> Result<String, Route> {
    let token =
        req.query_param("token").map(str::to_owned).or_else(|| auth::token_from_subprotocols(&req.protocols));
    let verified = |key, token: &str| match auth::verify(key, token, SystemTime::now()) {
        Ok(claims) => Ok(claims.user),
        Err(TokenError::Expired) => Err(plain(403, "token expired")),
        Err(_) => Err(plain(403, "invalid token")),
    };
    match (&cfg.token_key, token) {
        (Some(key), Some(token)) => verified(key, &token),
        (Some(_), None) => Err(plain(401, "a token is required (token parameter or Phoenix authToken)")),
        (None, Some(token)) => verified(&cfg.dev_token_key, &token),
        (None, None) => match req.query_param("user") {
            Some(u) if auth::valid_user(u) => Ok(u.to_owned()),
            Some(_) => Err(plain(400, "user must be 1 to 64 printable characters")),
            None => Ok(anon()),
        },
    }
}

fn upgrade(req: &Request, protocol: Option<&str>) -> Result<Vec<u8>, Route> {
    if let Err((status, why)) = handshake::validate_upgrade(req) {
        let extra: &[(&str, &str)] = if status == 426 { &[("Sec-WebSocket-Version", "13")] } else { &[] };
        return Err(Route::Respond(handshake::response(
            status,
            "text/plain; charset=utf-8",
            extra,
            format!("{why}\n").as_bytes(),
        )));
    }
    let key = req.ws_key.as_deref().unwrap_or_default();
    Ok(handshake::switching_protocols(key, protocol))
}

fn phoenix(req: &Request, cfg: &Config, anon: impl FnOnce() -> String) -> Route {
    match req.query_param("vsn") {
        Some("2.0.0") => {}
        Some(other) => {
            return plain(403, &format!("unsupported serializer vsn {other:?}: this server speaks 2.0.0"))
        }
        None => return plain(403, "missing vsn: this server speaks Phoenix Channels vsn=2.0.0"),
    }
    let user = match authenticate(req, cfg, anon) {
        Ok(user) => user,
        Err(r) => return r,
    };
    let protocol = req.protocols.iter().any(|p| p == "phoenix").then_some("phoenix");
    match upgrade(req, protocol) {
        Ok(response) => Route::Phoenix { user, response },
        Err(r) => r,
    }
}
