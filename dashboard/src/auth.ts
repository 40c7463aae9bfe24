// The admin token lives in sessionStorage: it is gone when the browser session ends, and it is
// never put in a URL (a URL lands in histories, logs and Referer headers).
import { useSyncExternalStore } from "react";

const KEY = "costwarden.token";
const listeners = new Set<() => void>();

export function getToken(): string | null {
  try {
    return sessionStorage.getItem(KEY);
  } catch {
    return null;
  }
}

export function setToken(token: string | null): void {
  if (token === null) sessionStorage.removeItem(KEY);
  else sessionStorage.setItem(KEY, token);
  listeners.forEach((notify) => notify());
}

function subscribe(notify: () => void): () => void {
  listeners.add(notify);
  return () => listeners.delete(notify);
}

export function useToken(): string | null {
  return useSyncExternalStore(subscribe, getToken);
}
