import { useState } from "react";
import { query, useApi, type Session } from "../api";
import { Card, Loading, Problem, Stat, Table, type Column } from "../components/ui";
import { monthName, plural } from "../format";
import "./customers.css";

/** A row of the customers report (GET /admin/v1/customers): amounts are exact decimal strings of
 * dollars, possibly finer than a nano-dollar (rate cards price in pico-dollars). */
export interface CustomerRow {
  level: "customer" | "plan";
  customer: string | null;
  name: string | null;
  plan: string;
  department: string | null;
  requests: number;
  input_tokens: number;
  cache_read_tokens: number;
  cache_write_tokens: number;
  output_tokens: number;
  trimmed_tokens: number;
  cost_usd: string;
  rate_card: string;
  usage_at_rate_card_usd: string;
  included_usd: string;
  billable_usd: string;
  invoice_usd: string;
  saved_usd: string;
  latency_p50_ms: number | null;
  latency_p95_ms: number | null;
}

export interface CustomersReport {
  report: string;
  period: string;
  rows: CustomerRow[];
  notes: string[];
}

/** An exact decimal string of dollars rounded half up to `places` decimals, as BigInt units. */
function units(usd: string | null | undefined, places: number): bigint {
  const match = /^(-?)(\d+)(?:\.(\d+))?$/.exec((usd ?? "").trim());
  if (!match) return 0n;
  const [, sign, whole, fraction = ""] = match;
  const kept = BigInt(whole + fraction.slice(0, places).padEnd(places, "0"));
  const up = (fraction[places] ?? "0") >= "5" ? 1n : 0n;
  return sign ? -(kept + up) : kept + up;
}

/** "$1,234.56" from an exact decimal string, rounded half up to the cent (the invoice's rounding). */
export function usd(amount: string | null | undefined, places = 2): string {
  const value = units(amount, places);
  const abs = value < 0n ? -value : value;
  const scale = 10n ** BigInt(places);
  const whole = (abs / scale).toString().replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  const fraction = (abs % scale).toString().padStart(places, "0");
  return `${value < 0n ? "-" : ""}$${whole}.${fraction}`;
}

/** Cost per call in dollars with four decimals (calls of an agent cost fractions of a cent). */
function perCall(row: CustomerRow): string {
  if (!row.requests) return "—";
  const micro = units(row.cost_usd, 8) / BigInt(row.requests); // 1e-8 dollars
  const tenThousandths = (micro + 5_000n) / 10_000n;
  return usd(`${tenThousandths / 10_000n}.${(tenThousandths % 10_000n).toString().padStart(4, "0")}`, 4);
}

/** The share of input tokens read from the provider's prompt cache. */
function hitRatio(row: CustomerRow): string {
  if (!row.input_tokens) return "0%";
  return `${Math.round((100 * row.cache_read_tokens) / row.input_tokens)}%`;
}

const count = (n: number) => n.toLocaleString("en-US");
const ms = (n: number | null) => (n === null ? "—" : `${count(n)} ms`);
const planName = (plan: string) => plan.charAt(0).toUpperCase() + plan.slice(1);

const COLUMNS: Column<CustomerRow>[] = [
  { header: "Customer", cell: (r) => `${r.name ?? r.customer} (${r.customer})` },
  { header: "Plan", cell: (r) => planName(r.plan) },
  { header: "Calls", cell: (r) => count(r.requests), numeric: true },
  { header: "Cost", cell: (r) => usd(r.cost_usd), numeric: true },
  { header: "Cost per call", cell: perCall, numeric: true },
  { header: "Rate card", cell: (r) => r.rate_card, wideOnly: true },
  { header: "Usage at rate card", cell: (r) => usd(r.usage_at_rate_card_usd), numeric: true, wideOnly: true },
  { header: "Included", cell: (r) => usd(r.included_usd), numeric: true, wideOnly: true },
  { header: "Billable", cell: (r) => usd(r.billable_usd), numeric: true, wideOnly: true },
  { header: "Invoice", cell: (r) => usd(r.invoice_usd), numeric: true },
  { header: "Cache hit", cell: hitRatio, numeric: true },
  { header: "Saved", cell: (r) => usd(r.saved_usd), numeric: true },
];

const EFFICIENCY: Column<CustomerRow>[] = [
  { header: "Customer", cell: (r) => `${r.name ?? r.customer} (${r.customer})` },
  { header: "Input tokens", cell: (r) => count(r.input_tokens), numeric: true },
  { header: "Cache reads", cell: (r) => count(r.cache_read_tokens), numeric: true },
  { header: "Cache writes", cell: (r) => count(r.cache_write_tokens), numeric: true },
  { header: "Tokens trimmed", cell: (r) => count(r.trimmed_tokens), numeric: true },
  { header: "Saved", cell: (r) => usd(r.saved_usd), numeric: true },
  { header: "Latency p50", cell: (r) => ms(r.latency_p50_ms), numeric: true, wideOnly: true },
  { header: "Latency p95", cell: (r) => ms(r.latency_p95_ms), numeric: true, wideOnly: true },
];

