//! One client connection: its socket, its phase, and the buffers it holds only while it needs them.

use std::collections::VecDeque;
use std::io::{self, Write};

use mio::net::TcpStream;

use super::bufpool::ReadBuf;
use crate::mailbox::Frame;
use crate::phoenix::Session;
use crate::wire::frame::Reassembly;

/// Where a connection is in its life.
#[derive(Debug)]
pub enum Phase {
    /// Reading the HTTP request; the timer closes it after the handshake timeout (slowloris).
    Handshake,
    /// A Phoenix Channels V2 socket.
    Phoenix(Box<Session>),
    /// The test-only echo endpoint for WebSocket conformance.
    Echo,
    /// A plain HTTP response or close frame is being flushed; the socket closes once it is written and,
    /// for a WebSocket close we started, once the client's close frame arrives or the close timeout ends.
    Closing { await_peer_close: bool },
}

/// Bytes waiting for the socket while it is backpressured.
#[derive(Debug)]
enum Chunk {
    Shared(Frame),
    Owned(Vec<u8>),
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Shared(f) => f,
            Chunk::Owned(v) => v,
        }
    }
}

/// The outbound queue, allocated only while the socket cannot take everything.
#[derive(Debug, Default)]
pub struct OutQueue {
    chunks: VecDeque<Chunk>,
    /// Bytes of the front chunk already written.
    offset: usize,
    /// Unwritten bytes across all chunks.
    bytes: usize,
}

/// What a send did.
#[derive(Debug, PartialEq, Eq)]
pub enum Sent {
    /// Written (or queued within the bound).
    Ok,
    /// Queued and the socket now needs WRITABLE interest.
    NowBackpressured,
    /// The queue would pass its bound: the connection must be closed as a slow consumer.
    Overflow,
    /// The socket failed; the connection must be closed.
    Failed,
}

/// A connection. Idle and joined, it holds no read buffer, no write queue and no fragment buffer.
#[derive(Debug)]
pub struct Conn {
    pub stream: TcpStream,
    /// Slot generation, part of the connection's token.
    pub gen: u32,
    /// Second (worker clock) of the last frame received, or of accept during the handshake, or of the
    /// start of closing; the timer wheel derives the deadline from this and the phase.
    pub since: u32,
    pub phase: Phase,
    /// Unread bytes of a partial frame or request; `None` when nothing partial is pending.
    pub rbuf: Option<Box<ReadBuf>>,
    /// A fragmented message in flight.
    pub frag: Option<Box<Reassembly>>,
    /// Backpressured output.
    pub out: Option<Box<OutQueue>>,
}

impl Conn {
    /// A newly accepted connection.
    pub fn new(stream: TcpStream, gen: u32, now: u32) -> Self {
        Conn {
            stream,
            gen,
            since: now,
            phase: Phase::Handshake,
            rbuf: None,
            frag: None,
            out: None,
        }
    }

    /// Whether output is queued.
    pub fn backpressured(&self) -> bool {
        self.out.is_some()
    }

    /// Queued outbound bytes.
    pub fn queued_bytes(&self) -> usize {
        self.out.as_ref().map_or(0, |q| q.bytes)
    }

    /// Send a shared frame, queuing what the socket does not take now.
    pub fn send_shared(&mut self, frame: &Frame, limit: usize) -> Sent {
        if self.out.is_some() {
            return self.enqueue(Chunk::Shared(frame.clone()), 0, limit);
        }
        match self.write_direct(frame) {
            None => Sent::Failed,
            Some(n) if n == frame.len() => Sent::Ok,
            Some(n) => self.enqueue(Chunk::Shared(frame.clone()), n, limit),
        }
    }

    /// Send bytes owned by this connection alone.
    pub fn send_owned(&mut self, bytes: Vec<u8>, limit: usize) -> Sent {
        if self.out.is_some() {
            return self.enqueue(Chunk::Owned(bytes), 0, limit);
        }
        match self.write_direct(&bytes) {
            None => Sent::Failed,
            Some(n) if n == bytes.len() => Sent::Ok,
            Some(n) => self.enqueue(Chunk::Owned(bytes), n, limit),
        }
    }

    /// Write as much as the socket takes now; `None` on a socket error.
    fn write_direct(&mut self, data: &[u8]) -> Option<usize> {
        let mut written = 0;
        while written < data.len() {
            match self.stream.write(&data[written..]) {
                Ok(0) => return None,
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return None,
            }
        }
        Some(written)
    }

    /// Queue a chunk whose first `written` bytes already went out.
    fn enqueue(&mut self, chunk: Chunk, written: usize, limit: usize) -> Sent {
        let rest = chunk.bytes().len() - written;
        let fresh = self.out.is_none();
        let q = self.out.get_or_insert_with(Box::default);
        if q.bytes + rest > limit {
            return Sent::Overflow;
        }
        if q.chunks.is_empty() {
            q.offset = written;
        }
        q.bytes += rest;
        q.chunks.push_back(chunk);
        if fresh {
            Sent::NowBackpressured
        } else {
            Sent::Ok
        }
    }

    /// Write queued output. `Ok(true)` when the queue is empty (and freed).
    pub fn flush(&mut self) -> io::Result<bool> {
        let Some(q) = &mut self.out else {
            return Ok(true);
        };
        while let Some(front) = q.chunks.front() {
            let bytes = &front.bytes()[q.offset..];
            match self.stream.write(bytes) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    q.bytes -= n;
                    if n == bytes.len() {
                        q.chunks.pop_front();
                        q.offset = 0;
                    } else {
                        q.offset += n;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.out = None;
        Ok(true)
    }
}
