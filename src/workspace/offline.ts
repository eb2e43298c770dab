/**
 * `data/Local/Config/Offline.dat`: what a client keeps of each workspace grant to start without
 * the server, sealed under the host key: the policy entry, its image, the newest version the server
 * announced and when the server was last reached. The released keys themselves are in the user's
 * key folder (client.ts), wrapped with the host key.
 *
 * The rules a start obeys (docs/workspaces.md):
 *   - online or not, the policy's `expires` day is the last day it starts (EEXPIRED);
 *   - offline, it starts only while the last contact is at most `offlineDays` days old (EOFFLINE),
 *     and never with a clock earlier than that contact (turning the clock back does not help).
 */
import { join } from 'node:path';
import { MedvError } from '../core/errors.js';
import { readSealed, writeSealed, type ClientRoot } from '../repo/index.js';
import { daysBetween, utcDay } from './clock.js';
import { checkSettings, type WorkspaceSettings } from './settings.js';

export interface OfflineEntry {
  user: string;
  workspace: string;
  image: string;
  policy: { name: string; version: number };
  settings: WorkspaceSettings;
  latestVersion: number | null;
  /** ISO time of the last grant from the server. */
  lastOnline: string;
}

interface OfflineFile { v: 1; entries: OfflineEntry[] }

const FILE = join('data', 'Local', 'Config', 'Offline.dat');
const PURPOSE = 'medv-offline-cache-v1';
const MAX_ENTRIES = 256;
/** A clock this far before the last contact is still believed (small skews between machines). */
const CLOCK_SLACK_MS = 10 * 60_000;

async function load(c: ClientRoot): Promise<OfflineEntry[]> {
  const f = await readSealed<OfflineFile>(c, FILE, PURPOSE);
  if (!f) return [];
  if (f.v !== 1 || !Array.isArray(f.entries)) throw new MedvError('EFORMAT', `${FILE} is not a medv offline cache`, { file: FILE });
  return f.entries.slice(0, MAX_ENTRIES);
}

export async function offlineEntries(c: ClientRoot, user: string): Promise<OfflineEntry[]> {
  return (await load(c)).filter((e) => e.user === user);
}

export async function offlineEntry(c: ClientRoot, user: string, workspace: string): Promise<OfflineEntry | undefined> {
  const e = (await load(c)).find((x) => x.user === user && x.workspace === workspace);
  if (!e) return undefined;
  // sealed, so ours; checked anyway: an entry from an older medv may not fit today's schema
  checkSettings(e.settings, workspace, e.policy?.name);
  return e;
}

export async function saveOfflineEntry(c: ClientRoot, entry: OfflineEntry): Promise<void> {
  const all = (await load(c)).filter((x) => !(x.user === entry.user && x.workspace === entry.workspace));
  all.push(entry);
  await writeSealed(c, FILE, PURPOSE, { v: 1, entries: all.slice(-MAX_ENTRIES) } satisfies OfflineFile);
}

/** EEXPIRED after the policy's last day. */
export function checkExpiry(s: WorkspaceSettings, at: Date): void {
  if (s.expires !== undefined && utcDay(at) > s.expires) {
    throw new MedvError('EEXPIRED', `workspace ${s.name} expired on ${s.expires}: its policy lets it start until that day; ask your administrator`, { expires: s.expires });
  }
}

/** Days of offline use left (may be negative), or EOFFLINE with the reason. */
export function checkOfflineAllowance(e: OfflineEntry, at: Date): number {
  const allowed = e.settings.offlineDays ?? 0;
  const last = new Date(e.lastOnline);
  const ws = e.workspace;
  if (Number.isNaN(last.getTime())) throw new MedvError('EFORMAT', `the offline cache of workspace ${ws} has no valid last contact`);
  if (allowed === 0) throw new MedvError('EOFFLINE', `cannot reach the server, and the policy of workspace ${ws} does not allow offline use: connect to the network and retry`, { allowedDays: 0 });
  if (at.getTime() < last.getTime() - CLOCK_SLACK_MS) {
    throw new MedvError('EOFFLINE', `cannot reach the server, and this computer's clock (${at.toISOString()}) is before the last contact with it (${e.lastOnline}): fix the clock or connect to the server`);
  }
  const used = daysBetween(last, at);
  if (used >= allowed) {
    throw new MedvError('EOFFLINE', `cannot reach the server: workspace ${ws} last reached it on ${utcDay(last)}, ${used} days ago, and its policy allows ${allowed} day${allowed === 1 ? '' : 's'} offline: connect to the server to go on`, { allowedDays: allowed, usedDays: used });
  }
  return allowed - used;
}
