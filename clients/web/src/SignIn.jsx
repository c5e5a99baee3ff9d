import { useState } from "react";
import { signIn } from "./session.js";

export function SignIn({ onSignedIn }) {
  const [name, setName] = useState("");
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);

  async function submit(e) {
    e.preventDefault();
    setBusy(true);
    setError("");
    try {
      onSignedIn(await signIn(name.trim()));
    } catch (err) {
      setError(err.message || "Cannot reach the server.");
      setBusy(false);
    }
  }

  return (
    <div className="signin">
      <form onSubmit={submit}>
        <h1>Rusher</h1>
        <p>Chat, a shared editor and a live geofence map, in real time. Pick a name to start.</p>
        <label>
          Your name
          <input
            name="name"
            autoFocus
            maxLength={64}
            value={name}
            onChange={(e) => setName(e.target.value)}
            placeholder="e.g. alice"
          />
        </label>
        <button type="submit" disabled={busy || !name.trim()}>
          {busy ? "Signing in…" : "Sign in"}
        </button>
        {error && (
          <p className="error" role="alert">
            {error}
          </p>
        )}
        <p className="hint">Development sign-in: the server trusts the name you give.</p>
      </form>
    </div>
  );
}
