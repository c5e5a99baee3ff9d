import { useEffect, useLayoutEffect, useRef, useState } from "react";
import { colorOf } from "./colors.js";

const DEFAULT_ROOMS = ["lobby", "random", "help"];
const ROOMS_KEY = "rusher.rooms";
/** Messages fetched per "load older" click. */
const PAGE = 25;
/** Send `typing: true` at most this often while keys are pressed, and `false` after this long idle. */
const TYPING_EVERY_MS = 2000;
const TYPING_IDLE_MS = 3000;
/** Forget someone's typing after this long without news (they may have left mid-word). */
const TYPING_SHOWN_MS = 6000;

/** A room id from what someone typed: lower case, words joined by '-', at most 40 characters. */
export function roomId(text) {
  return text
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N}_-]+/gu, "-")
    .replace(/^-+|-+$/g, "")
    .slice(0, 40);
}

function loadRooms() {
  try {
    const saved = JSON.parse(localStorage.getItem(ROOMS_KEY));
    if (Array.isArray(saved)) return [...new Set([...DEFAULT_ROOMS, ...saved.filter((r) => typeof r === "string")])];
  } catch {
    // A corrupt list is replaced below.
  }
  return DEFAULT_ROOMS;
}

export function Chat({ connection, room, onRoom }) {
  const [rooms, setRooms] = useState(loadRooms);
  const [draft, setDraft] = useState("");

  useEffect(() => {
    if (!rooms.includes(room)) setRooms((r) => [...r, room]);
  }, [room, rooms]);
  useEffect(() => {
    localStorage.setItem(ROOMS_KEY, JSON.stringify(rooms.filter((r) => !DEFAULT_ROOMS.includes(r))));
  }, [rooms]);

  function create(e) {
    e.preventDefault();
    const id = roomId(draft);
    if (!id) return;
    setDraft("");
    onRoom(id);
  }

  return (
    <div className="chat">
      <aside className="rooms">
        <h2>Rooms</h2>
        <ul>
          {rooms.map((r) => (
            <li key={r}>
              <button className={r === room ? "room active" : "room"} onClick={() => onRoom(r)}>
                # {r}
              </button>
            </li>
          ))}
        </ul>
        <form onSubmit={create} className="create-room">
          <input
            aria-label="New room"
            placeholder="New room"
            value={draft}
            maxLength={40}
            onChange={(e) => setDraft(e.target.value)}
          />
          <button type="submit" disabled={!roomId(draft)}>
            Create
          </button>
        </form>
      </aside>
      <RoomView key={room} connection={connection} id={room} />
    </div>
  );
}

/** Insert `incoming` messages into `list`, kept in seq order without duplicates. */
function merge(list, incoming) {
  const bySeq = new Map(list.map((m) => [m.seq, m]));
  for (const m of incoming) bySeq.set(m.seq, m);
  return [...bySeq.values()].sort((a, b) => a.seq - b.seq);
}

