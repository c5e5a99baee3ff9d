//! A directory of static files (the web app), read into memory at start so that serving them never
//! touches the disk from a worker thread.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Most bytes a static directory may hold in all.
pub const MAX_TOTAL_BYTES: usize = 64 << 20;
/// Most files a static directory may hold.
pub const MAX_FILES: usize = 10_000;

/// One file: its content type and bytes.
pub struct File {
    pub content_type: &'static str,
    pub bytes: Arc<[u8]>,
}

/// The files of a directory by URL path (`/index.html`, `/assets/app-1234.js`).
#[derive(Default)]
pub struct StaticFiles {
    root: PathBuf,
    files: HashMap<String, File>,
    total: usize,
}

impl StaticFiles {
    /// Reads every regular file below `root` (names starting with `.` skipped), refusing a directory
    /// past [`MAX_FILES`] files or [`MAX_TOTAL_BYTES`] bytes.
    pub fn load(root: &Path) -> Result<Self, String> {
        let mut out = StaticFiles { root: root.to_path_buf(), ..Default::default() };
        let mut dirs = vec![root.to_path_buf()];
        while let Some(dir) = dirs.pop() {
            let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            for entry in entries {
                let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
                let path = entry.path();
                if entry.file_name().to_string_lossy().starts_with('.') {
                    continue;
                }
                let kind = entry.file_type().map_err(|e| format!("{}: {e}", path.display()))?;
                if kind.is_dir() {
                    dirs.push(path);
                } else if kind.is_file() {
                    out.add(&path)?;
                }
            }
        }
        Ok(out)
    }

    fn add(&mut self, path: &Path) -> Result<(), String> {
        let rel =
            path.strip_prefix(&self.root).map_err(|_| format!("{} is outside the root", path.display()))?;
        let url = format!("/{}", rel.to_string_lossy().replace('\\', "/"));
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        self.total += bytes.len();
        if self.files.len() >= MAX_FILES || self.total > MAX_TOTAL_BYTES {
            return Err(format!(
                "{} holds more than {MAX_FILES} files or {} MiB; serve it with a web server instead",
                self.root.display(),
                MAX_TOTAL_BYTES >> 20
            ));
        }
        let content_type = content_type(&url);
        self.files.insert(url, File { content_type, bytes: bytes.into() });
        Ok(())
    }

    /// The file for a request path: the exact file, else `/index.html` for `/` and for paths without
    /// an extension (the app's own routes), else nothing.
    pub fn get(&self, path: &str) -> Option<(&str, &File)> {
        if let Some((url, f)) = self.files.get_key_value(path) {
            return Some((url, f));
        }
        let last = path.rsplit('/').next().unwrap_or_default();
        if path == "/" || !last.contains('.') {
            return self.files.get_key_value("/index.html").map(|(u, f)| (u.as_str(), f));
        }
        None
    }

    /// Files held.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.total
    }

    /// The directory they were read from.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl std::fmt::Debug for StaticFiles {
    /// The directory and its size, not the bytes of every file.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StaticFiles({}: {} files, {} bytes)", self.root.display(), self.files.len(), self.total)
    }
}

fn content_type(url: &str) -> &'static str {
    match url.rsplit('.').next().unwrap_or_default() {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "wasm" => "application/wasm",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_found_by_path_and_app_routes_get_the_index() {
        let dir = std::env::temp_dir().join(format!("rusher-static-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("assets")).unwrap();
        std::fs::write(dir.join("index.html"), "<!doctype html>app").unwrap();
        std::fs::write(dir.join("assets/app-1.js"), "console.log(1)").unwrap();
        std::fs::write(dir.join(".secret"), "no").unwrap();
        let s = StaticFiles::load(&dir).unwrap();
        assert_eq!(s.len(), 2, "dotfiles are not served");
        assert_eq!(s.bytes(), 18 + 14);
        let (url, f) = s.get("/assets/app-1.js").unwrap();
        assert_eq!(
            (url, f.content_type, &*f.bytes),
            ("/assets/app-1.js", "text/javascript; charset=utf-8", &b"console.log(1)"[..])
        );
        for route in ["/", "/chat", "/rooms/lobby"] {
            assert_eq!(s.get(route).unwrap().0, "/index.html", "{route}");
        }
        assert!(s.get("/missing.js").is_none());
        assert!(s.get("/.secret").is_none());
        // Only files read at start exist: anything else is the app or nothing.
        assert_eq!(s.get("/../etc/passwd").unwrap().0, "/index.html");
        assert!(s.get("/../etc/passwd.txt").is_none());
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(StaticFiles::load(&dir).unwrap_err().contains("rusher-static"));
    }
}
