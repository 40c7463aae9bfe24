import { useLocation } from "wouter";
import { query, useApi, type Budget, type BudgetList, type EventPage, type KeyList, type RejectionPage, type Session, type SpendReport } from "../api";
import { enforcement, Timeline } from "../activity";
import { BudgetBar } from "../components/BudgetBar";
import { ShareBar } from "../components/charts";
import { KeysPanel } from "../components/KeysPanel";
import { Card, Problem, Stat, Table } from "../components/ui";
import { monthName, periodName, plural } from "../format";
import { dollars, nanos, sum } from "../money";
import { totalsBy, type Total } from "../spend";

const KEY_BARS = 4; // per-key budgets drawn open; an agent-heavy department has dozens

function budgetTitle(b: Budget, name: string, keyNames: Map<string, string>, many: boolean): string {
  const period = periodName(b.period).toLowerCase();
  const n = many ? ` #${b.index + 1}` : "";
  switch (b.scope_kind) {
    case "department":
      return `${name} ${period} budget${n}`;
    case "team":
      return `Team ${b.team} ${period} budget${n}`;
    case "key":
      return `Key “${keyNames.get(b.key_id ?? "") ?? b.key_id}” ${period} budget${n}`;
    case "user":
      return `User ${b.user} ${period} budget${n}`;
    default:
      return b.label;
  }
}

function Breakdown(props: { title: string; rows: Total[]; total: bigint; name?: (id: string) => string }) {
  return (
    <Card title={props.title} subtitle="This month">
      <Table
        caption={props.title}
        hideCaption
        rows={props.rows.slice(0, 10)}
        rowKey={(r) => r.id}
        empty="No spend yet this month."
        columns={[
          { header: props.title.replace("Spend by ", "").replace(/^./, (c) => c.toUpperCase()), cell: (r) => (props.name ? props.name(r.id) : r.id) },
          { header: "Spend", numeric: true, cell: (r) => dollars(r.amount) },
          { header: "Share", cell: (r) => <ShareBar part={r.amount} whole={props.total} /> },
          { header: "Requests", numeric: true, wideOnly: true, cell: (r) => r.requests.toLocaleString("en-US") },
        ]}
      />
    </Card>
  );
}

