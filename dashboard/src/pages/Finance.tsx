import { useQuery } from "@tanstack/react-query";
import { useState } from "react";
import { download, query, saveBlob, useApi, type BudgetList, type Session, type SpendReport } from "../api";
import { ShareBar } from "../components/charts";
import { Card, Problem, Table } from "../components/ui";
import { monthName, nameOf } from "../format";
import { dollars, nanos, percent, sum } from "../money";
import { totalsBy } from "../spend";

interface OpenApi {
  paths: Record<string, Record<string, { parameters?: { name: string; schema?: { enum?: string[]; anyOf?: { enum?: string[] }[] } }[] }>>;
}

interface StatementLine {
  line_type: string;
  corrects_period: string | null;
  department_id: string;
  department_name: string;
  cost_center: string;
  requests: number;
  usage_cost_usd: string;
  shared_cost_usd: string;
  total_cost_usd: string;
  share_pct: string;
}

interface Statement {
  period: string;
  status: string;
  lines: StatementLine[];
  totals: { usage_cost_usd: string; shared_cost_usd: string; total_cost_usd: string; requests: number };
}

interface ReportDocument {
  rows: Record<string, string | number | null>[];
  notes?: string[];
}

const text = (v: string | number | null | undefined) => (v === null || v === undefined ? "" : String(v));

/** The report endpoints this server has (another version may add or lack some). */
function useReports() {
  return useQuery<OpenApi>({
    queryKey: ["openapi"],
    queryFn: async () => (await fetch("/admin/v1/openapi.json")).json(),
    staleTime: Infinity,
  });
}

function formatsOf(spec: OpenApi | undefined, path: string): string[] {
  const format = spec?.paths[path]?.get?.parameters?.find((p) => p.name === "format");
  return format?.schema?.enum ?? format?.schema?.anyOf?.find((a) => a.enum)?.enum ?? [];
}

