/**
 * What a console page handler gets (one request, after the gate in module.ts has signed it in,
 * checked its role and, for a POST, its CSRF token) and what it answers.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Accounts } from '../accounts.js';
import type { Audit } from '../audit.js';
import type { ImageCatalog } from '../catalog.js';
import type { KeyService } from '../keyservice.js';
import type { ImageTests } from '../imagetest.js';
import type { ClientControls } from '../controls.js';
import { requestPath } from '../http.js';
import type { Assets } from './assets.js';
import type { Html } from './html.js';
import type { Frame } from './layout.js';
import type { ConsoleSession, ConsoleSessions } from './session.js';

export interface Services {
  accounts: Accounts;
  audit: Audit;
  keys?: KeyService;
  catalog: ImageCatalog;
  sessions: ConsoleSessions;
  assets: Assets;
  isAdmin(user: string): Promise<boolean>;
  /** The image test (absent: the server does not run them). */
  tests?: ImageTests;
  /** Lock, wipe, revoke. */
  controls?: ClientControls;
}

export interface Ctx {
  req: IncomingMessage;
  res: ServerResponse;
  /** The undecoded path, and the decoded query and (POST) form. */
  path: string;
  query: URLSearchParams;
  form: URLSearchParams;
  /** The connection is HTTPS (or comes through a TLS proxy the server was told about). */
  secure: boolean;
  address: string;
  /** Set on every page behind the sign-in. */
  session?: ConsoleSession;
  /** The frame of the page (assets, user, CSRF token for its forms). */
  frame: Frame;
  services: Services;
  /** Captures of the route's pattern, decoded. */
  params: string[];
  /** When the request arrived (process.hrtime.bigint()): the Server-Timing header. */
  started: bigint;
}

export type Answer =
  | { kind: 'page'; status?: number; html: Html; headers?: Record<string, string | string[]> }
  | { kind: 'redirect'; location: string; headers?: Record<string, string | string[]> }
  /** The handler wrote the response itself (a CSV export). */
  | { kind: 'sent' };

export const page = (html: Html, status = 200, headers?: Record<string, string | string[]>): Answer => ({ kind: 'page', status, html, headers });
export const redirect = (location: string, headers?: Record<string, string | string[]>): Answer => ({ kind: 'redirect', location, headers });

/** A `next` target after sign-in: a console path the router itself would accept, else the overview. */
export function safeNext(v: string | null | undefined): string {
  if (typeof v !== 'string' || v.length > 1024 || !v.startsWith('/console/') || v.startsWith('/console//') || /[\\\r\n]/.test(v)) return '/console/';
  return requestPath(v) !== undefined ? v : '/console/';
}
