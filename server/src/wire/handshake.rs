//! HTTP/1.1 request parsing for the WebSocket upgrade and the plain endpoints, and the responses the server writes
//! before a connection either becomes a WebSocket or is closed.

use base64::Engine as _;

/// Most headers accepted in one request; browsers send 15-20, so 64 leaves room without inviting abuse.
const MAX_HEADERS: usize = 64;

/// The parts of a request the server routes and authenticates on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Request {
    /// Request method as sent, e.g. `GET`.
    pub method: String,
    /// Request target up to the `?`, exactly as sent (not percent-decoded).
    pub path: String,
    /// Query parameters in order, percent-decoded, `+` read as a space (form encoding, as Phoenix decodes it).
    pub query: Vec<(String, String)>,
    /// `Upgrade: websocket` (case-insensitive) and a `Connection` header listing the `upgrade` token.
    pub upgrade_websocket: bool,
    /// `Sec-WebSocket-Key`, trimmed.
    pub ws_key: Option<String>,
    /// `Sec-WebSocket-Version`, trimmed.
    pub ws_version: Option<String>,
    /// Every offered subprotocol from all `Sec-WebSocket-Protocol` headers, split on `,` and trimmed.
    pub protocols: Vec<String>,
    /// `Host`, as sent.
    pub host: Option<String>,
    /// The body announced by `Content-Length` (empty without one).
    pub body: Vec<u8>,
}

impl Request {
    /// The value of the first query parameter called `name`.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Why a request head could not be read; the server answers with [`HttpError::status`] and closes.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// Not a valid HTTP/1.x request head.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// The header block did not end within the size bound.
    #[error("request header block too large")]
    TooLarge,
    /// More than 64 headers.
    #[error("too many request headers")]
    TooManyHeaders,
    /// Head and body together exceed the size bound.
    #[error("request body too large")]
    BodyTooLarge,
    /// A body sent with `Transfer-Encoding` rather than `Content-Length`.
    #[error("send the request body with Content-Length")]
    LengthRequired,
}

impl HttpError {
    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            HttpError::Malformed(_) => 400,
            HttpError::TooLarge | HttpError::TooManyHeaders => 431,
            HttpError::BodyTooLarge => 413,
            HttpError::LengthRequired => 411,
        }
    }
}

/// Parse a request head from the front of `buf`.
///
/// Returns `Ok(None)` while the header block (or the body its `Content-Length` announces) is incomplete and shorter
/// than `max_bytes`, and the request with the length of its header block and body once both are complete. Only the
/// first `max_bytes` bytes are considered, so a client cannot make the server buffer more than that before the
/// request is refused.
pub fn parse_request(buf: &[u8], max_bytes: usize) -> Result<Option<(Request, usize)>, HttpError> {
    let window = &buf[..buf.len().min(max_bytes)];
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let consumed = match parsed.parse(window) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= max_bytes => return Err(HttpError::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::TooManyHeaders),
        Err(e) => return Err(HttpError::Malformed(e.to_string())),
    };

    let method = parsed.method.unwrap_or_default().to_owned();
    let target = parsed.path.unwrap_or_default();
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, parse_query(query)?),
        None => (target, Vec::new()),
    };
    let mut req = Request { method, path: path.to_owned(), query, ..Request::default() };

    let mut upgrade = false;
    let mut connection_upgrade = false;
    let mut content_length: Option<usize> = None;
    for header in parsed.headers.iter() {
        let name = header.name;
        let value = || {
            std::str::from_utf8(header.value)
                .map(str::trim)
                .map_err(|_| HttpError::Malformed(format!("{name} header is not UTF-8")))
        };
        if name.eq_ignore_ascii_case("upgrade") {
            upgrade |= has_token(value()?, "websocket");
        } else if name.eq_ignore_ascii_case("connection") {
            connection_upgrade |= has_token(value()?, "upgrade");
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            // A repeated key is concatenated rather than picking one, so it fails validation as RFC 6455 wants.
            req.ws_key.get_or_insert_with(String::new).push_str(value()?);
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            req.ws_version = Some(value()?.to_owned());
        } else if name.eq_ignore_ascii_case("sec-websocket-protocol") {
            let offered = value()?.split(',').map(str::trim).filter(|p| !p.is_empty());
            req.protocols.extend(offered.map(str::to_owned));
        } else if name.eq_ignore_ascii_case("host") {
            req.host = Some(value()?.to_owned());
        } else if name.eq_ignore_ascii_case("content-length") {
            let v = value()?;
            // Digits only (no sign, no list); anything past the bound is refused below without parsing further.
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(HttpError::Malformed(format!("bad Content-Length {v:?}")));
            }
            let n = v.parse::<usize>().unwrap_or(usize::MAX);
            if content_length.is_some_and(|seen| seen != n) {
                return Err(HttpError::Malformed("conflicting Content-Length headers".to_owned()));
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(HttpError::LengthRequired);
        }
    }
    req.upgrade_websocket = upgrade && connection_upgrade;
    let body_len = content_length.unwrap_or(0);
    let end = match consumed.checked_add(body_len) {
        Some(end) if end <= max_bytes => end,
        _ => return Err(HttpError::BodyTooLarge),
    };
    if buf.len() < end {
        return Ok(None);
    }
    req.body = buf[consumed..end].to_vec();
    Ok(Some((req, end)))
}

