import type { Budget } from "../api";
import { day, periodName } from "../format";
import { dollars, nanos } from "../money";

const ACTIONS: Record<string, string> = {
  reject: "Hard limit: further calls are refused",
  downgrade: "At the limit, calls move to cheaper models",
  restrict_tiers: "At the limit, only cheaper model tiers are allowed",
  alert: "Soft limit: alerts only",
};

function amounts(b: Budget) {
  if (b.unit === "usd") {
    return {
      limit: nanos(b.limit_usd),
      spent: nanos(b.spent_usd),
      reserved: nanos(b.reserved_usd),
      remaining: nanos(b.remaining_usd),
      forecast: b.forecast_usd === null ? null : nanos(b.forecast_usd),
      show: dollars,
    };
  }
  return {
    limit: BigInt(b.limit_tokens ?? 0),
    spent: BigInt(b.spent_tokens ?? 0),
    reserved: BigInt(b.reserved_tokens ?? 0),
    remaining: BigInt(b.remaining_tokens ?? 0),
    forecast: b.forecast_tokens === null ? null : BigInt(b.forecast_tokens),
    show: (n: bigint) => `${n.toLocaleString("en-US")} tokens`,
  };
}

function share(part: bigint, whole: bigint): number {
  if (whole <= 0n) return 0;
  return Math.min(100, Number((part * 10000n) / whole) / 100);
}

/** When spend at its pace so far reaches the limit, if before the period ends. */
function runOut(b: Budget, spent: bigint, limit: bigint, asOf: string): Date | null {
  if (spent <= 0n || spent >= limit || b.period.match(/^\d/)) return null;
  const start = Date.parse(b.period_start);
  const elapsed = Date.parse(asOf) - start;
  const at = start + (elapsed * Number((limit * 1000n) / spent)) / 1000;
  return at < Date.parse(b.period_end) ? new Date(at) : null;
}

export function BudgetBar(props: { budget: Budget; title: string; asOf: string; timezone: string; hideTitle?: boolean }) {
  const b = props.budget;
  const a = amounts(b);
  const used = share(a.spent, a.limit);
  const held = Math.min(100 - used, share(a.reserved, a.limit));
  const thresholds = b.alert_at.map((t) => Number(t) * 100);
  const over = a.limit > 0n && a.spent >= a.limit;
  const warn = !over && thresholds.some((t) => used >= t);
  const tone = over ? "bad" : warn ? "warn" : "good";
  const runout = runOut(b, a.spent, a.limit, props.asOf);
  // A rolling window has no reset: each call's spend leaves it one period after the call.
  const resets = b.period.match(/^\d/) ? "spend leaves the window as it ages" : `resets ${day(b.period_end, props.timezone)}`;
  return (
    <div className={`budget ${tone}`}>
      <div className="budget-head">
        <h3 className={props.hideTitle ? "visually-hidden" : undefined}>{props.title}</h3>
        <span className="budget-figure">
          <strong>{a.show(a.spent)}</strong> of {a.show(a.limit)} <span className="pct">({b.utilization_pct}%)</span>
        </span>
      </div>
      <div
        className="bar"
        role="progressbar"
        aria-label={props.title}
        aria-valuemin={0}
        aria-valuemax={100}
        aria-valuenow={Math.round(used * 100) / 100}
        aria-valuetext={`${a.show(a.spent)} spent of ${a.show(a.limit)} (${b.utilization_pct}%)`}
        data-spent={b.unit === "usd" ? b.spent_usd ?? "0" : String(b.spent_tokens ?? 0)}
      >
        <span className="bar-spent" style={{ width: `${used}%` }} />
        <span className="bar-reserved" style={{ left: `${used}%`, width: `${held}%` }} />
        {thresholds.map((t) => (
          <span key={t} className="bar-mark" style={{ left: `${t}%` }} title={`Alert at ${t}%`}>
            <span className="bar-mark-label">{t}%</span>
          </span>
        ))}
        <span className="bar-limit" title="Limit" />
      </div>
      <dl className="budget-facts">
        <div>
          <dt>Spent</dt>
          <dd>{a.show(a.spent)}</dd>
        </div>
        <div>
          <dt>In flight</dt>
          <dd>{a.show(a.reserved)}</dd>
        </div>
        <div>
          <dt>Remaining</dt>
          <dd>{a.show(a.remaining)}</dd>
        </div>
        {a.forecast !== null && (
          <div>
            <dt>Forecast at period end</dt>
            <dd className={a.forecast > a.limit ? "over" : undefined}>{a.show(a.forecast)}</dd>
          </div>
        )}
      </dl>
      <p className="budget-note">
        {periodName(b.period)} · {resets} · {ACTIONS[b.action] ?? b.action}
        {b.restricted && " · restricted now"}
        {runout && <strong className="over"> · at this pace it reaches the limit on {day(runout.toISOString(), props.timezone)}</strong>}
      </p>
    </div>
  );
}
