import type { ReactNode } from "react";
import type { ApiError } from "../api";

export function Card(props: { title: string; subtitle?: ReactNode; children: ReactNode; wide?: boolean; id?: string }) {
  const id = props.id ?? `card-${props.title.toLowerCase().replace(/[^a-z0-9]+/g, "-")}`;
  return (
    <section className={props.wide ? "card wide" : "card"} aria-labelledby={id}>
      <h2 id={id}>{props.title}</h2>
      {props.subtitle && <p className="subtitle">{props.subtitle}</p>}
      {props.children}
    </section>
  );
}

export function Stat(props: { label: string; value: string; note?: ReactNode; tone?: "good" | "warn" | "bad" }) {
  return (
    <div className={`stat ${props.tone ?? ""}`}>
      <div className="stat-label">{props.label}</div>
      <div className="stat-value">{props.value}</div>
      {props.note && <div className="stat-note">{props.note}</div>}
    </div>
  );
}

export interface Column<T> {
  header: string;
  cell: (row: T) => ReactNode;
  numeric?: boolean;
  /** Left out on a phone, where the table would have to scroll. */
  wideOnly?: boolean;
}

function cellClass(c: { numeric?: boolean; wideOnly?: boolean } | undefined): string | undefined {
  const names = [c?.numeric ? "num" : "", c?.wideOnly ? "wide-only" : ""].filter(Boolean).join(" ");
  return names || undefined;
}

/** A table in a horizontally scrollable, keyboard-focusable frame (narrow screens). */
export function Table<T>(props: {
  caption: string;
  columns: Column<T>[];
  rows: T[];
  rowKey: (row: T, index: number) => string;
  empty?: string;
  footer?: ReactNode[];
  hideCaption?: boolean;
}) {
  if (props.rows.length === 0) return <p className="empty">{props.empty ?? "Nothing yet."}</p>;
  return (
    <div className="table-frame" tabIndex={0} role="region" aria-label={props.caption}>
      <table>
        <caption className={props.hideCaption ? "visually-hidden" : undefined}>{props.caption}</caption>
        <thead>
          <tr>
            {props.columns.map((c) => (
              <th key={c.header} scope="col" className={cellClass(c)}>
                {c.header}
              </th>
            ))}
          </tr>
        </thead>
        <tbody>
          {props.rows.map((row, i) => (
            <tr key={props.rowKey(row, i)}>
              {props.columns.map((c, j) =>
                j === 0 ? (
                  <th key={c.header} scope="row" className={cellClass(c)}>
                    {c.cell(row)}
                  </th>
                ) : (
                  <td key={c.header} className={cellClass(c)}>
                    {c.cell(row)}
                  </td>
                ),
              )}
            </tr>
          ))}
        </tbody>
        {props.footer && (
          <tfoot>
            <tr>
              {props.footer.map((cell, i) =>
                i === 0 ? (
                  <th key={i} scope="row">
                    {cell}
                  </th>
                ) : (
                  <td key={i} className={cellClass(props.columns[i])}>
                    {cell}
                  </td>
                ),
              )}
            </tr>
          </tfoot>
        )}
      </table>
    </div>
  );
}

export function Problem(props: { error: ApiError | null | undefined }) {
  if (!props.error) return null;
  return (
    <p className="problem" role="alert">
      {props.error.message}
    </p>
  );
}

export function Loading(props: { what: string }) {
  return (
    <p className="loading" aria-live="polite">
      Loading {props.what}…
    </p>
  );
}
