// Enforcement actions and alerts as one timeline: what the gateway did about spend.
import type { Alert, Rejection, Session, UsageEvent } from "./api";
import { nameOf, time } from "./format";

export interface Happening {
  at: string;
  kind: "Refused" | "Downgraded" | "Clamped" | "Alert";
  department: string | null;
  text: string;
  key: string;
}

const REFUSALS: Record<string, string> = {
  budget_exceeded: "over budget",
  rate_limit_exceeded: "over its per-minute rate limit",
  model_not_allowed: "model not allowed",
  tier_restricted: "model tier restricted",
  capacity_exceeded: "waited too long for capacity",
};

export function enforcement(events: UsageEvent[], rejections: Rejection[]): Happening[] {
  const out: Happening[] = [];
  for (const e of events) {
    if (e.decision.includes("downgrade")) {
      out.push({ at: e.admitted_at, kind: "Downgraded", department: e.department, key: `e${e.id}`,
                 text: `${e.model_requested} → ${e.model_served}` });
    } else if (e.decision.includes("clamp")) {
      out.push({ at: e.admitted_at, kind: "Clamped", department: e.department, key: `e${e.id}`,
                 text: `output tokens capped on ${e.model_served}` });
    }
  }
  for (const r of rejections) {
    out.push({ at: r.at, kind: "Refused", department: r.department, key: `r${r.id}`,
               text: `${REFUSALS[r.code] ?? r.code.replace(/_/g, " ")}${r.model_requested ? ` (${r.model_requested})` : ""}` });
  }
  return out.sort((a, b) => b.at.localeCompare(a.at));
}

export function alertHappenings(alerts: Alert[]): Happening[] {
  return alerts.map((a) => ({ at: a.at, kind: "Alert", department: a.department, text: a.text, key: `a${a.id ?? a.at}` }));
}

export function Timeline(props: { items: Happening[]; session: Session; label: string; empty: string }) {
  if (props.items.length === 0) return <p className="empty">{props.empty}</p>;
  return (
    <ul className="timeline" aria-label={props.label}>
      {props.items.map((h) => (
        <li key={h.key}>
          <span className={`tag tag-${h.kind.toLowerCase()}`}>{h.kind}</span>
          <span className="timeline-text">
            <strong>{nameOf(props.session, h.department)}</strong> {h.text}
          </span>
          <time dateTime={h.at}>{time(h.at, props.session.timezone)}</time>
        </li>
      ))}
    </ul>
  );
}
