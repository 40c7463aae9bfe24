import { useState } from "react";
import { api, query, useApi, type AuditEntry, type AuditPage, type Session } from "../api";
import { Card, Problem, Table } from "../components/ui";
import { nameOf, time } from "../format";

export const ACTIONS: Record<string, string> = {
  "key.created": "Key created",
  "key.revoked": "Key revoked",
  "token.created": "Token created",
  "token.revoked": "Token revoked",
  "policy.reloaded": "Policy reloaded",
  "policy.adopted": "Policy adopted",
  "budgets.changed": "Budgets changed",
  "period.closed": "Period closed",
  "period.reopened": "Period reopened",
};

const ROLES: Record<string, string> = {
  admin: "Administrator",
  finance: "Finance",
  manager: "Manager",
  cli: "Command line",
  server: "Server",
};

interface BudgetChange {
  scope: string;
  index: number;
  before: string | null;
  after: string | null;
}

function text(value: unknown): string | null {
  return typeof value === "string" && value ? value : null;
}

/** What changed, in words: the key or token, the policy versions, each budget before and after. */
function describe(e: AuditEntry): string {
  const d = e.detail;
  switch (e.action) {
    case "key.created":
    case "key.revoked": {
      const bound = [text(d.team) && `team ${d.team}`, text(d.user) && `user ${d.user}`].filter(Boolean).join(", ");
      return `${text(d.name) ?? "Unnamed key"} (${e.target}${bound ? `, ${bound}` : ""})`;
    }
    case "token.created":
    case "token.revoked":
      return `${text(d.name) ?? "Unnamed token"} (${e.target}, role ${String(d.role ?? "?")})`;
    case "budgets.changed": {
      const changes = (Array.isArray(d.budgets) ? d.budgets : []) as BudgetChange[];
      return changes
        .map((c) => `${c.scope} #${c.index + 1}: ${c.before ?? "(none)"} → ${c.after ?? "(removed)"}`)
        .join("; ");
    }
    case "policy.reloaded":
    case "policy.adopted":
      return `Version ${e.version_before ?? "?"} → ${e.version_after ?? "?"}` +
        (typeof d.budgets_changed === "number" ? `, ${d.budgets_changed} budget change(s)` : "");
    case "period.closed":
    case "period.reopened":
      return `Billing period ${e.target ?? ""}`;
    default:
      return e.target ?? "";
  }
}

export function Audit(props: { session: Session }) {
  const s = props.session;
  const [action, setAction] = useState("");
  const first = useApi<AuditPage>(query("/audit", { limit: 100, action }));
  const [older, setOlder] = useState<{ entries: AuditEntry[]; cursor: string | null; action: string } | null>(null);
  const [loading, setLoading] = useState(false);
  const kept = older && older.action === action ? older : null;
  const entries = [...(first.data?.entries ?? []), ...(kept?.entries ?? [])];
  const cursor = kept ? kept.cursor : first.data?.next_cursor ?? null;
  const loadOlder = async () => {
    if (!cursor) return;
    setLoading(true);
    try {
      const page = await api<AuditPage>(query("/audit", { limit: 100, action, cursor }));
      setOlder({ entries: [...(kept?.entries ?? []), ...page.entries], cursor: page.next_cursor, action });
    } finally {
      setLoading(false);
    }
  };
  return (
    <>
      <h1>Audit log</h1>
      <p className="lede">
        {s.sees_organization ? "Every change" : `Changes about ${nameOf(s, s.department)}`}: keys and tokens created or
        revoked, policy reloads and the budgets they changed, closed periods. Newest first.
      </p>
      <div className="field inline filters">
        <label htmlFor="audit-action">Kind of change</label>
        <select id="audit-action" value={action} onChange={(e) => setAction(e.target.value)}>
          <option value="">All changes</option>
          {Object.entries(ACTIONS).map(([value, label]) => (
            <option key={value} value={value}>{label}</option>
          ))}
        </select>
      </div>
      <Problem error={first.error} />
      <div className="grid">
        <Card title="Changes" wide>
          <Table
            caption="Changes, newest first"
            hideCaption
            rows={entries}
            rowKey={(e, i) => `${e.id ?? i}`}
            empty={first.isLoading ? "Loading…" : "No changes recorded."}
            columns={[
              { header: "When", cell: (e) => <time dateTime={e.at}>{time(e.at, s.timezone)}</time> },
              { header: "Change", cell: (e) => ACTIONS[e.action] ?? e.action },
              { header: "What", cell: (e) => <span className="what">{describe(e)}</span> },
              {
                header: "By",
                cell: (e) => (
                  <span className="by">
                    {ROLES[e.actor_role] ?? e.actor_role} <code>{e.actor_id}</code>
                  </span>
                ),
              },
              { header: "Department", wideOnly: true, cell: (e) => (e.department ? nameOf(s, e.department) : "Organization") },
            ]}
          />
          {cursor && (
            <p>
              <button type="button" className="quiet" onClick={loadOlder} disabled={loading}>
                {loading ? "Loading…" : "Show older changes"}
              </button>
            </p>
          )}
        </Card>
      </div>
    </>
  );
}
