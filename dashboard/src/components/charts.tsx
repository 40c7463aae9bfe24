import { Bar, BarChart, CartesianGrid, Cell, Legend, Pie, PieChart, ResponsiveContainer, Tooltip, XAxis, YAxis } from "recharts";
import { chartDollars, dollars, percent, sum } from "../money";

export interface Slice {
  id: string;
  name: string;
  amount: bigint;
  color: string;
}

/** Largest first; equal amounts by name. */
export function byAmount(slices: Slice[]): Slice[] {
  return slices.slice().sort((a, b) => (b.amount > a.amount ? 1 : b.amount < a.amount ? -1 : a.name.localeCompare(b.name)));
}

/** What a screen reader says for the pie, and what tests read: every department with spend. */
export function pieLabel(slices: Slice[]): string {
  const total = sum(slices.map((s) => s.amount));
  const parts = byAmount(slices.filter((s) => s.amount > 0n)).map((s) => `${s.name} ${dollars(s.amount)} (${percent(s.amount, total)})`);
  return parts.length ? `Spend by department: ${parts.join(", ")}` : "Spend by department: no spend yet";
}

const tooltipDollars = (value: unknown) => `$${Number(value).toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 })}`;

export function DepartmentPie(props: { slices: Slice[] }) {
  const shown = props.slices.filter((s) => s.amount > 0n);
  const total = sum(shown.map((s) => s.amount));
  const data = shown.map((s) => ({ name: s.name, value: chartDollars(s.amount), color: s.color }));
  return (
    <div className="pie-layout">
      <div className="pie" role="img" aria-label={pieLabel(props.slices)} data-testid="department-pie">
        {data.length === 0 ? (
          <p className="empty">No spend yet this month.</p>
        ) : (
          <ResponsiveContainer width="100%" height="100%">
            <PieChart accessibilityLayer={false}>
              <Pie data={data} dataKey="value" nameKey="name" rootTabIndex={-1} innerRadius="55%" outerRadius="90%" isAnimationActive={false} stroke="#fff">
                {data.map((d) => (
                  <Cell key={d.name} fill={d.color} />
                ))}
              </Pie>
              <Tooltip formatter={tooltipDollars} />
            </PieChart>
          </ResponsiveContainer>
        )}
        {data.length > 0 && (
          <div className="pie-center" aria-hidden="true">
            <span>{dollars(total)}</span>
            <small>total</small>
          </div>
        )}
      </div>
      <ul className="legend" aria-hidden="true">
        {byAmount(shown).map((s) => (
            <li key={s.id}>
              <span className="swatch" style={{ background: s.color }} />
              <span className="legend-name">{s.name}</span>
              <span className="legend-amount">{dollars(s.amount)}</span>
              <span className="legend-share">{percent(s.amount, total)}</span>
            </li>
          ))}
      </ul>
    </div>
  );
}

export interface Series {
  id: string;
  name: string;
  color: string;
}

/** Daily spend, one stacked bar per day, one segment per department. */
export function DailyStack(props: { days: { day: string; values: Record<string, bigint> }[]; series: Series[]; label: string }) {
  const data = props.days.map((d) => {
    const row: Record<string, string | number> = { day: d.day };
    for (const s of props.series) row[s.id] = chartDollars(d.values[s.id] ?? 0n);
    return row;
  });
  return (
    <div className="chart" role="img" aria-label={props.label}>
      <ResponsiveContainer width="100%" height="100%">
        <BarChart data={data} accessibilityLayer={false} margin={{ top: 8, right: 8, bottom: 0, left: 0 }}>
          <CartesianGrid strokeDasharray="3 3" vertical={false} />
          <XAxis dataKey="day" tick={{ fontSize: 12, fill: "#333" }} interval="preserveStartEnd" minTickGap={16} />
          <YAxis tickFormatter={(v: number) => `$${v.toLocaleString("en-US")}`} tick={{ fontSize: 12, fill: "#333" }} width={64} />
          <Tooltip formatter={tooltipDollars} />
          <Legend wrapperStyle={{ fontSize: 13 }} formatter={(value: string) => <span className="legend-text">{value}</span>} />
          {props.series.map((s) => (
            <Bar key={s.id} dataKey={s.id} name={s.name} stackId="spend" fill={s.color} isAnimationActive={false} maxBarSize={36} />
          ))}
        </BarChart>
      </ResponsiveContainer>
    </div>
  );
}

/** A share as a small bar and its percent, drawn in CSS (tables of models, teams, keys). */
export function ShareBar(props: { part: bigint; whole: bigint }) {
  const width = props.whole > 0n ? Number((props.part * 1000n) / props.whole) / 10 : 0;
  return (
    <span className="share">
      <span className="share-bar" aria-hidden="true">
        <span style={{ width: `${width}%` }} />
      </span>{" "}
      {percent(props.part, props.whole)}
    </span>
  );
}