/// Whether a comma-separated header value lists `token` (case-insensitive), e.g. `Connection: keep-alive, Upgrade`.
fn has_token(value: &str, token: &str) -> bool {
    value.split(',').any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn parse_query(query: &str) -> Result<Vec<(String, String)>, HttpError> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((percent_decode(name)?, percent_decode(value)?))
        })
        .collect()
}

fn percent_decode(s: &str) -> Result<String, HttpError> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Ok(s.to_owned());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = |at: usize| bytes.get(at).and_then(|b| (*b as char).to_digit(16));
                let (Some(hi), Some(lo)) = (hex(i + 1), hex(i + 2)) else {
                    return Err(HttpError::Malformed(format!("bad percent escape in query: {s}")));
                };
                out.push((hi * 16 + lo) as u8);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| HttpError::Malformed("query is not UTF-8 once decoded".to_owned()))
}

/// Validate a WebSocket upgrade (RFC 6455 §4.2.1).
///
/// On failure returns the status to answer with and a short reason for the body. A 426 means the client asked for
/// a protocol version other than 13; the caller must then add a `Sec-WebSocket-Version: 13` header to the response.
pub fn validate_upgrade(req: &Request) -> Result<(), (u16, &'static str)> {
    if req.method != "GET" {
        return Err((400, "WebSocket upgrade requires GET"));
    }
    if !req.upgrade_websocket {
        return Err((400, "missing Upgrade: websocket or Connection: Upgrade"));
    }
    match req.ws_version.as_deref() {
        None => return Err((400, "missing Sec-WebSocket-Version")),
        Some("13") => {}
        Some(_) => return Err((426, "unsupported Sec-WebSocket-Version; only 13 is supported")),
    }
    let Some(key) = req.ws_key.as_deref() else {
        return Err((400, "missing Sec-WebSocket-Key"));
    };
    match base64::engine::general_purpose::STANDARD.decode(key) {
        Ok(nonce) if nonce.len() == 16 => Ok(()),
        _ => Err((400, "Sec-WebSocket-Key is not base64 of 16 bytes")),
    }
}

