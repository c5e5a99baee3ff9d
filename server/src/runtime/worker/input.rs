//! Input on a connection: the HTTP request that starts it, then WebSocket frames and the messages
//! they carry (Phoenix, conformance echo, shootout).

use super::*;
use crate::topics::collab;

impl Worker {
    /// How many more bytes to make room for before the next read (0: stop reading).
    pub(super) fn read_want(&self, key: usize, buf: &ReadBuf) -> usize {
        match &self.conns[key].phase {
            Phase::Other(Stage::Handshake) => {
                // parse_request reports TooLarge once the limit is reached; read no further than it.
                (self.cfg.max_request_bytes + 1).saturating_sub(buf.filled().len()).min(4096)
            }
            // Nothing more is read from a request that waits for its answer.
            Phase::Other(Stage::AwaitingReply) => 0,
            Phase::Other(Stage::Echo | Stage::Shootout | Stage::Collab)
            | Phase::Phoenix(_)
            | Phase::Other(Stage::Closing)
            | Phase::Other(Stage::AwaitingClose) => {
                let have = buf.filled().len();
                match frame::peek_total_len(buf.filled()) {
                    Some(total) if total as usize > have => (total as usize - have).clamp(4096, 1 << 20),
                    _ => 4096,
                }
            }
        }
    }

    /// Handle whatever complete requests or frames `buf` holds. Returns false when reading must stop
    /// (the connection closed or is closing).
    pub(super) fn process(&mut self, key: usize, buf: &mut ReadBuf) -> bool {
        if matches!(self.conns[key].phase, Phase::Other(Stage::Handshake)) {
            match handshake::parse_request(buf.filled(), self.cfg.max_request_bytes) {
                Ok(None) => return true,
                Ok(Some((req, used))) => {
                    buf.consume(used);
                    if !self.on_request(key, &req) {
                        return false;
                    }
                }
                Err(e) => {
                    let status = e.status();
                    self.respond_and_close(
                        key,
                        handshake::response(
                            status,
                            "text/plain; charset=utf-8",
                            &[],
                            format!("{e}\n").as_bytes(),
                        ),
                    );
                    return false;
                }
            }
        }
        self.process_frames(key, buf)
    }

    fn on_request(&mut self, key: usize, req: &handshake::Request) -> bool {
        let anon_counter = &mut self.anon_counter;
        let worker = self.id;
        let route = http::route(req, &self.cfg, &self.registry, || {
            *anon_counter += 1;
            format!("anon-{worker}-{anon_counter}")
        });
        match route {
            Route::Respond(bytes) => {
                if !bytes.starts_with(b"HTTP/1.1 200") {
                    WorkerStats::add(&self.stats().http_errors, 1);
                }
                self.respond_and_close(key, bytes);
                false
            }
            Route::Phoenix { user, response } => {
                self.upgraded(key, response, Phase::Phoenix(Session::new(user.into())))
            }
            Route::Echo { response } => self.upgraded(key, response, Phase::Other(Stage::Echo)),
            Route::Collab { doc, response } => {
                let doc = collab::topic(&doc);
                let list = self.local.intern(&collab::list_name(&doc));
                let slot = self.local.join(&list, key);
                self.collab_slots.insert(key, (doc.clone(), slot));
                let ok = self.upgraded(key, response, Phase::Other(Stage::Collab));
                let conn = self.conn_id(key);
                collab::send(&mut self.out, collab::CollabMsg::Open { doc, conn });
                ok
            }
            Route::CollabText { doc, name } => {
                self.conns[key].phase = Phase::Other(Stage::AwaitingReply);
                let conn = self.conn_id(key);
                collab::send(
                    &mut self.out,
                    collab::CollabMsg::Text { doc: collab::topic(&doc), conn, name: name.into() },
                );
                false
            }
            Route::Shootout { response } => {
                let topic = self.local.intern(shootout::TOPIC);
                let slot = self.local.join(&topic, key);
                self.shootout_slots.insert(key, slot);
                self.upgraded(key, response, Phase::Other(Stage::Shootout))
            }
        }
    }

    fn upgraded(&mut self, key: usize, response: Vec<u8>, phase: Phase) -> bool {
        WorkerStats::add(&self.stats().upgrades, 1);
        let conn = &mut self.conns[key];
        conn.phase = phase;
        conn.since = self.now;
        let id = ConnId::new(self.id, conn.gen, key);
        self.wheel.schedule(id.0, self.now + self.cfg.heartbeat_timeout.as_secs() as u32);
        self.send_owned(key, response)
    }

    pub(super) fn respond_and_close(&mut self, key: usize, bytes: Vec<u8>) {
        self.conns[key].phase = Phase::Other(Stage::Closing);
        self.conns[key].since = self.now;
        // A response is written once, whole: a static file may exceed the bound on queued frames.
        let limit = self.cfg.max_outbound_bytes.max(bytes.len());
        if self.send_owned_limit(key, bytes, limit) && !self.conns[key].backpressured() {
            self.remove(key);
        }
    }

