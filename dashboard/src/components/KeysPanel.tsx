import { useState, type FormEvent } from "react";
import { useApi, query, useCreateKey, useRevokeKey, type Department, type KeyCreated, type KeyList, type Session } from "../api";
import { time } from "../format";
import { Problem, Table } from "./ui";

/** The department's keys; a manager of the department or an admin creates and revokes them. */
export function KeysPanel(props: { session: Session; department: Department }) {
  const { session, department } = props;
  const keys = useApi<KeyList>(query("/keys", { department: department.id }));
  const create = useCreateKey();
  const revoke = useRevokeKey();
  const [name, setName] = useState("");
  const [team, setTeam] = useState("");
  const [user, setUser] = useState("");
  const [created, setCreated] = useState<KeyCreated | null>(null);
  const [confirming, setConfirming] = useState<string | null>(null);
  const [copied, setCopied] = useState(false);

  const submit = (event: FormEvent) => {
    event.preventDefault();
    setCopied(false);
    create.mutate({ department: department.id, name, team, user }, {
      onSuccess: (key) => {
        setCreated(key);
        setName("");
        setUser("");
      },
    });
  };
  const copy = async () => {
    if (!created) return;
    try {
      await navigator.clipboard.writeText(created.key);
      setCopied(true);
    } catch {
      setCopied(false);
    }
  };

  const active = (keys.data?.keys ?? []).filter((k) => k.active);
  const revoked = (keys.data?.keys ?? []).filter((k) => !k.active);
  return (
    <>
      {session.manages_keys && (
        <form className="key-form" onSubmit={submit} aria-label="Create a key">
          <div className="field">
            <label htmlFor="key-name">Key name</label>
            <input id="key-name" value={name} onChange={(e) => setName(e.target.value)} maxLength={128} placeholder="e.g. campaign assistant" />
          </div>
          {department.teams.length > 0 && (
            <div className="field">
              <label htmlFor="key-team">Team</label>
              <select id="key-team" value={team} onChange={(e) => setTeam(e.target.value)}>
                <option value="">No team</option>
                {department.teams.map((t) => (
                  <option key={t} value={t}>{t}</option>
                ))}
              </select>
            </div>
          )}
          <div className="field">
            <label htmlFor="key-user">User (optional)</label>
            <input id="key-user" value={user} onChange={(e) => setUser(e.target.value)} maxLength={128} />
          </div>
          <button type="submit" disabled={create.isPending}>Create key</button>
        </form>
      )}
      <Problem error={create.error ?? revoke.error} />
      {created && (
        <div className="secret" role="status">
          <p>
            <strong>New key “{created.name ?? created.prefix}”.</strong> Copy the secret now: it is shown this once and
            cannot be recovered.
          </p>
          <div className="secret-row">
            <code data-testid="new-key-secret" aria-label="New key secret">{created.key}</code>
            <button type="button" onClick={copy}>{copied ? "Copied" : "Copy"}</button>
            <button type="button" className="quiet" onClick={() => setCreated(null)}>Done</button>
          </div>
        </div>
      )}
      <Table
        caption={`Active keys of ${department.name}`}
        rows={active}
        rowKey={(k) => k.id}
        empty="No active keys."
        columns={[
          { header: "Name", cell: (k) => k.name ?? "(unnamed)" },
          { header: "Key", cell: (k) => <code>{k.prefix}…</code> },
          { header: "Team", wideOnly: true, cell: (k) => k.team ?? "—" },
          { header: "User", wideOnly: true, cell: (k) => k.user ?? "—" },
          { header: "Created", wideOnly: true, cell: (k) => time(k.created_at, session.timezone) },
          ...(session.manages_keys
            ? [{
                header: "Action",
                cell: (k: (typeof active)[number]) =>
                  confirming === k.id ? (
                    <span className="confirm">
                      <button type="button" className="danger" onClick={() => revoke.mutate(k.id, { onSettled: () => setConfirming(null) })}
                        aria-label={`Confirm revoking ${k.name ?? k.prefix}`}>Confirm revoke</button>
                      <button type="button" className="quiet" onClick={() => setConfirming(null)}>Cancel</button>
                    </span>
                  ) : (
                    <button type="button" className="quiet" onClick={() => setConfirming(k.id)} aria-label={`Revoke ${k.name ?? k.prefix}`}>
                      Revoke
                    </button>
                  ),
              }]
            : []),
        ]}
      />
      {revoked.length > 0 && (
        <details>
          <summary>{revoked.length} revoked key{revoked.length === 1 ? "" : "s"}</summary>
          <Table
            caption={`Revoked keys of ${department.name}`}
            rows={revoked}
            rowKey={(k) => k.id}
            columns={[
              { header: "Name", cell: (k) => k.name ?? "(unnamed)" },
              { header: "Key", cell: (k) => <code>{k.prefix}…</code> },
              { header: "Revoked", cell: (k) => (k.revoked_at ? time(k.revoked_at, session.timezone) : "") },
            ]}
          />
        </details>
      )}
    </>
  );
}
