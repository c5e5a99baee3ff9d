import { useEffect, useRef, useState } from "react";
import Quill from "quill";
import QuillCursors from "quill-cursors";
import { QuillBinding } from "y-quill";
import * as Y from "yjs";
import "quill/dist/quill.snow.css";
import { colorOf } from "./colors.js";

Quill.register("modules/cursors", QuillCursors);

const TOOLBAR = [[{ header: [1, 2, false] }], ["bold", "italic", "underline", "strike"], [{ list: "ordered" }, { list: "bullet" }], ["link", "clean"]];

/** A collaborative document on /collab/<doc>: Quill 2 bound to a Yjs text, with everyone's cursors. */
export function Editor({ connection, doc, onDoc }) {
  const [draft, setDraft] = useState(doc);
  useEffect(() => setDraft(doc), [doc]);

  function open(e) {
    e.preventDefault();
    const name = draft.trim();
    if (name && !name.includes("/")) onDoc(name);
  }

  return (
    <div className="editor-screen">
      <form className="doc-picker" onSubmit={open}>
        <label>
          Document
          <input value={draft} maxLength={128} onChange={(e) => setDraft(e.target.value)} />
        </label>
        <button type="submit" disabled={!draft.trim() || draft.trim() === doc || draft.includes("/")}>
          Open
        </button>
      </form>
      <SharedDoc key={doc} connection={connection} doc={doc} />
    </div>
  );
}

function SharedDoc({ connection, doc }) {
  const host = useRef(null);
  const [status, setStatus] = useState("connecting");
  const [synced, setSynced] = useState(false);
  const [editors, setEditors] = useState([]);

  useEffect(() => {
    // Quill owns the DOM below this element; it is made fresh for each document.
    const hostEl = host.current;
    const mount = document.createElement("div");
    hostEl.append(mount);
    const quill = new Quill(mount, {
      theme: "snow",
      placeholder: "Write together…",
      modules: { cursors: { transformOnTextChange: true }, toolbar: TOOLBAR, history: { userOnly: true } },
    });
    const ydoc = new Y.Doc();
    const { provider, close } = connection.collab(doc, ydoc);
    const me = connection.user;
    provider.awareness.setLocalStateField("user", { name: me, color: colorOf(me) });
    const binding = new QuillBinding(ydoc.getText("quill"), quill, provider.awareness);

    const onStatus = ({ status: s }) => setStatus(s);
    const onSync = (s) => setSynced(s);
    const onAwareness = () => {
      const names = [...provider.awareness.getStates().values()].map((s) => s.user?.name).filter(Boolean);
      setEditors([...new Set(names)].sort());
    };
    provider.on("status", onStatus);
    provider.on("sync", onSync);
    provider.awareness.on("change", onAwareness);
    onAwareness();
    return () => {
      provider.awareness.off("change", onAwareness);
      binding.destroy();
      close();
      ydoc.destroy();
      mount.remove();
      hostEl.querySelector(".ql-toolbar")?.remove();
    };
  }, [connection, doc]);

  return (
    <div className="shared-doc">
      <div className="doc-status">
        <span className={`pill pill-${status}`} data-testid="doc-status">
          {status === "connected" ? (synced ? "Synced" : "Syncing…") : status === "connecting" ? "Connecting…" : "Offline"}
        </span>
        <span className="editors">
          Editing:{" "}
          {editors.map((n) => (
            <span key={n} className="editor-name" data-user={n} style={{ borderColor: colorOf(n) }}>
              {n}
            </span>
          ))}
        </span>
      </div>
      <div className="quill-host" ref={host} />
    </div>
  );
}
