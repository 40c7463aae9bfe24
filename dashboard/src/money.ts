// Money arrives as exact decimal strings of dollars ("12.3456"). It is held as BigInt nano-dollars,
// so that totals and labels are exact; only chart geometry uses floating-point numbers.

const NANOS_PER_DOLLAR = 1_000_000_000n;
const NANOS_PER_CENT = 10_000_000n;

/** "12.3456" -> 12345600000n (nano-dollars). Null, empty or malformed text is zero. */
export function nanos(usd: string | null | undefined): bigint {
  if (!usd) return 0n;
  const match = /^(-?)(\d+)(?:\.(\d{1,9}))?$/.exec(usd.trim());
  if (!match) return 0n;
  const [, sign, whole, fraction = ""] = match;
  const value = BigInt(whole) * NANOS_PER_DOLLAR + BigInt(fraction.padEnd(9, "0"));
  return sign ? -value : value;
}

/** Cents of an amount, rounded half to even (as the gateway's own messages and reports round). */
export function cents(amount: bigint): bigint {
  const negative = amount < 0n;
  const abs = negative ? -amount : amount;
  let whole = abs / NANOS_PER_CENT;
  const rest = abs % NANOS_PER_CENT;
  if (rest * 2n > NANOS_PER_CENT || (rest * 2n === NANOS_PER_CENT && whole % 2n === 1n)) whole += 1n;
  return negative ? -whole : whole;
}

/** "$1,234.56": dollars with two decimals and thousands separators. */
export function dollars(amount: bigint): string {
  const c = cents(amount);
  const abs = c < 0n ? -c : c;
  const whole = (abs / 100n).toString().replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  const fraction = (abs % 100n).toString().padStart(2, "0");
  return `${c < 0n ? "-" : ""}$${whole}.${fraction}`;
}

/** A share in whole percent ("45%"), "<1%" for a small non-zero share. */
export function percent(part: bigint, whole: bigint): string {
  if (whole <= 0n) return "0%";
  const tenths = (part * 1000n) / whole;
  if (part > 0n && tenths < 5n) return "<1%";
  return `${(tenths + 5n) / 10n}%`;
}

/** Dollars as a float, for chart geometry only (never for a label). */
export function chartDollars(amount: bigint): number {
  return Number(cents(amount)) / 100;
}

/** Tokens with thousands separators. */
export function count(value: number | null | undefined): string {
  return (value ?? 0).toLocaleString("en-US");
}

export function sum(values: bigint[]): bigint {
  return values.reduce((a, b) => a + b, 0n);
}
