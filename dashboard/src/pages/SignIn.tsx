import { useState, type FormEvent } from "react";
import { api, ApiError, type Session } from "../api";
import { setToken } from "../auth";

/** The token is checked against the API before it is kept for the browser session. */
export function SignIn(props: { onSignedIn: (session: Session) => void; notice?: string }) {
  const [value, setValue] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const submit = async (event: FormEvent) => {
    event.preventDefault();
    const token = value.trim();
    if (!token) {
      setError("Enter an admin token.");
      return;
    }
    setBusy(true);
    setError(null);
    try {
      const session = await api<Session>("/whoami", {}, token);
      setToken(token);
      props.onSignedIn(session);
    } catch (e) {
      setError(e instanceof ApiError && e.status === 401 ? "This token is unknown or was revoked." : (e as Error).message);
    } finally {
      setBusy(false);
    }
  };

  return (
    <main id="main" className="signin">
      <h1>costwarden</h1>
      <p className="lede">AI spend by department, budgets and keys.</p>
      <form onSubmit={submit} aria-label="Sign in">
        {props.notice && <p className="notice">{props.notice}</p>}
        <label htmlFor="token">Token</label>
        <input id="token" type="password" autoComplete="off" spellCheck={false} value={value}
          onChange={(e) => setValue(e.target.value)} aria-describedby="token-help" aria-invalid={Boolean(error)} />
        <p id="token-help" className="help">
          An admin API token (admin, finance, a department manager or a customer). It is kept only for this browser tab's session.
        </p>
        {error && <p className="problem" role="alert">{error}</p>}
        <button type="submit" disabled={busy}>Sign in</button>
      </form>
    </main>
  );
}
