//! websocket-shootout on actix-web + actix-ws, laid out like the Actix chat example: every connection
//! is a task that owns its session and a bounded outbox; one chat-server task owns the list of
//! sessions and fans broadcasts out. Serves any path; `--threads` actix workers (default 1).

#[path = "../../protocol.rs"]
mod protocol;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use actix_web::{rt, web, App, HttpRequest, HttpResponse, HttpServer};
use actix_ws::{AggregatedMessage, CloseCode, CloseReason};
use bytestring::ByteString;
use protocol::Action;
use tokio::sync::mpsc;

/// Messages queued for one connection before it counts as too slow and is closed.
const OUTBOX: usize = 1024;
/// Commands queued for the chat server; connections wait when it is full.
const COMMANDS: usize = 4096;
/// Largest message accepted from a client.
const MAX_MESSAGE: usize = 64 * 1024;

/// What connections tell the chat server.
enum Command {
    Join {
        id: u64,
        outbox: mpsc::Sender<ByteString>,
    },
    Leave {
        id: u64,
    },
    /// `to_all` to every session, then `result` to the sender (after its own copy).
    Broadcast {
        from: u64,
        to_all: ByteString,
        result: ByteString,
    },
}

/// The chat server: the only owner of the sessions. A session whose outbox is full is dropped,
/// which ends its connection.
async fn chat_server(mut commands: mpsc::Receiver<Command>) {
    let mut sessions: HashMap<u64, mpsc::Sender<ByteString>> = HashMap::new();
    while let Some(cmd) = commands.recv().await {
        match cmd {
            Command::Join { id, outbox } => {
                sessions.insert(id, outbox);
            }
            Command::Leave { id } => {
                sessions.remove(&id);
            }
            Command::Broadcast { from, to_all, result } => {
                sessions.retain(|_, outbox| outbox.try_send(to_all.clone()).is_ok());
                if let Some(outbox) = sessions.get(&from) {
                    if outbox.try_send(result).is_err() {
                        sessions.remove(&from);
                    }
                }
            }
        }
    }
}

async fn ws(
    req: HttpRequest,
    body: web::Payload,
    commands: web::Data<mpsc::Sender<Command>>,
    ids: web::Data<AtomicU64>,
) -> actix_web::Result<HttpResponse> {
    let (response, mut session, stream) = actix_ws::handle(&req, body)?;
    let mut stream =
        stream.max_frame_size(MAX_MESSAGE).aggregate_continuations().max_continuation_size(MAX_MESSAGE);
    let commands = commands.get_ref().clone();
    let id = ids.fetch_add(1, Ordering::Relaxed);
    rt::spawn(async move {
        let (outbox, mut inbox) = mpsc::channel(OUTBOX);
        if commands.send(Command::Join { id, outbox }).await.is_err() {
            return;
        }
        let close = loop {
            tokio::select! {
                msg = stream.recv() => match msg {
                    Some(Ok(AggregatedMessage::Text(text))) => match protocol::handle(&text) {
                        Ok(Action::Echo(reply)) => {
                            if session.text(reply).await.is_err() {
                                break None;
                            }
                        }
                        Ok(Action::Broadcast { to_all, result }) => {
                            let cmd = Command::Broadcast { from: id, to_all: to_all.into(), result: result.into() };
                            if commands.send(cmd).await.is_err() {
                                break None;
                            }
                        }
                        Err(why) => break Some(CloseReason { code: CloseCode::Unsupported, description: Some(why) }),
                    },
                    Some(Ok(AggregatedMessage::Ping(bytes))) => {
                        if session.pong(&bytes).await.is_err() {
                            break None;
                        }
                    }
                    Some(Ok(AggregatedMessage::Binary(_))) => {
                        break Some(CloseReason { code: CloseCode::Unsupported, description: Some("text messages only".into()) })
                    }
                    Some(Ok(AggregatedMessage::Pong(_))) => {}
                    Some(Ok(AggregatedMessage::Close(_))) | Some(Err(_)) | None => break Some(CloseCode::Normal.into()),
                },
                out = inbox.recv() => match out {
                    Some(bytes) => {
                        if session.text(bytes).await.is_err() {
                            break None;
                        }
                    }
                    // Dropped by the chat server: this client did not keep up.
                    None => break Some(CloseReason { code: CloseCode::Policy, description: Some("too slow".into()) }),
                },
            }
        };
        let _ = commands.send(Command::Leave { id }).await;
        if let Some(reason) = close {
            let _ = session.close(Some(reason)).await;
        }
    });
    Ok(response)
}

fn main() -> std::io::Result<()> {
    let (addr, threads) = protocol::args().map_err(std::io::Error::other)?;
    rt::System::new().block_on(async move {
        let (tx, rx) = mpsc::channel(COMMANDS);
        rt::spawn(chat_server(rx));
        let commands = web::Data::new(tx);
        let ids = web::Data::new(AtomicU64::new(0));
        let server = HttpServer::new(move || {
            App::new().app_data(commands.clone()).app_data(ids.clone()).default_service(web::get().to(ws))
        })
        .workers(threads)
        .backlog(4096)
        .max_connections(100_000)
        .disable_signals()
        .bind(addr)?;
        println!("peer-actix listening on {addr} with {threads} worker(s)");
        server.run().await
    })
}
