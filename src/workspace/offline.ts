/**
 * `data/Local/Config/Offline.dat`: what a client keeps of each workspace grant to start without
 * the server, sealed under the host key: the policy entry, its image and image id, the newest
 * version the server announced and when the server was last reached; and, for the whole client,
 * the latest time it has seen (`seen`). The released keys themselves are in the workspace's key
 * folder (./grant.ts), wrapped with the host key.
 *
 * The rules a start obeys (src/workspace/README.md):
 *   - online or not, the policy's `expires` day is the last day it starts (EEXPIRED);
 *   - offline, it starts only while the last contact is at most `offlineDays` days old (EOFFLINE),
 *     and never with a clock earlier than that contact.
 *   - Offline, time only moves forward: the rules use max(local clock, seen), and each offline
 *     start records it as the new `seen`. Setting the clock back gives back no offline day and no
 *     expired workspace. Online, the server's clock (its Date) is the time, and dates the grant
 *     (`lastOnline`), so a clock set forward during a grant buys nothing either.
 *
 * Entries are keyed by (server, user, workspace): a login to another server, or another user of a
 * shared root, never starts from someone else's cached grant.
 */
import { join } from 'node:path';
import { MedvError } from '../core/errors.js';
import { readSealed, writeSealed, type ClientRoot } from '../repo/index.js';
import { daysBetween, utcDay } from './clock.js';
import { checkSettings, type WorkspaceSettings } from './settings.js';

export interface OfflineEntry {
  server: string;
  user: string;
  workspace: string;
  image: string;
  /** The image's content key id (32 hex): which image the grant released keys for. */
  imageId: string;
  policy: { name: string; version: number };
  settings: WorkspaceSettings;
  latestVersion: number | null;
  /** ISO time of the last grant, by the server's clock when it sent one. */
  lastOnline: string;
}

interface OfflineFile { v: 1; entries: OfflineEntry[]; seen?: string }

const FILE = join('data', 'Local', 'Config', 'Offline.dat');
const PURPOSE = 'medv-offline-cache-v1';
const MAX_ENTRIES = 256;
/** A clock this far before the last contact is still believed (small skews between machines). */
const CLOCK_SLACK_MS = 10 * 60_000;

const same = (a: Pick<OfflineEntry, 'server' | 'user' | 'workspace'>, b: Pick<OfflineEntry, 'server' | 'user' | 'workspace'>) =>
  a.server === b.server && a.user === b.user && a.workspace === b.workspace;

async function load(c: ClientRoot): Promise<OfflineFile> {
  const f = await readSealed<OfflineFile>(c, FILE, PURPOSE);
  if (!f) return { v: 1, entries: [] };
  if (f.v !== 1 || !Array.isArray(f.entries)) throw new MedvError('EFORMAT', `${FILE} is not a medv offline cache`, { file: FILE });
  // entries of an earlier medv (no server or image id) are not trusted to say which image they hold
  const entries = f.entries.slice(0, MAX_ENTRIES).filter((e) => typeof e?.server === 'string' && typeof e.imageId === 'string');
  const seen = typeof f.seen === 'string' && !Number.isNaN(Date.parse(f.seen)) ? f.seen : undefined;
  return { v: 1, entries, ...(seen ? { seen } : {}) };
}

export async function offlineEntries(c: ClientRoot, server: string, user: string): Promise<OfflineEntry[]> {
  return (await load(c)).entries.filter((e) => e.server === server && e.user === user);
}

export async function offlineEntry(c: ClientRoot, server: string, user: string, workspace: string): Promise<OfflineEntry | undefined> {
  const e = (await load(c)).entries.find((x) => same(x, { server, user, workspace }));
  if (!e) return undefined;
  // sealed, so ours; checked anyway: an entry from an older medv may not fit today's schema
  return { ...e, settings: checkSettings(e.settings, workspace, e.policy?.name) };
}

/** Keep `entry` (replacing that of its server, user and workspace). */
export async function saveOfflineEntry(c: ClientRoot, entry: OfflineEntry): Promise<void> {
  const f = await load(c);
  const entries = f.entries.filter((x) => !same(x, entry));
  entries.push(entry);
  await writeSealed(c, FILE, PURPOSE, { ...f, entries: entries.slice(-MAX_ENTRIES) } satisfies OfflineFile);
}

/** Forget the grant of (server, user, workspace); true when there was one. */
export async function removeOfflineEntry(c: ClientRoot, key: Pick<OfflineEntry, 'server' | 'user' | 'workspace'>): Promise<boolean> {
  const f = await load(c);
  const entries = f.entries.filter((x) => !same(x, key));
  if (entries.length === f.entries.length) return false;
  await writeSealed(c, FILE, PURPOSE, { ...f, entries } satisfies OfflineFile);
  return true;
}

/**
 * The time the rules use, recorded as the latest time seen (sealed with the cache). Online (the
 * server's clock `server` known) it is the server's time: the server is the authority, and a
 * local clock that was wrong before is forgotten. Offline it is max(local clock, the latest time
 * seen): setting the clock back changes nothing, and every offline start moves it forward.
 */
export async function advanceClock(c: ClientRoot, local: Date, server?: Date): Promise<Date> {
  const f = await load(c);
  const trusted = server && !Number.isNaN(server.getTime()) ? server : undefined;
  const now = trusted ?? new Date(Math.max(local.getTime(), f.seen !== undefined ? Date.parse(f.seen) : -Infinity));
  if (f.seen !== now.toISOString()) await writeSealed(c, FILE, PURPOSE, { ...f, seen: now.toISOString() } satisfies OfflineFile);
  return now;
}

/** EEXPIRED after the policy's last day. */
export function checkExpiry(s: WorkspaceSettings, at: Date): void {
  if (s.expires !== undefined && utcDay(at) > s.expires) {
    throw new MedvError('EEXPIRED', `workspace ${s.name} expired on ${s.expires}: its policy lets it start until that day; ask your administrator`, { expires: s.expires });
  }
}

/**
 * Days of offline use left, or EOFFLINE with the reason. `at` is the time the rules use
 * (advanceClock: never earlier than any time seen before), `local` the computer's clock.
 */
export function checkOfflineAllowance(e: OfflineEntry, at: Date, local: Date = at): number {
  const allowed = e.settings.offlineDays ?? 0;
  const last = new Date(e.lastOnline);
  const ws = e.workspace;
  if (Number.isNaN(last.getTime())) throw new MedvError('EFORMAT', `the offline cache of workspace ${ws} has no valid last contact`);
  if (allowed === 0) throw new MedvError('EOFFLINE', `cannot reach the server, and the policy of workspace ${ws} does not allow offline use: connect to the network and retry`, { allowedDays: 0 });
  if (local.getTime() < last.getTime() - CLOCK_SLACK_MS) {
    throw new MedvError('EOFFLINE', `cannot reach the server, and this computer's clock (${local.toISOString()}) is before the last contact with it (${e.lastOnline}): fix the clock or connect to the server`);
  }
  const used = daysBetween(last, at);
  if (used >= allowed) {
    throw new MedvError('EOFFLINE', `cannot reach the server: workspace ${ws} last reached it on ${utcDay(last)}, ${used} days ago, and its policy allows ${allowed} day${allowed === 1 ? '' : 's'} offline: connect to the server to go on`, { allowedDays: allowed, usedDays: used });
  }
  return allowed - used;
}
