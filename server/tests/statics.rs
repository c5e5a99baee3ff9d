//! The web app's files served from memory: paths, app routes, caching, HEAD, big files, refusals.

mod common;

use std::sync::Arc;

use common::{http_exchange, status_of, TestServer};
use rusher_server::statics::StaticFiles;

fn served(dir: &std::path::Path) -> TestServer {
    let files = Arc::new(StaticFiles::load(dir).expect("static dir loads"));
    TestServer::start(move |c| c.static_files = Some(files))
}

fn get(srv: &TestServer, method: &str, path: &str) -> String {
    http_exchange(srv.addr, format!("{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
}

#[test]
fn the_app_is_served_with_its_routes_and_assets() {
    let dir = std::env::temp_dir().join(format!("rusher-static-it-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("assets")).unwrap();
    std::fs::write(dir.join("index.html"), "<!doctype html><title>Rusher</title>").unwrap();
    // Bigger than the 1 MiB bound on a connection's queued frames: a response is written whole.
    let big = "x".repeat(3 << 20);
    std::fs::write(dir.join("assets/app-abc.js"), &big).unwrap();
    let srv = served(&dir);

    for path in ["/", "/index.html", "/rooms/lobby"] {
        let r = get(&srv, "GET", path);
        assert_eq!(status_of(&r), 200, "{path}: {r}");
        assert!(
            r.contains("Content-Type: text/html; charset=utf-8") && r.contains("Cache-Control: no-cache")
        );
        assert!(r.ends_with("<!doctype html><title>Rusher</title>"), "{path}");
    }
    let js = get(&srv, "GET", "/assets/app-abc.js");
    assert_eq!(status_of(&js), 200);
    assert!(js.contains("Content-Type: text/javascript") && js.contains("immutable"));
    assert!(js.contains(&format!("Content-Length: {}", big.len())));
    assert!(js.ends_with(&big), "the whole file arrives");
    let head = get(&srv, "HEAD", "/assets/app-abc.js");
    assert!(head.contains(&format!("Content-Length: {}", big.len())) && head.ends_with("\r\n\r\n"));
    assert_eq!(status_of(&get(&srv, "GET", "/missing.png")), 404);
    assert_eq!(status_of(&get(&srv, "POST", "/")), 405);
    // The server's own endpoints win over the app's.
    assert_eq!(get(&srv, "GET", "/healthz").lines().last(), Some("ok"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn without_a_static_directory_the_root_says_how_to_build_the_app() {
    let srv = TestServer::start(|c| c.static_files = None);
    for path in ["/", "/index.html"] {
        let r = get(&srv, "GET", path);
        assert_eq!(status_of(&r), 404, "{r}");
        assert!(r.contains("scripts/build-web") && r.contains("--static-dir"), "{r}");
    }
    let r = get(&srv, "GET", "/assets/app.js");
    assert_eq!(status_of(&r), 404);
    assert!(!r.contains("build-web"), "{r}");
}

#[test]
fn a_missing_static_directory_is_a_clear_start_error() {
    let args = rusher_server::config::ServeArgs {
        static_dir: Some("/nonexistent/rusher-app".into()),
        ..Default::default()
    };
    let err = args.resolve().unwrap_err().to_string();
    assert!(err.contains("--static-dir") && err.contains("/nonexistent/rusher-app"), "{err}");
}
