// Shapes the admin API's spend rows into what the pages draw.
import type { SpendReport, SpendRow } from "./api";
import { nanos } from "./money";

export interface Total {
  id: string;
  amount: bigint;
  requests: number;
  row: SpendRow;
}

/** One total per value of ``dimension``, largest first. */
export function totalsBy(report: SpendReport | undefined, dimension: string): Total[] {
  if (!report) return [];
  return report.rows
    .map((row) => ({ id: row.group[dimension] ?? "(none)", amount: nanos(row.cost_usd), requests: row.requests, row }))
    .sort((a, b) => (b.amount > a.amount ? 1 : b.amount < a.amount ? -1 : a.id.localeCompare(b.id)));
}

/** Every day (UTC, as the ledger groups them) of [since, until), each with its amount per value of
 * ``dimension``; days without spend are kept, so the axis shows the whole month. */
export function daily(report: SpendReport | undefined, since: string, until: string, dimension: string) {
  const byDay = new Map<string, Record<string, bigint>>();
  for (const row of report?.rows ?? []) {
    const day = row.group.day ?? "";
    const id = row.group[dimension] ?? "(none)";
    const values = byDay.get(day) ?? {};
    values[id] = (values[id] ?? 0n) + nanos(row.cost_usd);
    byDay.set(day, values);
  }
  const days: { day: string; values: Record<string, bigint> }[] = [];
  // The month's UTC days, nearest to its bounds in the policy's timezone, and any day with spend.
  const HALF_DAY = 12 * 3600 * 1000;
  const seen = [...byDay.keys()].sort();
  const first = [new Date(Date.parse(since) + HALF_DAY).toISOString().slice(0, 10), ...seen].sort()[0];
  const last = [new Date(Date.parse(until) - HALF_DAY).toISOString().slice(0, 10), ...seen].sort().reverse()[0];
  const cursor = new Date(first + "T00:00:00Z");
  for (let guard = 0; guard < 62; guard++) {
    const key = cursor.toISOString().slice(0, 10);
    if (key > last) break;
    days.push({ day: key, values: byDay.get(key) ?? {} });
    cursor.setUTCDate(cursor.getUTCDate() + 1);
  }
  return byDay.size ? days : [];
}
