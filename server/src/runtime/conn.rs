//! One client connection: its socket, its phase, and the buffers it holds only while it needs them.

use std::collections::VecDeque;
use std::io::{self, Write};

use mio::net::TcpStream;

use super::bufpool::ReadBuf;
use crate::mailbox::Frame;
use crate::phoenix::Session;
use crate::wire::frame::Reassembly;

/// Where a connection is in its life. Split in two so the stages without data share the session's
/// pointer niche: the enum costs no more than the session itself.
#[derive(Debug)]
pub enum Phase {
    /// A Phoenix Channels V2 socket.
    Phoenix(Session),
    /// Any other stage.
    Other(Stage),
}

/// The stages of a connection that carry no data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Reading the HTTP request; the timer closes it after the handshake timeout (slowloris).
    Handshake,
    /// The test-only echo endpoint for WebSocket conformance.
    Echo,
    /// The websocket-shootout benchmark protocol on `/shootout`.
    Shootout,
    /// The y-websocket protocol on `/collab/<doc>`.
    Collab,
    /// A plain HTTP request waiting for an answer from another worker (a document's text).
    AwaitingReply,
    /// A plain HTTP response or the answer to the peer's close is being flushed; the socket closes
    /// once it is written.
    Closing,
    /// We sent a close frame; the socket closes when the peer's close frame arrives or the close
    /// timeout ends.
    AwaitingClose,
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
    /// Buffers held only while needed; `None` for an idle connection.
    pub io: Option<Box<Io>>,
}

/// What a busy connection holds between events. Freed as soon as all three are empty.
#[derive(Debug, Default)]
pub struct Io {
    /// Unread bytes of a partial frame or request.
    pub rbuf: Option<ReadBuf>,
    /// A fragmented message in flight.
    pub frag: Option<Box<Reassembly>>,
    /// Backpressured output.
    out: Option<OutQueue>,
}

impl Io {
    fn is_empty(&self) -> bool {
        self.rbuf.is_none() && self.frag.is_none() && self.out.is_none()
    }
}

impl Conn {
    /// A newly accepted connection.
    pub fn new(stream: TcpStream, gen: u32, now: u32) -> Self {
        Conn { stream, gen, since: now, phase: Phase::Other(Stage::Handshake), io: None }
    }

    /// Whether output is queued.
    pub fn backpressured(&self) -> bool {
        self.io.as_ref().is_some_and(|io| io.out.is_some())
    }

    /// Queued outbound bytes.
    pub fn queued_bytes(&self) -> usize {
        self.io.as_ref().and_then(|io| io.out.as_ref()).map_or(0, |q| q.bytes)
    }

    /// The buffers, allocated on first use.
    pub fn io_mut(&mut self) -> &mut Io {
        self.io.get_or_insert_with(Box::default)
    }

    /// Take the partial read buffer, if any.
    pub fn take_rbuf(&mut self) -> Option<ReadBuf> {
        let buf = self.io.as_mut()?.rbuf.take();
        self.release_io();
        buf
    }

    /// Take the fragmented message in flight, if any.
    pub fn take_frag(&mut self) -> Option<Box<Reassembly>> {
        let frag = self.io.as_mut()?.frag.take();
        self.release_io();
        frag
    }

    /// Keep a fragmented message in flight.
    pub fn put_frag(&mut self, frag: Option<Box<Reassembly>>) {
        if frag.is_some() {
            self.io_mut().frag = frag;
        }
    }

    /// Free the buffers box once nothing is in it.
    pub fn release_io(&mut self) {
        if self.io.as_ref().is_some_and(|io| io.is_empty()) {
            self.io = None;
        }
    }

    /// Send a shared frame, queuing what the socket does not take now.
    pub fn send_shared(&mut self, frame: &Frame, limit: usize) -> Sent {
        if self.backpressured() {
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
        if self.backpressured() {
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
        let io = self.io_mut();
        let fresh = io.out.is_none();
        let q = io.out.get_or_insert_with(OutQueue::default);
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
        let Some(q) = self.io.as_mut().and_then(|io| io.out.as_mut()) else {
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
        if let Some(io) = &mut self.io {
            io.out = None;
        }
        self.release_io();
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_connection_stays_small() {
        // Memory per connection is the product: this guards against a field that silently grows it.
        let size = std::mem::size_of::<Conn>();
        eprintln!(
            "Conn {size} Phase {} Session {}",
            std::mem::size_of::<Phase>(),
            std::mem::size_of::<Session>()
        );
        assert!(size <= 64, "Conn grew to {size} bytes");
    }
}