export function DepartmentPage(props: { session: Session; id: string | undefined }) {
  const s = props.session;
  const [, navigate] = useLocation();
  const department = s.departments.find((d) => d.id === props.id) ?? s.departments[0];
  const id = department?.id ?? "";
  const since = s.month_start;
  const budgets = useApi<BudgetList>(department ? query("/budgets", { department: id }) : null);
  const spend = (group_by: string) => query("/spend", { group_by, since, department: id });
  const byModel = useApi<SpendReport>(department ? spend("model") : null);
  const byTeam = useApi<SpendReport>(department ? spend("team") : null);
  const byKey = useApi<SpendReport>(department ? spend("key") : null);
  const byUser = useApi<SpendReport>(department ? spend("user") : null);
  const keys = useApi<KeyList>(department ? query("/keys", { department: id }) : null);
  const events = useApi<EventPage>(department ? query("/events", { department: id, since, limit: 300 }) : null);
  const rejections = useApi<RejectionPage>(department ? query("/rejections", { department: id, since, limit: 20 }) : null);

  if (!department) return <p>This token may not read any department.</p>;
  const keyNames = new Map((keys.data?.keys ?? []).map((k) => [k.id, k.name ?? `${k.prefix}…`]));
  const models = totalsBy(byModel.data, "model");
  const spent = sum(models.map((m) => m.amount));
  const requests = byModel.data?.totals.requests ?? 0;
  const list = (budgets.data?.budgets ?? []).filter((b) => b.department === id && b.scope_kind !== "organization");
  const main = list.find((b) => b.scope_kind === "department" && b.unit === "usd");
  const counts = new Map<string, number>();
  for (const b of list) counts.set(b.scope, (counts.get(b.scope) ?? 0) + 1);
  // Department and team budgets first; of the per-key and per-user ones, the fullest few, the rest folded.
  const utilization = (b: Budget) => Number(b.utilization_pct);
  const perOne = (b: Budget) => b.scope_kind === "key" || b.scope_kind === "user";
  const keyBudgets = list.filter(perOne).sort((a, b) => utilization(b) - utilization(a));
  const shown = [...list.filter((b) => !perOne(b)), ...keyBudgets.slice(0, KEY_BARS)];
  const folded = keyBudgets.slice(KEY_BARS);
  const bar = (b: Budget) => (
    <BudgetBar key={`${b.scope}#${b.index}`} budget={b} title={budgetTitle(b, department.name, keyNames, (counts.get(b.scope) ?? 0) > 1)}
      asOf={budgets.data?.as_of ?? s.now} timezone={s.timezone} />
  );
  const actions = enforcement(events.data?.events ?? [], rejections.data?.rejections ?? []).slice(0, 12);

  return (
    <>
      <div className="page-head">
        <h1>{department.name}</h1>
        {s.departments.length > 1 && (
          <div className="field inline">
            <label htmlFor="department-select">Department</label>
            <select id="department-select" value={id} onChange={(e) => navigate(`/department/${e.target.value}`)}>
              {s.departments.map((d) => (
                <option key={d.id} value={d.id}>{d.name}</option>
              ))}
            </select>
          </div>
        )}
      </div>
      <p className="lede">
        {monthName(s.month_start, s.timezone)} to date{department.cost_center ? ` · cost center ${department.cost_center}` : ""}
        {department.name !== department.id ? ` · id ${department.id}` : ""}
      </p>
      <Problem error={budgets.error ?? byModel.error} />
      <div className="stats">
        <Stat label="Spent this month" value={byModel.data ? dollars(spent) : "…"} note={`${plural(requests, "request")} so far`} />
        {main && (
          <Stat
            label={`${periodName(main.period)} budget`}
            value={dollars(nanos(main.limit_usd))}
            note={`${main.utilization_pct}% used · ${dollars(nanos(main.remaining_usd))} left`}
            tone={nanos(main.spent_usd) >= nanos(main.limit_usd) ? "bad" : "good"}
          />
        )}
        {main?.forecast_usd && (
          <Stat
            label="Forecast at period end"
            value={dollars(nanos(main.forecast_usd))}
            note={nanos(main.forecast_usd) > nanos(main.limit_usd) ? "Over budget at this pace" : "Within budget at this pace"}
            tone={nanos(main.forecast_usd) > nanos(main.limit_usd) ? "bad" : "good"}
          />
        )}
      </div>
      <div className="grid">
        <Card title="Budgets" subtitle="Bar: spent (solid) and in-flight calls (light); ticks: alert thresholds; right edge: the limit" wide>
          {list.length === 0 ? (
            <p className="empty">No budgets for this department in the policy.</p>
          ) : (
            <div className="budgets">
              {shown.map(bar)}
              {folded.length > 0 && (
                <details>
                  <summary>{folded.length} more per-key and per-user budget{folded.length === 1 ? "" : "s"}</summary>
                  <div className="budgets">{folded.map(bar)}</div>
                </details>
              )}
            </div>
          )}
        </Card>
        <Breakdown title="Spend by model" rows={models} total={spent} />
        <Breakdown title="Spend by team" rows={totalsBy(byTeam.data, "team")} total={spent} name={(t) => (t === "(none)" ? "No team" : t)} />
        <Breakdown title="Spend by key" rows={totalsBy(byKey.data, "key")} total={spent} name={(k) => keyNames.get(k) ?? k} />
        <Breakdown title="Spend by user" rows={totalsBy(byUser.data, "user")} total={spent} name={(u) => (u === "(none)" ? "No user given" : u)} />
        <Card title="Refusals and downgrades" subtitle="This month, newest first" wide>
          <Timeline items={actions} session={s} label={`Refusals and downgrades of ${department.name}`} empty="No call was refused or downgraded this month." />
        </Card>
        <Card title="Keys" subtitle={s.manages_keys ? "Create a key for an application or person; revoke one that leaked or is no longer used" : "Read only for this role"} wide>
          <KeysPanel session={s} department={department} />
        </Card>
      </div>
    </>
  );
}