function csvCell(value: string | number): string {
  const text = String(value);
  // A cell starting with = + - @ is a formula to a spreadsheet: quote it as text.
  const safe = /^[=+\-@\t\r]/.test(text) ? `'${text}` : text;
  return /[",\n]/.test(safe) ? `"${safe.replace(/"/g, '""')}"` : safe;
}

/** "dept:HR" -> the department's display name; "team:HR/DESK" -> "Team DESK (HR)". */
function budgetName(s: Session, scope: string, label: string): string {
  const [kind, rest = ""] = scope.split(":");
  if (kind === "org") return "Organization";
  if (kind === "dept") return nameOf(s, rest);
  if (kind === "team") {
    const [department, team] = rest.split("/");
    return `Team ${team} (${nameOf(s, department)})`;
  }
  return label;
}

export function Finance(props: { session: Session }) {
  const s = props.session;
  const [period, setPeriod] = useState(s.months[0]?.period ?? "");
  const month = s.months.find((m) => m.period === period) ?? s.months[0];
  const range = { since: month.start, until: month.end };
  const byDept = useApi<SpendReport>(query("/spend", { group_by: "department", ...range }));
  const byModel = useApi<SpendReport>(query("/spend", { group_by: "model", ...range }));
  const budgets = useApi<BudgetList>("/budgets");
  const spec = useReports();
  const hasChargeback = Boolean(spec.data?.paths["/chargeback"]?.get);
  const statement = useApi<Statement>(hasChargeback ? query("/chargeback", { period }) : null);
  const formats = formatsOf(spec.data, "/chargeback");
  const focusPath = Object.keys(spec.data?.paths ?? {}).find((p) => p.includes("focus") && spec.data?.paths[p].get);
  const [downloadError, setDownloadError] = useState<string | null>(null);
  const hasForecast = Boolean(spec.data?.paths["/reports/forecast"]?.get);
  const hasEfficiency = Boolean(spec.data?.paths["/reports/efficiency"]?.get);
  const forecastReport = useApi<ReportDocument>(hasForecast ? "/reports/forecast" : null);
  const efficiencyReport = useApi<ReportDocument>(hasEfficiency ? query("/reports/efficiency", { period }) : null);

  const departments = totalsBy(byDept.data, "department");
  const total = sum(departments.map((d) => d.amount));
  const models = totalsBy(byModel.data, "model");
  const name = monthName(month.start, s.timezone);
  const deptBudgets = (budgets.data?.budgets ?? []).filter((b) => b.scope_kind === "department" && b.unit === "usd" && b.period === "monthly");

  const ledgerCsv = () => {
    const header = ["period", "department_id", "department_name", "cost_center", "gl_account", "requests", "input_tokens", "output_tokens", "cost_usd"];
    const rows = departments.map((d) => {
      const info = s.departments.find((x) => x.id === d.id);
      return [period, d.id, info?.name ?? d.id, info?.cost_center ?? "", info?.gl_account ?? "", d.row.requests, d.row.input_tokens, d.row.output_tokens, d.row.cost_usd];
    });
    const text = [header, ...rows].map((r) => r.map(csvCell).join(",")).join("\r\n") + "\r\n";
    saveBlob(new Blob([text], { type: "text/csv" }), `costwarden-spend-${period}.csv`);
  };
  const fetchFile = (path: string, filename: string) => {
    setDownloadError(null);
    download(path, filename).catch((e: Error) => setDownloadError(e.message));
  };

  return (
    <>
      <div className="page-head">
        <h1>Finance — {name}</h1>
        <div className="field inline">
          <label htmlFor="period-select">Billing period</label>
          <select id="period-select" value={period} onChange={(e) => setPeriod(e.target.value)}>
            {s.months.map((m) => (
              <option key={m.period} value={m.period}>{monthName(m.start, s.timezone)}</option>
            ))}
          </select>
        </div>
      </div>
      <p className="lede">Billing months run in {s.timezone} time. Amounts are the gateway's settled costs at list prices.</p>
      <Problem error={byDept.error} />
      {downloadError && <p className="problem" role="alert">{downloadError}</p>}
      <div className="grid">
        <Card title="Spend by department" subtitle={`${name}: the basis of the chargeback`} wide>
          <Table
            caption={`Spend by department, ${name}`}
            hideCaption
            rows={departments}
            rowKey={(d) => d.id}
            empty="No spend in this period."
            columns={[
              { header: "Department", cell: (d) => nameOf(s, d.id) },
              { header: "Spend", numeric: true, cell: (d) => dollars(d.amount) },
              { header: "Share", cell: (d) => <ShareBar part={d.amount} whole={total} /> },
              { header: "Requests", numeric: true, wideOnly: true, cell: (d) => d.requests.toLocaleString("en-US") },
              { header: "Tokens in / out", numeric: true, wideOnly: true, cell: (d) => `${d.row.input_tokens.toLocaleString("en-US")} / ${d.row.output_tokens.toLocaleString("en-US")}` },
              { header: "Cost center", wideOnly: true, cell: (d) => s.departments.find((x) => x.id === d.id)?.cost_center || "—" },
            ]}
            footer={["Total", dollars(total), total > 0n ? "100%" : "", (byDept.data?.totals.requests ?? 0).toLocaleString("en-US"), "", ""]}
          />
          <div className="actions">
            <button type="button" onClick={ledgerCsv} disabled={departments.length === 0}>Download spend by department (CSV)</button>
          </div>
        </Card>
        <Card title="Chargeback statement" subtitle="With shared costs allocated to departments" wide>
          {hasChargeback ? (
            <>
              <Problem error={statement.error} />
              {/* Drawn only when the answer has the statement's shape (its JSON document, SPEC section 7). */}
              {statement.data && Array.isArray(statement.data.lines) && statement.data.totals && (
                <Table
                  caption={`Chargeback statement ${statement.data.period} (${statement.data.status})`}
                  rows={statement.data.lines}
                  rowKey={(l) => `${l.department_id}-${l.corrects_period ?? ""}`}
                  columns={[
                    { header: "Department", cell: (l) => `${l.department_name}${l.corrects_period ? ` (correction ${l.corrects_period})` : ""}` },
                    { header: "Cost center", cell: (l) => l.cost_center || "—" },
                    { header: "Usage", numeric: true, cell: (l) => dollars(nanos(l.usage_cost_usd)) },
                    { header: "Shared", numeric: true, cell: (l) => dollars(nanos(l.shared_cost_usd)) },
                    { header: "Total", numeric: true, cell: (l) => dollars(nanos(l.total_cost_usd)) },
                    { header: "Share", numeric: true, cell: (l) => `${l.share_pct}%` },
                  ]}
                  footer={["Total", "", dollars(nanos(statement.data.totals.usage_cost_usd)), dollars(nanos(statement.data.totals.shared_cost_usd)), dollars(nanos(statement.data.totals.total_cost_usd)), ""]}
                />
              )}
              <div className="actions">
                {(formats.length ? formats : ["json"]).map((f) => (
                  <button key={f} type="button" onClick={() => fetchFile(query("/chargeback", { period, format: formats.length ? f : null }), `chargeback-${period}.${f === "focus" ? "focus.csv" : f}`)}>
                    Download {f.toUpperCase()}
                  </button>
                ))}
                {focusPath && (
                  <button type="button" onClick={() => fetchFile(query(focusPath, { period }), `focus-${period}.csv`)}>Download FOCUS</button>
                )}
              </div>
            </>
          ) : (
            <p className="empty">
              This server does not serve chargeback statements over its API yet. Finance can produce the statement, with
              shared costs and CSV, JSON or FOCUS output, with <code>costwarden report chargeback --period {period}</code>.
            </p>
          )}
        </Card>
        <Card title="Spend by model" subtitle={name} wide>
          <Table
            caption={`Spend by model, ${name}`}
            hideCaption
            rows={models.slice(0, 12)}
            rowKey={(m) => m.id}
            empty="No spend in this period."
            columns={[
              { header: "Model", cell: (m) => m.id },
              { header: "Spend", numeric: true, cell: (m) => dollars(m.amount) },
              { header: "Share", numeric: true, cell: (m) => percent(m.amount, total) },
            ]}
          />
        </Card>
        {hasForecast ? (
          <Card title="Budget forecast" subtitle="Current period of each budget: projected spend at its end, from the spend per weekday so far" wide>
            <Problem error={forecastReport.error} />
            <Table
              caption="Budget forecast"
              hideCaption
              rows={(forecastReport.data?.rows ?? []).filter((r) => r.unit === "usd")}
              rowKey={(r) => `${text(r.scope)}-${text(r.period)}`}
              empty="No calendar budgets in the policy."
              columns={[
                { header: "Budget", cell: (r) => `${budgetName(s, text(r.scope), text(r.label))} (${text(r.period)})` },
                { header: "Spent", numeric: true, cell: (r) => dollars(nanos(text(r.spent))) },
                { header: "Projected", numeric: true, cell: (r) => (r.projected === null ? "—" : dollars(nanos(text(r.projected)))) },
                { header: "Limit", numeric: true, cell: (r) => dollars(nanos(text(r.limit))) },
                { header: "Outlook", cell: (r) => (r.limit_reached_on ? <strong className="over">limit reached {text(r.limit_reached_on).slice(0, 10)}</strong> : text(r.state)) },
              ]}
            />
            <div className="actions">
              <button type="button" onClick={() => fetchFile(query("/reports/forecast", { format: "csv" }), "forecast.csv")}>Download forecast (CSV)</button>
            </div>
          </Card>
        ) : (
          <Card title="Budgets and forecasts" subtitle="This month: each department's monthly budget and where spend is heading at its pace so far">
            <Table
              caption="Department budgets and forecasts this month"
              hideCaption
              rows={deptBudgets}
              rowKey={(b) => `${b.scope}#${b.index}`}
              empty="No monthly department budgets in the policy."
              columns={[
                { header: "Department", cell: (b) => nameOf(s, b.department) },
                { header: "Spent", numeric: true, cell: (b) => dollars(nanos(b.spent_usd)) },
                { header: "Forecast", numeric: true, cell: (b) => (b.forecast_usd ? dollars(nanos(b.forecast_usd)) : "—") },
                { header: "Budget", numeric: true, cell: (b) => dollars(nanos(b.limit_usd)) },
                { header: "Status", cell: (b) => (b.forecast_usd && nanos(b.forecast_usd) > nanos(b.limit_usd) ? <strong className="over">over</strong> : "on track") },
              ]}
            />
          </Card>
        )}
        {hasEfficiency && (
          <Card title="Efficiency" subtitle={`${name}: what each department pays per call, and what caching and downgrades saved`} wide>
            <Problem error={efficiencyReport.error} />
            <Table
              caption={`Efficiency, ${name}`}
              hideCaption
              rows={(efficiencyReport.data?.rows ?? []).filter((r) => r.level === "department")}
              rowKey={(r) => text(r.department)}
              empty="No calls in this period."
              columns={[
                { header: "Department", cell: (r) => nameOf(s, text(r.department)) },
                { header: "Spend", numeric: true, cell: (r) => dollars(nanos(text(r.cost_usd))) },
                { header: "Per call", numeric: true, cell: (r) => dollars(nanos(text(r.cost_per_call_usd))) },
                { header: "Calls", numeric: true, wideOnly: true, cell: (r) => Number(r.calls ?? 0).toLocaleString("en-US") },
                { header: "Saved by caching", numeric: true, wideOnly: true, cell: (r) => dollars(nanos(text(r.saved_by_caching_usd))) },
                { header: "Saved by downgrades", numeric: true, wideOnly: true, cell: (r) => dollars(nanos(text(r.saved_by_downgrades_usd))) },
              ]}
            />
            <div className="actions">
              <button type="button" onClick={() => fetchFile(query("/reports/efficiency", { period, format: "csv" }), `efficiency-${period}.csv`)}>Download efficiency (CSV)</button>
            </div>
          </Card>
        )}
      </div>
    </>
  );
}
