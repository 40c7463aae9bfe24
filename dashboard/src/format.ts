import type { Session } from "./api";

// Colors with at least 3:1 contrast against white, told apart by people with common color-vision
// deficiencies (after Okabe and Ito), then a few more for larger organizations.
export const PALETTE = [
  "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#8a6d00", "#56B4E9", "#6b4fbb", "#b8323a", "#3d7a1e", "#7a5230",
];

export function colorOf(session: Session, department: string): string {
  const index = session.departments.findIndex((d) => d.id === department);
  return PALETTE[(index < 0 ? session.departments.length : index) % PALETTE.length];
}

/** The department's display name when the policy gives one, else its id. */
export function nameOf(session: Session, department: string | null | undefined): string {
  if (!department) return "(none)";
  return session.departments.find((d) => d.id === department)?.name ?? department;
}

export function time(iso: string, timezone: string): string {
  return new Intl.DateTimeFormat("en-US", {
    timeZone: timezone,
    month: "short",
    day: "numeric",
    hour: "2-digit",
    minute: "2-digit",
    hour12: false,
  }).format(new Date(iso));
}

export function day(iso: string, timezone: string): string {
  return new Intl.DateTimeFormat("en-US", { timeZone: timezone, month: "short", day: "numeric" }).format(
    new Date(iso),
  );
}

export function monthName(iso: string, timezone: string): string {
  return new Intl.DateTimeFormat("en-US", { timeZone: timezone, month: "long", year: "numeric" }).format(
    new Date(iso),
  );
}

export function periodName(period: string): string {
  const words: Record<string, string> = { monthly: "Monthly", weekly: "Weekly", daily: "Daily" };
  return words[period] ?? `Rolling ${period}`;
}

export function plural(n: number, word: string): string {
  return `${n.toLocaleString("en-US")} ${word}${n === 1 ? "" : "s"}`;
}
