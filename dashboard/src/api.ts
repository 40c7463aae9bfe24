// The admin API (/admin/v1), as the dashboard uses it. Every call carries the session's token in
// the Authorization header; queries poll so the pages follow live traffic.
import { useMutation, useQuery, useQueryClient, type UseQueryResult } from "@tanstack/react-query";
import { getToken, setToken, useToken } from "./auth";

export const API = "/admin/v1";
export const POLL_MS = 3000;

export interface Department {
  id: string;
  name: string;
  cost_center: string;
  gl_account: string;
  teams: string[];
}

export interface Month {
  period: string;
  start: string;
  end: string;
}

export interface Session {
  token_id: string;
  role: "admin" | "finance" | "manager" | "customer";
  department: string | null;
  /** The business customer a customer token reads (SPEC §12). */
  customer?: string | null;
  sees_organization: boolean;
  manages_keys: boolean;
  departments: Department[];
  timezone: string;
  now: string;
  month_start: string;
  month_end: string;
  months: Month[];
}

export interface Budget {
  scope: string;
  scope_kind: string;
  label: string;
  department: string | null;
  team: string | null;
  key_id: string | null;
  user: string | null;
  index: number;
  period: string;
  unit: "usd" | "tokens";
  action: string;
  enforce: boolean;
  alert_at: string[];
  limit_usd: string | null;
  spent_usd: string | null;
  reserved_usd: string | null;
  remaining_usd: string | null;
  limit_tokens: number | null;
  spent_tokens: number | null;
  reserved_tokens: number | null;
  remaining_tokens: number | null;
  utilization_pct: string;
  period_start: string;
  period_end: string;
  restricted: boolean;
  forecast_usd: string | null;
  forecast_tokens: number | null;
}

export interface BudgetList {
  as_of: string;
  timezone: string;
  budgets: Budget[];
}

export interface SpendRow {
  group: Record<string, string | null>;
  requests: number;
  input_tokens: number;
  cached_input_tokens: number;
  output_tokens: number;
  cost_usd: string;
}

export interface SpendReport {
  rows: SpendRow[];
  totals: Omit<SpendRow, "group">;
}

export interface UsageEvent {
  id: string;
  admitted_at: string;
  department: string;
  team: string | null;
  key_id: string | null;
  user: string | null;
  model_requested: string;
  model_served: string;
  decision: string;
  status: string;
  cost_usd: string;
}

export interface Rejection {
  id: string;
  at: string;
  department: string | null;
  key_id: string | null;
  model_requested: string | null;
  code: string;
  message: string;
  http_status: number;
}

export interface Alert {
  id: number | null;
  at: string;
  kind: string;
  department: string | null;
  scope: string;
  threshold: string | null;
  text: string;
}

export interface AlertList {
  alerts: Alert[];
}

export interface EventPage {
  events: UsageEvent[];
  next_cursor: string | null;
}

export interface RejectionPage {
  rejections: Rejection[];
  next_cursor: string | null;
}

export interface KeyList {
  keys: Key[];
}

export interface Key {
  id: string;
  prefix: string;
  department: string | null;
  team: string | null;
  user: string | null;
  name: string | null;
  created_at: string;
  revoked_at: string | null;
  active: boolean;
}

export interface AuditEntry {
  id: number | null;
  at: string;
  actor_id: string;
  actor_role: string;
  action: string;
  target: string | null;
  department: string | null;
  version_before: number | null;
  version_after: number | null;
  detail: Record<string, unknown>;
}

export interface AuditPage {
  entries: AuditEntry[];
  next_cursor: string | null;
}

export interface KeyCreated extends Key {
  key: string;
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** One admin API call; a 401 signs the browser out (the token was revoked or mistyped). */
export async function api<T>(path: string, init: RequestInit = {}, token = getToken()): Promise<T> {
  const headers = new Headers(init.headers);
  if (token) headers.set("Authorization", `Bearer ${token}`);
  if (init.body) headers.set("Content-Type", "application/json");
  const response = await fetch(API + path, { ...init, headers, credentials: "omit", cache: "no-store" });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      message = body?.error?.message ?? message;
    } catch {
      // not JSON: keep the status line
    }
    if (response.status === 401 && token === getToken()) setToken(null);
    throw new ApiError(response.status, message);
  }
  const type = response.headers.get("content-type") ?? "";
  return (type.includes("json") ? response.json() : response.text()) as Promise<T>;
}

export function query(path: string, params: Record<string, string | number | null | undefined> = {}): string {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== "") search.set(name, String(value));
  }
  const text = search.toString();
  return text ? `${path}?${text}` : path;
}

/** A polled GET of the admin API, cached per token. */
export function useApi<T>(path: string | null, poll = true): UseQueryResult<T, ApiError> {
  const token = useToken();
  return useQuery<T, ApiError>({
    queryKey: [token, path],
    queryFn: () => api<T>(path as string, {}, token),
    enabled: Boolean(token && path),
    refetchInterval: poll ? POLL_MS : false,
    retry: (failures, error) => error.status >= 500 && failures < 2,
  });
}

export function useSession(): UseQueryResult<Session, ApiError> {
  return useApi<Session>("/whoami", false);
}

export function useCreateKey() {
  const client = useQueryClient();
  return useMutation<KeyCreated, ApiError, { department: string; name: string; team: string; user: string }>({
    mutationFn: (body) =>
      api<KeyCreated>("/keys", {
        method: "POST",
        body: JSON.stringify({
          department: body.department,
          name: body.name || null,
          team: body.team || null,
          user: body.user || null,
        }),
      }),
    onSuccess: () => client.invalidateQueries(),
  });
}

export function useRevokeKey() {
  const client = useQueryClient();
  return useMutation<Key, ApiError, string>({
    mutationFn: (id) => api<Key>(`/keys/${encodeURIComponent(id)}`, { method: "DELETE" }),
    onSuccess: () => client.invalidateQueries(),
  });
}

/** Download an authenticated export: fetched with the token, handed to the browser as a file. */
export async function download(path: string, filename: string): Promise<void> {
  const token = getToken();
  const response = await fetch(API + path, { headers: token ? { Authorization: `Bearer ${token}` } : {} });
  if (!response.ok) throw new ApiError(response.status, `Download failed: ${response.status}`);
  saveBlob(await response.blob(), filename);
}

export function saveBlob(blob: Blob, filename: string): void {
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = filename;
  link.click();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}
