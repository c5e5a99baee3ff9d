//! The TCP floor's server (`rusher-loadgen sink`): accepts bare TCP connections and holds them
//! without a byte in either direction, until one of them sends 8 bytes (a message's send time);
//! those 8 bytes are then written once to every connection held. Against it the `tcp` scenario
//! measures what the kernel alone costs to open, hold and write to as many connections as a Rusher
//! run uses, so Rusher's figures can be quoted as ratios to it.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

const LISTENER: Token = Token(usize::MAX);
/// How long accepting pauses after the process ran out of file descriptors.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// One held connection: a message arrives whole in practice, but a split one is put together here.
struct Conn {
    stream: TcpStream,
    partial: [u8; 8],
    have: u8,
}

/// What a sink did, printed when it stops.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Connections accepted and held.
    pub accepted: u64,
    /// Connections closed on accept because `capacity` were held already.
    pub over_capacity: u64,
    /// Most connections held at once.
    pub peak: u64,
    /// Messages received (each written to every connection).
    pub messages: u64,
    /// Copies written whole.
    pub written: u64,
    /// Copies that did not fit in the socket's send buffer or failed: the client will miss them.
    pub unsent: u64,
}

/// Serve on `listen` for at most `max`, holding up to `capacity` connections.
pub fn run(listen: SocketAddr, capacity: u64, max: Duration) -> anyhow::Result<()> {
    // The nodes' own listener (SO_REUSEPORT, the same backlog), so the floor accepts as they do.
    let mut listener = rusher_server::sys::reuseport_listener(listen)?;
    let mut poll = Poll::new()?;
    poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
    println!("sink listening on {}", listener.local_addr()?);
    io::stdout().flush()?;
    let stats = serve(&mut poll, &listener, capacity, Instant::now() + max)?;
    eprintln!("sink {listen}: {stats:?}");
    Ok(())
}

/// The event loop, until `deadline`.
fn serve(poll: &mut Poll, listener: &TcpListener, capacity: u64, deadline: Instant) -> io::Result<Stats> {
    let mut conns: Slab<Conn> = Slab::new();
    let mut stats = Stats::default();
    let mut events = Events::with_capacity(1024);
    // Set while accepting is paused (out of file descriptors) or connections may be waiting in the
    // backlog without a new readiness edge.
    let mut accept_at: Option<Instant> = None;
    while Instant::now() < deadline {
        let mut timeout = deadline.saturating_duration_since(Instant::now()).min(Duration::from_millis(100));
        if let Some(at) = accept_at {
            timeout = timeout.min(at.saturating_duration_since(Instant::now()));
        }
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let mut accept_now = accept_at.is_some_and(|at| at <= Instant::now());
        let mut messages = Vec::new();
        for ev in events.iter() {
            if ev.token() == LISTENER {
                accept_now = true;
                continue;
            }
            let key = ev.token().0;
            if conns.contains(key) && !read_conn(&mut conns[key], &mut messages) {
                let mut c = conns.remove(key);
                let _ = poll.registry().deregister(&mut c.stream);
            }
        }
        if accept_now {
            accept_at = accept(poll, listener, &mut conns, capacity, &mut stats)?;
        }
        for msg in messages {
            stats.messages += 1;
            fan_out(poll, &mut conns, &msg, &mut stats);
        }
    }
    Ok(stats)
}

/// Accept until the backlog is empty; returns when to try again if accepting had to pause.
fn accept(
    poll: &Poll,
    listener: &TcpListener,
    conns: &mut Slab<Conn>,
    capacity: u64,
    stats: &mut Stats,
) -> io::Result<Option<Instant>> {
    loop {
        let mut stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e)
                if e.kind() == io::ErrorKind::Interrupted || e.kind() == io::ErrorKind::ConnectionAborted =>
            {
                continue
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE)) => {
                return Ok(Some(Instant::now() + ACCEPT_PAUSE));
            }
            Err(e) => return Err(e),
        };
        if conns.len() as u64 >= capacity {
            stats.over_capacity += 1;
            continue; // Dropping the stream closes it.
        }
        let entry = conns.vacant_entry();
        if poll.registry().register(&mut stream, Token(entry.key()), Interest::READABLE).is_err() {
            continue;
        }
        entry.insert(Conn { stream, partial: [0; 8], have: 0 });
        stats.accepted += 1;
        stats.peak = stats.peak.max(conns.len() as u64);
    }
}

/// Read what a connection sent, collecting whole messages; false when it closed or failed.
fn read_conn(c: &mut Conn, messages: &mut Vec<[u8; 8]>) -> bool {
    let mut buf = [0u8; 512];
    loop {
        match c.stream.read(&mut buf) {
            Ok(0) => return false,
            Ok(n) => {
                for &b in &buf[..n] {
                    c.partial[c.have as usize] = b;
                    c.have += 1;
                    if c.have == 8 {
                        messages.push(c.partial);
                        c.have = 0;
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

/// Write `msg` once to every connection held; a connection that fails is closed.
fn fan_out(poll: &Poll, conns: &mut Slab<Conn>, msg: &[u8; 8], stats: &mut Stats) {
    let mut failed = Vec::new();
    for (key, c) in conns.iter_mut() {
        match c.stream.write(msg) {
            Ok(8) => stats.written += 1,
            // An idle socket's send buffer holds far more than 8 bytes: a short write means the client
            // stopped reading, and the copy is counted as missed rather than queued.
            Ok(_) => stats.unsent += 1,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => stats.unsent += 1,
            Err(_) => {
                stats.unsent += 1;
                failed.push(key);
            }
        }
    }
    for key in failed {
        let mut c = conns.remove(key);
        let _ = poll.registry().deregister(&mut c.stream);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eight_bytes_from_one_connection_reach_every_connection() {
        let mut listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut poll = Poll::new().unwrap();
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE).unwrap();
        let server = std::thread::spawn(move || {
            serve(&mut poll, &listener, 3, Instant::now() + Duration::from_secs(3)).unwrap()
        });
        let mut clients: Vec<std::net::TcpStream> =
            (0..4).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
        for c in &clients {
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        }
        // The fourth is over capacity: closed on accept.
        let mut byte = [0u8; 1];
        assert_eq!(clients[3].read(&mut byte).unwrap(), 0, "closed over capacity");
        // A message split in two writes is put together.
        let sent = 1_764_320_000_123_456u64.to_le_bytes();
        clients[1].write_all(&sent[..3]).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        clients[1].write_all(&sent[3..]).unwrap();
        for c in &mut clients[..3] {
            let mut got = [0u8; 8];
            c.read_exact(&mut got).unwrap();
            assert_eq!(got, sent);
        }
        drop(clients);
        let stats = server.join().unwrap();
        assert_eq!(
            stats,
            Stats { accepted: 3, over_capacity: 1, peak: 3, messages: 1, written: 3, unsent: 0 }
        );
    }
}
