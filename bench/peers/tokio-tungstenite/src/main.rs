//! websocket-shootout on tokio + tokio-tungstenite, as most Rust users would write it: a task per
//! connection on the multi-thread runtime (`--threads` workers, default 1), broadcasts through one
//! bounded `tokio::sync::broadcast` channel every connection subscribes to. Serves any path.

#[path = "../../protocol.rs"]
mod protocol;

use futures_util::{SinkExt, StreamExt};
use protocol::Action;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// Broadcasts a connection may fall behind by before it counts as too slow and is closed.
const LAG: usize = 1024;
/// Largest message accepted from a client.
const MAX_MESSAGE: usize = 64 * 1024;

/// Every bound set, and small buffers: tungstenite's defaults reserve 128 KiB of read buffer per
/// connection, which would make this peer look far heavier than it needs to be.
fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_write_buffer_size(1 << 20)
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
}

async fn serve(stream: TcpStream, all: broadcast::Sender<Utf8Bytes>) {
    let _ = stream.set_nodelay(true);
    let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config())).await else {
        return;
    };
    let mut copies = all.subscribe();
    let close = loop {
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(text))) => match protocol::handle(&text) {
                    Ok(Action::Echo(reply)) => {
                        if ws.send(Message::text(reply)).await.is_err() {
                            break None;
                        }
                    }
                    Ok(Action::Broadcast { to_all, result }) => {
                        // Fails only with no subscriber, and the sender is one.
                        let _ = all.send(Utf8Bytes::from(to_all));
                        if ws.send(Message::text(result)).await.is_err() {
                            break None;
                        }
                    }
                    Err(why) => break Some((CloseCode::Unsupported, why)),
                },
                Some(Ok(Message::Binary(_))) => break Some((CloseCode::Unsupported, "text messages only".into())),
                // Pings are answered by tungstenite itself on the next read or write.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break None,
            },
            copy = copies.recv() => match copy {
                Ok(text) => {
                    if ws.send(Message::Text(text)).await.is_err() {
                        break None;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => break Some((CloseCode::Policy, "too slow".into())),
                Err(broadcast::error::RecvError::Closed) => break None,
            },
        }
    };
    if let Some((code, reason)) = close {
        let _ = ws.close(Some(CloseFrame { code, reason: reason.into() })).await;
    }
}

fn main() -> std::io::Result<()> {
    let (addr, threads) = protocol::args().map_err(std::io::Error::other)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_io()
        .enable_time()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(addr).await?;
        let (all, _) = broadcast::channel(LAG);
        println!("peer-tokio-tungstenite listening on {addr} with {threads} worker(s)");
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(serve(stream, all.clone()));
                }
                // EMFILE and the like: wait a moment instead of spinning or exiting.
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            }
        }
    })
}
