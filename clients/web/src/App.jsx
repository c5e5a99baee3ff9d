import { useEffect, useState } from "react";
import { Connection, clearSession, loadSession } from "./session.js";
import { useRoute } from "./route.js";
import { SignIn } from "./SignIn.jsx";
import { Chat } from "./Chat.jsx";
import { Editor } from "./Editor.jsx";
import { GeoMap } from "./GeoMap.jsx";

const SCREENS = [
  { screen: "chat", label: "Chat", id: "lobby" },
  { screen: "doc", label: "Editor", id: "notes" },
  { screen: "map", label: "Geofence map", id: "" },
];

const STATE_LABELS = {
  connecting: "Connecting…",
  connected: "Connected",
  reconnecting: "Reconnecting…",
  closed: "Offline",
};

export function App() {
  const [session, setSession] = useState(loadSession);
  return session ? (
    <Signed
      session={session}
      onSignOut={() => {
        clearSession();
        setSession(null);
      }}
    />
  ) : (
    <SignIn onSignedIn={setSession} />
  );
}

/** The app for a signed-in user: one connection shared by every screen. */
function Signed({ session, onSignOut }) {
  const [connection, setConnection] = useState(null);
  const [state, setState] = useState("connecting");
  const [route, go] = useRoute();

  useEffect(() => {
    const c = new Connection(session);
    setConnection(c);
    setState(c.client.state);
    const off = c.client.onState(setState);
    return () => {
      off();
      c.close();
    };
  }, [session]);

  return (
    <div className="app">
      <header className="topbar">
        <span className="brand">Rusher</span>
        <nav>
          {SCREENS.map((s) => (
            <button
              key={s.screen}
              className={route.screen === s.screen ? "tab active" : "tab"}
              onClick={() => go({ screen: s.screen, id: route.screen === s.screen ? route.id : s.id })}
            >
              {s.label}
            </button>
          ))}
        </nav>
        <span className={`conn conn-${state}`} data-testid="connection-state" role="status">
          {STATE_LABELS[state] ?? state}
        </span>
        <span className="me">
          {session.user}
          <button className="link" onClick={onSignOut}>
            Sign out
          </button>
        </span>
      </header>
      {state === "reconnecting" && (
        <div className="banner" role="alert">
          Connection lost: reconnecting… Messages you send will wait until the server is back.
        </div>
      )}
      <main>
        {connection &&
          (route.screen === "chat" ? (
            <Chat connection={connection} room={route.id} onRoom={(id) => go({ screen: "chat", id })} />
          ) : route.screen === "doc" ? (
            <Editor connection={connection} doc={route.id} onDoc={(id) => go({ screen: "doc", id })} />
          ) : (
            <GeoMap connection={connection} />
          ))}
      </main>
    </div>
  );
}