function RoomView({ connection, id }) {
  const [messages, setMessages] = useState([]);
  const [more, setMore] = useState(false);
  const [loadingOlder, setLoadingOlder] = useState(false);
  const [users, setUsers] = useState([]);
  const [typing, setTyping] = useState({});
  const [joined, setJoined] = useState(false);
  const [error, setError] = useState("");
  const [body, setBody] = useState("");
  const roomRef = useRef(null);
  const typingSent = useRef({ at: 0, stop: null });

  useEffect(() => {
    const room = connection.client.room(id);
    roomRef.current = room;
    const offMessage = room.onMessage((m) => setMessages((all) => merge(all, [m])));
    room.onPresence(setUsers);
    const offTyping = room.onTyping(({ user, typing: on }) => {
      if (user === connection.user) return;
      setTyping((t) => {
        const next = { ...t };
        if (on) next[user] = Date.now() + TYPING_SHOWN_MS;
        else delete next[user];
        return next;
      });
    });
    // Someone who stops talking mid-word stops typing too.
    const onMessageFrom = room.onMessage((m) =>
      setTyping((t) => {
        if (!(m.user in t)) return t;
        const next = { ...t };
        delete next[m.user];
        return next;
      }),
    );
    room
      .join()
      .then((reply) => {
        setMore(reply.more);
        setJoined(true);
      })
      .catch((e) => setError(`Cannot join #${id}: ${e.reason ?? e.message}`));
    const sent = typingSent.current;
    return () => {
      offMessage();
      offTyping();
      onMessageFrom();
      clearTimeout(sent.stop);
      room.leave();
    };
  }, [connection, id]);

  // Expire typing indicators of people who went quiet without saying so.
  const typingNames = Object.keys(typing);
  useEffect(() => {
    if (typingNames.length === 0) return;
    const timer = setInterval(() => {
      const now = Date.now();
      setTyping((t) => {
        const kept = Object.fromEntries(Object.entries(t).filter(([, until]) => until > now));
        return Object.keys(kept).length === Object.keys(t).length ? t : kept;
      });
    }, 1000);
    return () => clearInterval(timer);
  }, [typingNames.length]);

  async function loadOlder() {
    if (!messages.length) return;
    setLoadingOlder(true);
    try {
      const page = await roomRef.current.history({ beforeSeq: messages[0].seq, limit: PAGE });
      setMessages((all) => merge(all, page.messages));
      setMore(page.more);
    } catch (e) {
      setError(`Cannot load older messages: ${e.reason ?? e.message}`);
    } finally {
      setLoadingOlder(false);
    }
  }

  function stopTyping() {
    const t = typingSent.current;
    clearTimeout(t.stop);
    t.stop = null;
    if (t.at) roomRef.current.typing(false);
    t.at = 0;
  }

  function onInput(text) {
    setBody(text);
    const t = typingSent.current;
    const now = Date.now();
    if (now - t.at > TYPING_EVERY_MS) {
      roomRef.current.typing(true);
      t.at = now;
    }
    clearTimeout(t.stop);
    t.stop = setTimeout(stopTyping, TYPING_IDLE_MS);
  }

  async function send(e) {
    e.preventDefault();
    const text = body.trim();
    if (!text) return;
    setBody("");
    stopTyping();
    try {
      await roomRef.current.send(text);
      setError("");
    } catch (err) {
      setBody(text);
      setError(`Not sent: ${err.reason ?? err.message}`);
    }
  }

  return (
    <>
      <section className="room-view">
        <h2># {id}</h2>
        <MessageList messages={messages} me={connection.user}>
          {more && (
            <button className="older" onClick={loadOlder} disabled={loadingOlder}>
              {loadingOlder ? "Loading…" : "Load older messages"}
            </button>
          )}
          {joined && !more && messages.length > 0 && <p className="start">Start of #{id}</p>}
          {joined && messages.length === 0 && <p className="start">No messages yet: say hello.</p>}
        </MessageList>
        <p className="typing" aria-live="polite">
          {typingText(Object.keys(typing).sort())}
        </p>
        <form className="composer" onSubmit={send}>
          <input
            aria-label="Message"
            placeholder={`Message #${id}`}
            value={body}
            maxLength={4000}
            onChange={(e) => onInput(e.target.value)}
          />
          <button type="submit" disabled={!body.trim()}>
            Send
          </button>
        </form>
        {error && (
          <p className="error" role="alert">
            {error}
          </p>
        )}
      </section>
      <aside className="presence">
        <h2>Here now ({users.length})</h2>
        <ul>
          {users.map((u) => (
            <li key={u} data-user={u}>
              <span className="dot" style={{ background: colorOf(u) }} />
              {u}
              {u === connection.user && <span className="you"> (you)</span>}
            </li>
          ))}
        </ul>
      </aside>
    </>
  );
}

function typingText(names) {
  if (names.length === 0) return "\u00a0";
  if (names.length === 1) return `${names[0]} is typing…`;
  if (names.length <= 3) return `${names.slice(0, -1).join(", ")} and ${names.at(-1)} are typing…`;
  return "Several people are typing…";
}

/** The messages, scrolled to the newest unless the reader scrolled up; older pages keep the view still. */
function MessageList({ messages, me, children }) {
  const ref = useRef(null);
  const last = useRef({ first: null, height: 0, atBottom: true });

  useLayoutEffect(() => {
    const el = ref.current;
    const prev = last.current;
    const first = messages[0]?.seq ?? null;
    if (prev.first !== null && first !== null && first < prev.first) {
      el.scrollTop += el.scrollHeight - prev.height;
    } else if (prev.atBottom) {
      el.scrollTop = el.scrollHeight;
    }
    last.current = { first, height: el.scrollHeight, atBottom: prev.atBottom };
  }, [messages]);

  const onScroll = () => {
    const el = ref.current;
    last.current.atBottom = el.scrollHeight - el.scrollTop - el.clientHeight < 40;
  };

  return (
    <div className="messages" ref={ref} onScroll={onScroll}>
      {children}
      <ol>
        {messages.map((m) => (
          <li key={m.seq} className={m.user === me ? "message mine" : "message"} data-seq={m.seq}>
            <span className="author" style={{ color: colorOf(m.user) }}>
              {m.user}
            </span>
            <time dateTime={new Date(m.ts).toISOString()}>
              {new Date(m.ts).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })}
            </time>
            <p className="body">{m.body}</p>
          </li>
        ))}
      </ol>
    </div>
  );
}
