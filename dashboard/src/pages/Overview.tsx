import { Link } from "wouter";
import { query, useApi, type AlertList, type BudgetList, type EventPage, type RejectionPage, type Session, type SpendReport } from "../api";
import { alertHappenings, enforcement, Timeline } from "../activity";
import { BudgetBar } from "../components/BudgetBar";
import { DailyStack, DepartmentPie, ShareBar } from "../components/charts";
import { Card, Loading, Problem, Stat, Table } from "../components/ui";
import { colorOf, day, monthName, plural } from "../format";
import { dollars, nanos, percent, sum } from "../money";
import { daily, totalsBy } from "../spend";

/** Spend projected to the month end at the month's pace so far. */
function forecast(spent: bigint, start: string, end: string, now: string): bigint {
  const elapsed = BigInt(Math.max(1, Date.parse(now) - Date.parse(start)));
  const length = BigInt(Date.parse(end) - Date.parse(start));
  return (spent * length) / elapsed;
}

export function Overview(props: { session: Session }) {
  const s = props.session;
  const since = s.month_start;
  const budgets = useApi<BudgetList>("/budgets");
  const byDept = useApi<SpendReport>(query("/spend", { group_by: "department", since }));
  const byDay = useApi<SpendReport>(query("/spend", { group_by: "day,department", since }));
  const byModel = useApi<SpendReport>(query("/spend", { group_by: "model", since }));
  const alerts = useApi<AlertList>(query("/alerts", { limit: 6 }));
  const events = useApi<EventPage>(query("/events", { since, limit: 300 }));
  const rejections = useApi<RejectionPage>(query("/rejections", { since, limit: 20 }));

  const month = monthName(s.month_start, s.timezone);
  const departments = totalsBy(byDept.data, "department");
  const spent = sum(departments.map((d) => d.amount));
  const requests = byDept.data?.totals.requests ?? 0;
  const org = budgets.data?.budgets.find((b) => b.scope_kind === "organization" && b.unit === "usd" && b.period === "monthly");
  const limit = org ? nanos(org.limit_usd) : null;
  const asOf = budgets.data?.as_of ?? s.now;
  const projected = org?.forecast_usd ? nanos(org.forecast_usd) : forecast(spent, s.month_start, s.month_end, asOf);
  // How much history the projection stands on: early in a month it is a rough guess.
  const daysIn = Math.max(1, Math.ceil((Date.parse(asOf) - Date.parse(s.month_start)) / 86_400_000));
  const slices = s.departments.map((d) => ({
    id: d.id,
    name: d.name,
    amount: departments.find((t) => t.id === d.id)?.amount ?? 0n,
    color: colorOf(s, d.id),
  }));
  const series = s.departments.map((d) => ({ id: d.id, name: d.name, color: colorOf(s, d.id) }));
  const days = daily(byDay.data, since, s.month_end, "department").map((d) => ({ ...d, day: day(d.day + "T12:00:00Z", "UTC") }));
  const models = totalsBy(byModel.data, "model").slice(0, 8);
  const actions = enforcement(events.data?.events ?? [], rejections.data?.rejections ?? []).slice(0, 8);
  const deptBudget = (id: string) =>
    budgets.data?.budgets.find((b) => b.scope_kind === "department" && b.department === id && b.unit === "usd");

  return (
    <>
      <h1>AI spend — {month}</h1>
      <p className="lede">
        Month to date across the organization, in US dollars. Updated every few seconds.
      </p>
      <Problem error={byDept.error ?? budgets.error} />
      <div className="stats" aria-live="polite">
        <Stat label="Spent this month" value={byDept.data ? dollars(spent) : "…"} note={`${plural(requests, "request")} so far`} />
        <Stat
          label="Organization budget"
          value={limit === null ? "None set" : dollars(limit)}
          note={limit === null ? "No organization-wide monthly budget in the policy" : `${percent(spent, limit)} used · ${dollars(limit - spent)} left`}
          tone={limit === null ? undefined : spent >= limit ? "bad" : "good"}
        />
        <Stat
          label="Forecast for the month"
          value={byDept.data ? dollars(projected) : "…"}
          note={`${limit === null ? "At this month's pace" : projected > limit ? `Over budget by ${dollars(projected - limit)}` : `Within budget (${dollars(limit - projected)} to spare)`} · from ${plural(daysIn, "day")} of spend`}
          tone={limit === null ? undefined : projected > limit ? "bad" : "good"}
        />
      </div>

      <div className="grid">
        {org && (
          <Card title="Organization budget this month" wide>
            <BudgetBar budget={org} title="Organization monthly budget" hideTitle asOf={asOf} timezone={s.timezone} />
          </Card>
        )}
        <Card title="Spend by department" subtitle={`${month}, month to date`}>
          {byDept.isLoading ? <Loading what="spend" /> : <DepartmentPie slices={slices} />}
        </Card>
        <Card title="Departments" subtitle="Spend this month and how much of each department's budget it uses">
          <Table
            caption="Departments this month"
            hideCaption
            rows={s.departments
              .map((d) => ({ d, total: departments.find((t) => t.id === d.id) }))
              .sort((a, b) => ((b.total?.amount ?? 0n) > (a.total?.amount ?? 0n) ? 1 : (b.total?.amount ?? 0n) < (a.total?.amount ?? 0n) ? -1 : 0))}
            rowKey={(r) => r.d.id}
            columns={[
              { header: "Department", cell: (r) => <Link href={`/department/${r.d.id}`}>{r.d.name}</Link> },
              { header: "Spent", numeric: true, cell: (r) => dollars(r.total?.amount ?? 0n) },
              { header: "Budget used", numeric: true, cell: (r) => {
                const b = deptBudget(r.d.id);
                return b ? (<>{b.utilization_pct}%<small className="of">of {dollars(nanos(b.limit_usd))}</small></>) : <span className="muted">no budget</span>;
              } },
              { header: "Requests", numeric: true, wideOnly: true, cell: (r) => (r.total?.requests ?? 0).toLocaleString("en-US") },
            ]}
          />
        </Card>
        <Card title="Daily spend by department" subtitle="Each bar is one day (UTC), split by department" wide>
          {days.length === 0 ? (
            <p className="empty">No spend yet this month.</p>
          ) : (
            <DailyStack
              days={days}
              series={series}
              label={`Daily spend by department, ${month}: ` + days.map((d) => `${d.day} ${dollars(sum(Object.values(d.values)))}`).join(", ")}
            />
          )}
        </Card>
        <Card title="Top models" subtitle="This month, by spend">
          <Table
            caption="Top models by spend this month"
            hideCaption
            rows={models}
            rowKey={(m) => m.id}
            empty="No calls yet this month."
            columns={[
              { header: "Model", cell: (m) => m.id },
              { header: "Spend", numeric: true, cell: (m) => dollars(m.amount) },
              { header: "Share", cell: (m) => <ShareBar part={m.amount} whole={spent} /> },
              { header: "Requests", numeric: true, wideOnly: true, cell: (m) => m.requests.toLocaleString("en-US") },
            ]}
          />
        </Card>
        <Card title="Recent alerts" subtitle={<>Budget thresholds crossed · <Link href="/alerts">all alerts</Link></>}>
          <Timeline items={alertHappenings(alerts.data?.alerts ?? [])} session={s} label="Recent alerts" empty="No alerts." />
        </Card>
        <Card title="What the gateway did" subtitle="Latest calls it refused, moved to a cheaper model, or capped, this month" wide>
          <Timeline items={actions} session={s} label="Recent enforcement actions" empty="No call was refused or downgraded this month." />
        </Card>
      </div>
      <p className="footnote">Spend is what the gateway settled for each call at the provider's list prices.</p>
    </>
  );
}
