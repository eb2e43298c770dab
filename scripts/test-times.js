#!/usr/bin/env node
/**
 * The slowest test files of a run: `MEDV_TEST_TIMES=/tmp/t.jsonl npm test`, then
 * `node scripts/test-times.js /tmp/t.jsonl [N]` (default 15). Each line of the file is one
 * top-level describe (test/helpers/timing.ts); they are summed per file. Prints one row per file,
 * slowest first: seconds, tests, file; then the sum of all files (in a --parallel run the wall
 * time is less: files run side by side).
 */
import { readFileSync } from 'node:fs';

const [file, n = '15'] = process.argv.slice(2);
if (!file) {
  process.stderr.write('usage: node scripts/test-times.js TIMES.jsonl [N]\n');
  process.exit(2);
}
const byFile = new Map();
for (const line of readFileSync(file, 'utf8').split('\n')) {
  if (!line.trim()) continue;
  const r = JSON.parse(line);
  const f = byFile.get(r.file) ?? { ms: 0, tests: 0 };
  f.ms += r.ms;
  f.tests += r.tests;
  byFile.set(r.file, f);
}
const rows = [...byFile].sort((a, b) => b[1].ms - a[1].ms);
for (const [f, r] of rows.slice(0, Number(n))) process.stdout.write(`${(r.ms / 1000).toFixed(1).padStart(7)} s ${String(r.tests).padStart(4)}  ${f}\n`);
const total = rows.reduce((s, [, r]) => s + r.ms, 0);
process.stdout.write(`${(total / 1000).toFixed(1).padStart(7)} s ${String(rows.reduce((s, [, r]) => s + r.tests, 0)).padStart(4)}  all ${rows.length} files (sum)\n`);
