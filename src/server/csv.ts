/**
 * CSV exports (RFC 4180: comma, CRLF, fields with a comma, quote or line break quoted, quotes
 * doubled). A text cell that a spreadsheet would run as a formula (starting with =, +, -, @, tab or
 * carriage return: report errors and audit details come from clients and users) is prefixed with
 * a single quote, as OWASP advises; numbers are written as numbers.
 */
import type { AuditRecord, ClientRow, HistoryRow } from './store/index.js';

export type Cell = string | number | boolean | null | undefined;

export function csvCell(v: Cell): string {
  if (v === null || v === undefined) return '';
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  const text = /^[=+\-@\t\r]/.test(v) ? `'${v}` : v;
  return /[",\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

export function csvLine(cells: Cell[]): string {
  return `${cells.map(csvCell).join(',')}\r\n`;
}

export function toCsv(header: string[], rows: Cell[][]): string {
  return [header, ...rows].map(csvLine).join('');
}

/** The columns of one export: a header and how a row becomes cells. */
export interface CsvTable<T> { header: string[]; row: (r: T) => Cell[] }

export const AUDIT_CSV: CsvTable<AuditRecord> = {
  header: ['time', 'last', 'count', 'actor', 'action', 'target', 'address', 'detail'],
  row: (r) => [r.time, r.last, r.count, r.actor, r.action, r.target, r.address, JSON.stringify(r.detail)],
};

export const CLIENTS_CSV: CsvTable<ClientRow> = {
  header: ['client', 'user', 'workspace', 'image', 'version', 'state', 'reported', 'received', 'offline_until', 'last_error'],
  row: (r) => [r.client, r.user, r.workspace, r.image, r.version, r.state, r.at, r.received, r.offlineUntil, r.lastError],
};

export const HISTORY_CSV: CsvTable<HistoryRow> = {
  header: ['client', 'user', 'workspace', 'version', 'state', 'reported', 'received', 'last_error'],
  row: (r) => [r.client, r.user, r.workspace, r.version, r.state, r.at, r.received, r.lastError],
};

/** Most rows one export holds (the newest first where the list is ordered by time). */
export const CSV_MAX_ROWS = 200_000;

/** One page of a list and the cursor of the next (null: the last page). */
export type CsvPage<T> = (cursor: string | undefined) => Promise<{ rows: T[]; next: string | null }>;

/** A whole filtered list as CSV text, page by page (header first), at most CSV_MAX_ROWS rows. */
export async function* csvExport<T>(table: CsvTable<T>, page: CsvPage<T>): AsyncGenerator<string> {
  yield csvLine(table.header);
  let cursor: string | undefined;
  for (let n = 0; n < CSV_MAX_ROWS;) {
    const p = await page(cursor);
    const rows = p.rows.slice(0, CSV_MAX_ROWS - n);
    if (rows.length) yield rows.map((r) => csvLine(table.row(r))).join('');
    n += rows.length;
    if (!p.next || !rows.length) return;
    cursor = p.next;
  }
}
