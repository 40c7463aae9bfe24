import { query, useApi, type AlertList, type RejectionPage, type Session } from "../api";
import { Card, Problem } from "../components/ui";
import { nameOf, time } from "../format";

const KINDS: Record<string, string> = {
  threshold: "Threshold crossed",
  exhausted: "Budget exhausted",
  action: "Enforcement started",
  forecast: "Forecast over budget",
  breaker: "Runaway breaker",
};

interface Entry {
  key: string;
  at: string;
  tag: string;
  tone: string;
  department: string | null;
  title: string;
  text: string;
}

/** Entries as a list rather than a table: long messages stay readable on a phone. */
function Entries(props: { label: string; entries: Entry[]; session: Session; empty: string }) {
  if (props.entries.length === 0) return <p className="empty">{props.empty}</p>;
  return (
    <ul className="entries" aria-label={props.label}>
      {props.entries.map((e) => (
        <li key={e.key}>
          <div className="entry-head">
            <span className={`tag tag-${e.tone}`}>{e.tag}</span>
            <strong>{nameOf(props.session, e.department)}</strong>
            {e.title && <span className="muted">{e.title}</span>}
            <time dateTime={e.at}>{time(e.at, props.session.timezone)}</time>
          </div>
          <p>{e.text}</p>
        </li>
      ))}
    </ul>
  );
}

export function Alerts(props: { session: Session }) {
  const s = props.session;
  const alerts = useApi<AlertList>(query("/alerts", { limit: 100 }));
  const rejections = useApi<RejectionPage>(query("/rejections", { limit: 50 }));
  return (
    <>
      <h1>Alerts</h1>
      <p className="lede">
        {s.sees_organization ? "Every department" : nameOf(s, s.department)}: alerts raised by budgets, and the calls the
        gateway refused. Newest first.
      </p>
      <Problem error={alerts.error ?? rejections.error} />
      <div className="grid">
        <Card title="Alerts raised" wide>
          <Entries
            label="Alerts raised"
            session={s}
            empty="No alerts so far."
            entries={(alerts.data?.alerts ?? []).map((a, i) => ({
              key: `${a.id ?? i}`, at: a.at, tag: KINDS[a.kind] ?? a.kind, tone: "alert", department: a.department,
              title: "", text: a.text,
            }))}
          />
        </Card>
        <Card title="Refused calls" subtitle="Refused before reaching a provider, so they cost nothing" wide>
          <Entries
            label="Refused calls"
            session={s}
            empty="No call was refused."
            entries={(rejections.data?.rejections ?? []).map((r) => ({
              key: r.id, at: r.at, tag: `Refused ${r.http_status}`, tone: "refused", department: r.department,
              title: r.model_requested ?? "", text: r.message,
            }))}
          />
        </Card>
      </div>
    </>
  );
}
