/**
 * CSV exports (RFC 4180: comma, CRLF, fields with a comma, quote or line break quoted, quotes
 * doubled). A text cell that a spreadsheet would run as a formula (starting with =, +, -, @, tab or
 * carriage return: report errors and audit details come from clients and users) is prefixed with
 * a single quote, as OWASP advises; numbers are written as numbers.
 */
import type { AuditRow, ClientRow, HistoryRow, PageOf, PageQuery } from './store/index.js';

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

export const AUDIT_CSV: CsvTable<AuditRow> = {
  header: ['time', 'actor', 'action', 'target', 'detail'],
  row: (r) => [r.time, r.actor, r.action, r.target, JSON.stringify(r.detail)],
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
const CSV_PAGE = 1000;

/** A whole filtered list as CSV text, page by page (header first), at most CSV_MAX_ROWS rows. */
export async function* csvExport<T>(table: CsvTable<T>, page: (p: PageQuery) => Promise<PageOf<T>>): AsyncGenerator<string> {
  yield csvLine(table.header);
  for (let offset = 0; offset < CSV_MAX_ROWS; offset += CSV_PAGE) {
    const p = await page({ offset, limit: Math.min(CSV_PAGE, CSV_MAX_ROWS - offset) });
    if (p.rows.length) yield p.rows.map((r) => csvLine(table.row(r))).join('');
    if (p.rows.length < p.limit) return;
  }
}