/// `HTTP/1.1 101 Switching Protocols` response bytes with `Sec-WebSocket-Accept`, and the chosen
/// `Sec-WebSocket-Protocol` when `protocol` is given.
pub fn switching_protocols(ws_key: &str, protocol: Option<&str>) -> Vec<u8> {
    let accept = tungstenite::handshake::derive_accept_key(ws_key.as_bytes());
    let mut out = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n"
    );
    if let Some(protocol) = protocol {
        out.push_str("Sec-WebSocket-Protocol: ");
        out.push_str(protocol);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// A complete plain HTTP response with `Content-Type` (omitted when empty), `Content-Length` and
/// `Connection: close`, followed by the `extra_headers` and the body.
pub fn response(status: u16, content_type: &str, extra_headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason_phrase(status));
    if !content_type.is_empty() {
        head.push_str("Content-Type: ");
        head.push_str(content_type);
        head.push_str("\r\n");
    }
    head.push_str("Content-Length: ");
    head.push_str(&body.len().to_string());
    head.push_str("\r\nConnection: close\r\n");
    for (name, value) in extra_headers {
        // A CR or LF here would let a value smuggle its own headers into the response.
        debug_assert!(!name.contains(['\r', '\n']) && !value.contains(['\r', '\n']));
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    out
}

/// The standard reason phrase for the statuses the server uses; `Unknown` for any other.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHROME_UPGRADE: &str = "GET /socket/websocket?token=abc&vsn=2.0.0 HTTP/1.1\r\n\
        Host: localhost:4000\r\n\
        Connection: Upgrade\r\n\
        Pragma: no-cache\r\n\
        Cache-Control: no-cache\r\n\
        User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36\r\n\
        Upgrade: websocket\r\n\
        Origin: http://localhost:4000\r\n\
        Sec-WebSocket-Version: 13\r\n\
        Accept-Encoding: gzip, deflate, br, zstd\r\n\
        Accept-Language: en-US,en;q=0.9\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
        \r\n";

    fn parse(text: &str) -> Request {
        let (req, used) = parse_request(text.as_bytes(), 8192).unwrap().unwrap();
        assert_eq!(used, text.len());
        req
    }

    #[test]
    fn browser_upgrade_request() {
        let req = parse(CHROME_UPGRADE);
        assert_eq!(req.method, "GET");
        assert_eq!(req.path, "/socket/websocket");
        assert_eq!(req.query_param("token"), Some("abc"));
        assert_eq!(req.query_param("vsn"), Some("2.0.0"));
        assert_eq!(req.query_param("missing"), None);
        assert!(req.upgrade_websocket);
        assert_eq!(req.ws_key.as_deref(), Some("dGhlIHNhbXBsZSBub25jZQ=="));
        assert_eq!(req.ws_version.as_deref(), Some("13"));
        assert_eq!(req.host.as_deref(), Some("localhost:4000"));
        assert!(req.protocols.is_empty());
        assert_eq!(validate_upgrade(&req), Ok(()));
    }

    #[test]
    fn firefox_connection_token_list() {
        let text = CHROME_UPGRADE.replace("Connection: Upgrade", "Connection: keep-alive, Upgrade");
        let req = parse(&text);
        assert!(req.upgrade_websocket);
        let text = CHROME_UPGRADE.replace("Connection: Upgrade", "Connection: keep-alive");
        let req = parse(&text);
        assert!(!req.upgrade_websocket);
        assert_eq!(validate_upgrade(&req).unwrap_err().0, 400);
    }

    #[test]
    fn bytes_after_the_head_are_not_consumed() {
        let mut bytes = CHROME_UPGRADE.as_bytes().to_vec();
        bytes.extend_from_slice(&[0x81, 0x80, 1, 2, 3, 4]);
        let (_, used) = parse_request(&bytes, 8192).unwrap().unwrap();
        assert_eq!(used, CHROME_UPGRADE.len());
    }

    #[test]
    fn query_is_percent_decoded() {
        let req =
            parse("GET /socket/websocket?token=a%2Bb&vsn=2.0.0&name=J%C3%BCrgen+M&flag HTTP/1.1\r\n\r\n");
        assert_eq!(req.path, "/socket/websocket");
        assert_eq!(
            req.query,
            vec![
                ("token".to_owned(), "a+b".to_owned()),
                ("vsn".to_owned(), "2.0.0".to_owned()),
                ("name".to_owned(), "Jürgen M".to_owned()),
                ("flag".to_owned(), String::new()),
            ]
        );
        assert_eq!(req.query_param("token"), Some("a+b"));
        let err = parse_request(b"GET /?a=%zz HTTP/1.1\r\n\r\n", 8192).unwrap_err();
        assert_eq!(err.status(), 400);
        let err = parse_request(b"GET /?a=%ff HTTP/1.1\r\n\r\n", 8192).unwrap_err();
        assert_eq!(err.status(), 400);
    }

    #[test]
    fn body_is_read_by_content_length() {
        let text = "POST /dev/token HTTP/1.1\r\nHost: x\r\nContent-Length: 16\r\n\r\n{\"name\":\"alice\"}";
        let req = parse(text);
        assert_eq!((req.method.as_str(), req.path.as_str()), ("POST", "/dev/token"));
        assert_eq!(req.body, br#"{"name":"alice"}"#);
        // Cut anywhere before the last byte of the body, the request waits for more.
        for cut in 0..text.len() {
            assert_eq!(parse_request(&text.as_bytes()[..cut], 8192), Ok(None), "cut at {cut}");
        }
        // Bytes after the body belong to no one and are left alone.
        let (_, used) = parse_request(format!("{text}extra").as_bytes(), 8192).unwrap().unwrap();
        assert_eq!(used, text.len());
        let same_twice = "POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok";
        assert_eq!(parse(same_twice).body, b"ok");
        assert!(parse(CHROME_UPGRADE).body.is_empty());
    }

    #[test]
    fn bad_or_oversized_bodies_are_refused() {
        let head = |cl: &str| format!("POST / HTTP/1.1\r\nContent-Length: {cl}\r\n\r\n");
        for bad in ["-1", "1x", "", "0x10", "1, 1"] {
            let err = parse_request(head(bad).as_bytes(), 8192).unwrap_err();
            assert_eq!(err.status(), 400, "{bad:?}");
        }
        let twice = "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab";
        assert_eq!(parse_request(twice.as_bytes(), 8192).unwrap_err().status(), 400);
        // The head and the body share the bound, checked before any of the body arrives.
        let h = head("100");
        assert_eq!(parse_request(h.as_bytes(), h.len() + 99), Err(HttpError::BodyTooLarge));
        assert_eq!(parse_request(h.as_bytes(), h.len() + 100), Ok(None));
        let huge = head("99999999999999999999999999");
        assert_eq!(parse_request(huge.as_bytes(), 8192), Err(HttpError::BodyTooLarge));
        let chunked = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
        assert_eq!(parse_request(chunked.as_bytes(), 8192).unwrap_err().status(), 411);
    }

    #[test]
    fn partial_head_waits_for_more() {
        for cut in 0..CHROME_UPGRADE.len() {
            assert_eq!(parse_request(&CHROME_UPGRADE.as_bytes()[..cut], 8192), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn oversized_head_is_refused() {
        let partial = &CHROME_UPGRADE.as_bytes()[..100];
        let err = parse_request(partial, 100).unwrap_err();
        assert_eq!(err, HttpError::TooLarge);
        assert_eq!(err.status(), 431);
        // More bytes than the bound, with the head ending past it.
        assert_eq!(parse_request(CHROME_UPGRADE.as_bytes(), 200), Err(HttpError::TooLarge));
        // A head that fits exactly is fine.
        assert!(parse_request(CHROME_UPGRADE.as_bytes(), CHROME_UPGRADE.len()).unwrap().is_some());
    }

    #[test]
    fn too_many_headers() {
        let mut text = String::from("GET / HTTP/1.1\r\n");
        for i in 0..65 {
            text.push_str(&format!("X-H{i}: v\r\n"));
        }
        text.push_str("\r\n");
        let err = parse_request(text.as_bytes(), 1 << 16).unwrap_err();
        assert_eq!(err, HttpError::TooManyHeaders);
        assert_eq!(err.status(), 431);
    }

    #[test]
    fn garbage_is_malformed() {
        for garbage in [
            &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..],
            b"GET / HTTP/9.9\r\n\r\n",
            b"GET  HTTP/1.1\r\n\r\n",
        ] {
            let err = parse_request(garbage, 8192).unwrap_err();
            assert!(matches!(err, HttpError::Malformed(_)), "{garbage:?}: {err:?}");
            assert_eq!(err.status(), 400);
        }
    }

    #[test]
    fn upgrade_validation_failures() {
        let missing_key =
            parse(&CHROME_UPGRADE.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""));
        assert_eq!(validate_upgrade(&missing_key), Err((400, "missing Sec-WebSocket-Key")));

        let short_key = parse(&CHROME_UPGRADE.replace("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ="));
        assert_eq!(validate_upgrade(&short_key).unwrap_err().0, 400);
        let not_base64 =
            parse(&CHROME_UPGRADE.replace("dGhlIHNhbXBsZSBub25jZQ==", "!!!!!!!!!!!!!!!!!!!!!!=="));
        assert_eq!(validate_upgrade(&not_base64).unwrap_err().0, 400);

        let old_version =
            parse(&CHROME_UPGRADE.replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8"));
        assert_eq!(validate_upgrade(&old_version).unwrap_err().0, 426);
        let no_version = parse(&CHROME_UPGRADE.replace("Sec-WebSocket-Version: 13\r\n", ""));
        assert_eq!(validate_upgrade(&no_version).unwrap_err().0, 400);

        let post = parse(&CHROME_UPGRADE.replacen("GET", "POST", 1));
        assert_eq!(validate_upgrade(&post).unwrap_err().0, 400);
        let no_upgrade = parse(&CHROME_UPGRADE.replace("Upgrade: websocket\r\n", ""));
        assert!(!no_upgrade.upgrade_websocket);
        assert_eq!(validate_upgrade(&no_upgrade).unwrap_err().0, 400);
        let mixed_case = parse(&CHROME_UPGRADE.replace("Upgrade: websocket", "upgrade: WebSocket"));
        assert_eq!(validate_upgrade(&mixed_case), Ok(()));
    }

    #[test]
    fn protocols_are_split_and_trimmed() {
        let text = CHROME_UPGRADE.replace(
            "Origin:",
            "Sec-WebSocket-Protocol: phoenix, base64url.bearer.phx.dGVzdA\r\nSec-WebSocket-Protocol: extra ,, \r\nOrigin:",
        );
        let req = parse(&text);
        assert_eq!(req.protocols, ["phoenix", "base64url.bearer.phx.dGVzdA", "extra"]);
    }

    #[test]
    fn accept_key_for_the_rfc_example() {
        let response = String::from_utf8(switching_protocols("dGhlIHNhbXBsZSBub25jZQ==", None)).unwrap();
        assert_eq!(
            response,
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        );
        let response =
            String::from_utf8(switching_protocols("dGhlIHNhbXBsZSBub25jZQ==", Some("phoenix"))).unwrap();
        assert!(response.ends_with(
            "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: phoenix\r\n\r\n"
        ));
    }

    #[test]
    fn plain_response_layout() {
        let bytes = response(403, "text/plain", &[("X-Reason", "nope")], b"forbidden");
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 9\r\nConnection: close\r\n\
             X-Reason: nope\r\n\r\nforbidden"
        );
        let bytes = response(426, "", &[("Sec-WebSocket-Version", "13")], b"");
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "HTTP/1.1 426 Upgrade Required\r\nContent-Length: 0\r\nConnection: close\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        assert_eq!(reason_phrase(431), "Request Header Fields Too Large");
        assert_eq!(reason_phrase(299), "Unknown");
    }
}