const PLANS: Column<CustomerRow>[] = [
  { header: "Plan", cell: (r) => planName(r.plan) },
  { header: "Calls", cell: (r) => count(r.requests), numeric: true },
  { header: "Cost per call", cell: perCall, numeric: true },
  { header: "Cache hit", cell: hitRatio, numeric: true },
  { header: "Invoiced", cell: (r) => usd(r.invoice_usd), numeric: true },
  { header: "Saved", cell: (r) => usd(r.saved_usd), numeric: true },
  { header: "Latency p50", cell: (r) => ms(r.latency_p50_ms), numeric: true },
  { header: "Latency p95", cell: (r) => ms(r.latency_p95_ms), numeric: true, wideOnly: true },
];

/** One customer at a glance: what it costs, what it is billed, what its plan saved it. */
function CustomerCard(props: { row: CustomerRow }) {
  const r = props.row;
  return (
    <Card title={`${r.name ?? r.customer} — ${planName(r.plan)}`} subtitle={`${r.customer} · rate card: ${r.rate_card}`}>
      <dl className="customer-figures">
        <dt>Calls</dt>
        <dd>{count(r.requests)}</dd>
        <dt>Cost at provider prices</dt>
        <dd>{usd(r.cost_usd)}</dd>
        <dt>Cost per call</dt>
        <dd>{perCall(r)}</dd>
        <dt>Usage at rate card</dt>
        <dd>{usd(r.usage_at_rate_card_usd)}</dd>
        <dt>Included in plan</dt>
        <dd>{usd(r.included_usd)}</dd>
        <dt>Billable</dt>
        <dd>{usd(r.billable_usd)}</dd>
        <dt>Invoice</dt>
        <dd><strong>{usd(r.invoice_usd)}</strong></dd>
        <dt>Cache hit ratio</dt>
        <dd>{hitRatio(r)}</dd>
        <dt>Saved by the plan</dt>
        <dd>{usd(r.saved_usd)}</dd>
      </dl>
    </Card>
  );
}

export function Customers(props: { session: Session }) {
  const s = props.session;
  const [period, setPeriod] = useState(s.months[0]?.period ?? "");
  const own = s.role === "customer" ? s.customer : null;
  const path = own ? `/customers/${encodeURIComponent(own)}` : "/customers";
  const report = useApi<CustomersReport>(query(path, { period }));
  const rows = report.data?.rows ?? [];
  const customers = rows.filter((r) => r.level === "customer");
  const plans = rows.filter((r) => r.level === "plan");
  const month = s.months.find((m) => m.period === period);
  const calls = customers.reduce((n, r) => n + r.requests, 0);

  return (
    <>
      <div className="page-head">
        <h1>{own ? `${customers[0]?.name ?? own}: usage and invoice` : "Customers"}</h1>
        <div className="field inline">
          <label htmlFor="customers-period">Billing period</label>
          <select id="customers-period" value={period} onChange={(e) => setPeriod(e.target.value)}>
            {s.months.map((m) => (
              <option key={m.period} value={m.period}>
                {monthName(m.start, s.timezone)}
              </option>
            ))}
          </select>
        </div>
      </div>
      <p className="lede">
        {own ? "Your" : "Each business customer's"} usage{month ? ` in ${monthName(month.start, s.timezone)}` : ""}: the
        cost at provider prices, the invoice at the plan's rate card, and what the plan's efficiency features (prompt
        caching, thin context) saved. Updated every few seconds.
      </p>
      <Problem error={report.error} />
      {!report.data && !report.error && <Loading what="customers" />}
      {report.data && (
        <>
          {!own && (
            <div className="stats" aria-live="polite">
              <Stat label="Customers" value={count(customers.length)} note={`${plural(calls, "call")} this period`} />
              <Stat label="Invoiced at rate cards" value={usd(plans.length ? sumOf(plans, "invoice_usd") : sumOf(customers, "invoice_usd"))} note="Included amounts applied" />
              <Stat label="Saved by efficiency features" value={usd(sumOf(customers, "saved_usd"))} tone="good" note="Against the same calls without them" />
            </div>
          )}
          <div className="grid">
            {customers.map((r) => (
              <CustomerCard key={r.customer} row={r} />
            ))}
            <Card title="Invoices" subtitle="Usage at the plan's rate card; the included amount applies first, then the rest is billed, rounded to the cent." wide>
              <Table caption="Customers' usage and invoices" hideCaption columns={COLUMNS} rows={customers}
                rowKey={(r) => r.customer ?? ""} empty="No customer has calls in this period." />
            </Card>
            <Card title="Efficiency" subtitle="Input tokens read from the provider's prompt cache, written to it, and trimmed by thin context; dollars saved at provider prices." wide>
              <Table caption="Customers' efficiency" hideCaption columns={EFFICIENCY} rows={customers}
                rowKey={(r) => r.customer ?? ""} empty="No customer has calls in this period." />
            </Card>
            {plans.length > 0 && (
              <Card title="By plan" subtitle="Every customer of a plan together." wide>
                <Table caption="Plans" hideCaption columns={PLANS} rows={plans} rowKey={(r) => r.plan} />
              </Card>
            )}
          </div>
          {report.data.notes.map((note) => (
            <p key={note} className="footnote">{note}</p>
          ))}
        </>
      )}
    </>
  );
}

function sumOf(rows: CustomerRow[], field: "invoice_usd" | "saved_usd"): string {
  // Exact sum of decimal strings, at nano-dollar precision and rounded half up.
  const total = rows.reduce((acc, r) => acc + units(r[field], 9), 0n);
  const abs = total < 0n ? -total : total;
  return `${total < 0n ? "-" : ""}${abs / 1_000_000_000n}.${(abs % 1_000_000_000n).toString().padStart(9, "0")}`;
}
