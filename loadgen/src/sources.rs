//! Source addresses and targets: parse the lists, and open a non-blocking connection from a given
//! source address bound with `IP_BIND_ADDRESS_NO_PORT`, so the kernel picks the port per 4-tuple and one
//! machine opens far more than 64k connections to one server port.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};

/// Parse `127.0.0.2-127.0.0.201,10.0.0.5` (ranges of IPv4, or single addresses of either family).
pub fn parse_sources(spec: &str) -> Result<Vec<IpAddr>, String> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let a: Ipv4Addr = a.trim().parse().map_err(|_| format!("bad address {a:?} in {part:?}"))?;
                let b: Ipv4Addr = b.trim().parse().map_err(|_| format!("bad address {b:?} in {part:?}"))?;
                let (a, b) = (u32::from(a), u32::from(b));
                if b < a || b - a >= 1 << 20 {
                    return Err(format!(
                        "bad range {part:?}: the end must follow the start, at most 2^20 addresses"
                    ));
                }
                out.extend((a..=b).map(|n| IpAddr::V4(Ipv4Addr::from(n))));
            }
            None => out.push(part.parse().map_err(|_| format!("bad address {part:?}"))?),
        }
    }
    Ok(out)
}

/// Parse `host:port` targets separated by commas (IP addresses; names are resolved once).
pub fn parse_targets(spec: &str) -> Result<Vec<SocketAddr>, String> {
    use std::net::ToSocketAddrs;
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let addr = part
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {part:?}: {e}"))?
            .next()
            .ok_or_else(|| format!("{part:?} resolves to nothing"))?;
        out.push(addr);
    }
    if out.is_empty() {
        return Err("no target given".into());
    }
    Ok(out)
}

/// Kinds of connection failure, counted and reported, never retried silently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Failure {
    /// No local port left for this source address and target (EADDRNOTAVAIL): add source IPs.
    AddrNotAvail,
    /// The process is out of file descriptors (EMFILE/ENFILE): use more agents.
    TooManyFiles,
    /// Nothing listens at the target (ECONNREFUSED).
    Refused,
    /// Connect, upgrade or join did not finish in time.
    Timeout,
    /// The server answered the upgrade with another status.
    HttpStatus,
    /// The server refused the join.
    JoinRefused,
    /// The server closed the connection.
    Closed,
    /// A reset or another socket error.
    Io,
    /// A malformed frame or message from the server.
    Protocol,
}

impl Failure {
    /// Classify an I/O error.
    pub fn of(e: &io::Error) -> Failure {
        match e.raw_os_error() {
            Some(libc::EADDRNOTAVAIL) | Some(libc::EADDRINUSE) => Failure::AddrNotAvail,
            Some(libc::EMFILE) | Some(libc::ENFILE) => Failure::TooManyFiles,
            Some(libc::ECONNREFUSED) => Failure::Refused,
            Some(libc::ETIMEDOUT) => Failure::Timeout,
            _ => Failure::Io,
        }
    }

    /// Every kind, for reports.
    pub const ALL: [Failure; 9] = [
        Failure::AddrNotAvail,
        Failure::TooManyFiles,
        Failure::Refused,
        Failure::Timeout,
        Failure::HttpStatus,
        Failure::JoinRefused,
        Failure::Closed,
        Failure::Io,
        Failure::Protocol,
    ];

    /// Index into counters.
    pub fn index(self) -> usize {
        Self::ALL.iter().position(|f| *f == self).expect("listed")
    }

    /// What an operator should do about it.
    pub fn hint(self) -> &'static str {
        match self {
            Failure::AddrNotAvail => "out of local ports: add --source-ips",
            Failure::TooManyFiles => "out of file descriptors: raise the limit or use more --local-agents",
            Failure::Refused => "connection refused: is the server running on the target?",
            Failure::Timeout => {
                "timed out: the server or the kernel queues are overloaded (see sysctl/check)"
            }
            Failure::HttpStatus => "the server refused the upgrade (wrong path, vsn or token?)",
            Failure::JoinRefused => "the server refused the join",
            Failure::Closed => "the server closed the connection",
            Failure::Io => "socket error (reset?)",
            Failure::Protocol => "malformed data from the server",
        }
    }
}

/// Open a non-blocking TCP connection from `source` (port chosen at connect time) to `target`.
pub fn connect_from(source: Option<IpAddr>, target: SocketAddr) -> io::Result<mio::net::TcpStream> {
    let socket = Socket::new(Domain::for_address(target), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.set_nodelay(true)?;
    if let Some(src) = source {
        if src.is_ipv4() {
            let one: libc::c_int = 1;
            // SAFETY: setsockopt reads `one` for the given length; the fd is owned by `socket`.
            let rc = unsafe {
                libc::setsockopt(
                    std::os::fd::AsRawFd::as_raw_fd(&socket),
                    libc::IPPROTO_IP,
                    libc::IP_BIND_ADDRESS_NO_PORT,
                    (&one as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        socket.bind(&SocketAddr::new(src, 0).into())?;
    }
    match socket.connect(&target.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(mio::net::TcpStream::from_std(socket.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_lists() {
        let v = parse_sources("127.0.0.2-127.0.0.4, 127.0.0.9").unwrap();
        assert_eq!(v.len(), 4);
        assert_eq!(v[0], "127.0.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(v[3], "127.0.0.9".parse::<IpAddr>().unwrap());
        assert!(parse_sources("127.0.0.5-127.0.0.1").is_err());
        assert!(parse_sources("nonsense").is_err());
        assert_eq!(parse_targets("127.0.0.1:4000,127.0.0.1:4001").unwrap().len(), 2);
        assert!(parse_targets("").is_err());
    }

    #[test]
    fn connects_from_a_chosen_source_address() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let target = listener.local_addr().unwrap();
        let _stream = connect_from(Some("127.0.0.7".parse().unwrap()), target).unwrap();
        let (_, peer) = listener.accept().unwrap();
        assert_eq!(peer.ip(), "127.0.0.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn refused_is_classified() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        // The listener is dropped: nothing listens there now.
        let e = std::net::TcpStream::connect(port).unwrap_err();
        assert_eq!(Failure::of(&e), Failure::Refused);
    }
}