    fn process_frames(&mut self, key: usize, buf: &mut ReadBuf) -> bool {
        let max = match self.conns[key].phase {
            Phase::Other(Stage::Echo) => self.cfg.echo_max_message_bytes(),
            Phase::Other(Stage::Collab) => self.cfg.max_collab_message_bytes,
            _ => self.cfg.max_message_bytes,
        };
        loop {
            let (head, range, used) = match frame::decode(buf.filled_mut(), max) {
                Ok(None) => return true,
                Ok(Some(f)) => f,
                Err(e) => {
                    // Nothing after a broken frame can be trusted.
                    buf.consume(buf.filled().len());
                    if matches!(self.conns[key].phase, Phase::Other(Stage::Closing | Stage::AwaitingClose)) {
                        self.remove(key);
                    } else {
                        self.fail(key, &e);
                    }
                    return false;
                }
            };
            WorkerStats::add(&self.registry.workers[self.id].frames_in, 1);
            let conn = &mut self.conns[key];
            conn.since = self.now;
            if let Phase::Other(Stage::Closing) | Phase::Other(Stage::AwaitingClose) = conn.phase {
                // After our close frame only the peer's close matters.
                if head.opcode == OpCode::Close {
                    if matches!(conn.phase, Phase::Other(Stage::AwaitingClose)) {
                        self.remove(key);
                    }
                    return false;
                }
                buf.consume(used);
                continue;
            }
            let payload = &buf.filled()[range];
            let mut frag = conn.take_frag();
            let result = frame::on_frame(&mut frag, &head, payload, max);
            conn.put_frag(frag);
            let keep_going = match result {
                Ok(None) => true,
                Ok(Some(msg)) => self.on_incoming(key, msg),
                Err(e) => {
                    self.fail(key, &e);
                    false
                }
            };
            buf.consume(used);
            if !keep_going {
                return false;
            }
        }
    }

    fn on_incoming(&mut self, key: usize, msg: Incoming<'_>) -> bool {
        match msg {
            Incoming::Ping(p) => {
                let pong = frame::encode(OpCode::Pong, p);
                self.send_owned(key, pong)
            }
            Incoming::Pong => true,
            Incoming::Close(code) => {
                let code = code.map_or(1000, |(c, _)| c);
                self.close_reply(key, code);
                false
            }
            Incoming::Text(text) => match &self.conns[key].phase {
                Phase::Other(Stage::Echo) => {
                    let f = frame::encode(OpCode::Text, text.as_bytes());
                    self.send_owned_limit(key, f, self.cfg.echo_max_message_bytes() * 2)
                }
                Phase::Other(Stage::Shootout) => self.on_shootout(key, &text),
                Phase::Other(Stage::Collab) => {
                    self.start_close(key, 1003, "the y-websocket protocol is binary");
                    false
                }
                _ => match pwire::parse_text(&text) {
                    Ok(m) => self.on_phoenix(key, m),
                    Err(e) => {
                        self.start_close(key, 1007, &format!("malformed Phoenix message: {e}"));
                        false
                    }
                },
            },
            Incoming::Binary(_) if matches!(self.conns[key].phase, Phase::Other(Stage::Shootout)) => {
                self.start_close(key, 1003, "the shootout protocol is JSON text");
                false
            }
            Incoming::Binary(data) => match &self.conns[key].phase {
                Phase::Other(Stage::Collab) => {
                    if let Some((doc, _)) = self.collab_slots.get(&key) {
                        let msg = collab::CollabMsg::Frame {
                            doc: doc.clone(),
                            conn: self.conn_id(key),
                            data: data.into(),
                        };
                        collab::send(&mut self.out, msg);
                    }
                    true
                }
                Phase::Other(Stage::Echo) => {
                    let f = frame::encode(OpCode::Binary, &data);
                    self.send_owned_limit(key, f, self.cfg.echo_max_message_bytes() * 2)
                }
                _ => match pwire::parse_binary(&data) {
                    Ok(m) => self.on_phoenix(key, m),
                    Err(e) => {
                        self.start_close(key, 1003, &format!("malformed Phoenix binary message: {e}"));
                        false
                    }
                },
            },
        }
    }

    fn on_phoenix(&mut self, key: usize, msg: pwire::Inbound<'_>) -> bool {
        let me = self.conn_id(key);
        let Worker { conns, out, local, topics, cfg, store, registry, replies, .. } = self;
        let Phase::Phoenix(session) = &mut conns[key].phase else {
            return true;
        };
        let mut ctx =
            Ctx { me, out, local, topics, cfg, store, stats: &registry.workers[me.worker()], replies };
        phoenix::on_message(&mut ctx, session, msg);
        self.flush_replies(key)
    }

    fn flush_replies(&mut self, key: usize) -> bool {
        let mut replies = std::mem::take(&mut self.replies);
        let mut ok = true;
        for r in replies.drain(..) {
            if ok {
                ok = self.send_owned(key, r);
            }
        }
        self.replies = replies;
        ok
    }

    fn on_shootout(&mut self, key: usize, text: &str) -> bool {
        match shootout::handle(text) {
            Ok(shootout::Action::Echo(reply)) => {
                self.send_owned(key, frame::encode(OpCode::Text, reply.as_bytes()))
            }
            Ok(shootout::Action::Broadcast { to_all, result }) => {
                let frame = crate::topics::text_frame(&to_all);
                let topic = self.local.intern(shootout::TOPIC);
                for w in (0..self.out.workers()).filter(|w| *w != self.id) {
                    self.out
                        .send(w, Msg::Broadcast { topic: topic.clone(), frame: frame.clone(), except: None });
                }
                // Local copies first, so the sender sees its own broadcast before the result.
                self.on_msg(Msg::Broadcast { topic, frame, except: None });
                self.conns.contains(key)
                    && self.send_owned(key, frame::encode(OpCode::Text, result.as_bytes()))
            }
            Err(why) => {
                self.start_close(key, 1003, &why);
                false
            }
        }
    }
}
