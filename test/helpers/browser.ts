/**
 * A real browser for tests of web pages: Debian's Chromium (/usr/bin/chromium, scripts/setup.sh
 * installs it) driven by playwright-core, which downloads no browser. One browser per test file
 * (a launch takes seconds): launch it in `before`, close it in `after`. Flags as FACTS.md says:
 * headless, no GPU, no background networking (the machine's closed network refuses it), no
 * component updates, no sync, no first-run; --no-sandbox only as root; playwright gives each
 * launch a fresh empty profile folder.
 *
 * Also here: axe-core run inside a page (accessibility), and screenshots saved under
 * $TMPDIR/medv-console-shots/<suite>/ for a person to look at.
 */
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Browser, type Page, chromium } from 'playwright-core';

export const CHROMIUM = '/usr/bin/chromium';

export async function launchBrowser(): Promise<Browser> {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: install Debian's chromium package (scripts/setup.sh does)`);
  const args = ['--disable-gpu', '--disable-quic', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-dev-shm-usage'];
  if (process.getuid?.() === 0) args.push('--no-sandbox');
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args });
}

const AXE = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');

export interface AxeViolation { id: string; impact: string | null; help: string; nodes: string[] }

/** axe-core's violations of the page as it is now (run through the DevTools protocol, so the page's CSP does not apply to axe itself). */
export async function axeViolations(page: Page): Promise<AxeViolation[]> {
  await page.evaluate(AXE);
  return page.evaluate(async () => {
    const axe = (globalThis as unknown as { axe: { run(ctx: unknown, o: unknown): Promise<{ violations: { id: string; impact: string | null; help: string; nodes: { target: unknown[] }[] }[] }> } }).axe;
    const r = await axe.run(document, { resultTypes: ['violations'] });
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map((n) => JSON.stringify(n.target)) }));
  });
}

/** The violations that fail a test: serious and critical ones. */
export async function seriousViolations(page: Page): Promise<AxeViolation[]> {
  return (await axeViolations(page)).filter((v) => v.impact === 'serious' || v.impact === 'critical');
}

/** The folder of a suite's screenshots, emptied and created; print it so a person can find them. */
export function shotsDir(suite: string): string {
  const dir = join(tmpdir(), 'medv-console-shots', suite);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  return dir;
}
