#!/usr/bin/env node
/**
 * The layering check (DESIGN.md's folder layout, issue 19's acceptance), over the TypeScript
 * sources: `node scripts/check-layers.js [SRC]` (default: src/ beside this script). Prints one line
 * per violation and exits 1 when there is any, 0 (silent) when the tree is clean.
 *
 *  1. The server and its clients are apart: nothing in src/workspace, src/repo or src/client
 *     imports src/server, and src/server imports none of them. What both sides need is in src/api.
 *  2. No cycle between folders (a folder is a first-level folder of src/; a file directly in src/
 *     is its own unit): the layers form a DAG. Type-only imports count: they are dependencies too.
 *  3. Files are renamed or linked only in src/core/fsio.ts (write-then-rename, publish without
 *     overwrite, one temp-name shape): any `rename`, `renameSync`, `link` or `linkSync` taken
 *     from node:fs (named import, or called as a member: `fs.renameSync(`, `fs.promises.link(`)
 *     elsewhere is a violation. `symlink` is not a rename.
 *
 * Plain Node, no dependencies: it reads import/export specifiers with a regular expression, which is
 * enough for this code base (no import text inside strings of the checked files).
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const SERVER = 'server';
const CLIENT_SIDE = ['workspace', 'repo', 'client'];
const FSIO = 'core/fsio.ts';

function walk(dir) {
  const out = [];
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...walk(p));
    else if ((name.endsWith('.ts') && !name.endsWith('.d.ts')) || name.endsWith('.tsx')) out.push(p);
  }
  return out;
}

/** The unit of a file: its first folder under src, or the file's own name for files in src/. */
function unitOf(srcRoot, file) {
  const rel = relative(srcRoot, file).split(sep);
  return rel.length === 1 ? rel[0].replace(/\.ts$/, '') : rel[0];
}

const IMPORT_RE = /(?:^|[\s;])(?:import|export)\s+(?:type\s+)?(?:[^'"`;]*?\s+from\s+)?['"]([^'"]+)['"]|\bimport\(\s*['"]([^'"]+)['"]\s*\)/g;

function imports(text) {
  const specs = [];
  for (const m of text.matchAll(IMPORT_RE)) specs.push(m[1] ?? m[2]);
  return specs;
}

/** Strip comments (block and line) so that examples in comments are not taken for code. */
function stripComments(text) {
  return text.replace(/\/\*[\s\S]*?\*\//g, (c) => c.replace(/[^\n]/g, ' ')).replace(/(^|[^:'"`\\])\/\/[^\n]*/g, '$1');
}

const FS_MODULES = new Set(['fs', 'node:fs', 'fs/promises', 'node:fs/promises']);
const RENAMES = new Set(['rename', 'renameSync', 'link', 'linkSync']);

function renameUses(text) {
  const found = [];
  // Named imports from node:fs of a rename or link function.
  const named = /import\s+(?:type\s+)?\{([^}]*)\}\s*from\s*['"]([^'"]+)['"]/g;
  for (const m of text.matchAll(named)) {
    if (!FS_MODULES.has(m[2])) continue;
    for (const part of m[1].split(',')) {
      const name = part.trim().split(/\s+as\s+/)[0];
      if (RENAMES.has(name)) found.push({ at: m.index, what: `imports ${name} from ${m[2]}` });
    }
  }
  // Member calls: fs.renameSync(, fs.promises.rename(, fsp.link(, promises.linkSync(.
  for (const m of text.matchAll(/\.\s*(rename|renameSync|link|linkSync)\s*\(/g)) found.push({ at: m.index, what: `calls .${m[1]}(` });
  return found;
}

function lineOf(text, needle) {
  const i = typeof needle === 'number' ? needle : text.indexOf(needle);
  return i < 0 ? 0 : text.slice(0, i).split('\n').length;
}

export function checkLayers(srcRoot) {
  const root = resolve(srcRoot);
  const files = walk(root);
  const problems = [];
  const edges = new Map(); // unit -> Map(unit -> first "file -> spec")
  for (const file of files) {
    const raw = readFileSync(file, 'utf8');
    const text = stripComments(raw);
    const rel = relative(root, file).split(sep).join('/');
    const from = unitOf(root, file);
    for (const spec of imports(text)) {
      if (!spec.startsWith('.')) continue;
      const target = resolve(dirname(file), spec.replace(/\.js$/, '.ts'));
      if (!target.startsWith(root + sep)) continue;
      const to = unitOf(root, target);
      if (to === from) continue;
      if (!edges.has(from)) edges.set(from, new Map());
      if (!edges.get(from).has(to)) edges.get(from).set(to, `${rel} imports ${spec}`);
      if (CLIENT_SIDE.includes(from) && to === SERVER) problems.push(`src/${rel}:${lineOf(raw, spec)}: src/${from} must not import src/server (${spec}); move what both sides need to src/api`);
      if (from === SERVER && CLIENT_SIDE.includes(to)) problems.push(`src/${rel}:${lineOf(raw, spec)}: src/server must not import src/${to} (${spec})`);
    }
    if (rel !== FSIO) {
      for (const use of renameUses(text)) problems.push(`src/${rel}:${lineOf(text, use.at)}: ${use.what}: files are renamed or linked only in src/${FSIO}`);
    }
  }
  // Folder cycles: every strongly connected component with more than one unit (Tarjan).
  let index = 0;
  const idx = new Map();
  const low = new Map();
  const stack = [];
  const on = new Set();
  const units = [...new Set([...edges.keys(), ...[...edges.values()].flatMap((m) => [...m.keys()])])].sort();
  const strong = (v) => {
    idx.set(v, index); low.set(v, index); index++;
    stack.push(v); on.add(v);
    for (const w of [...(edges.get(v)?.keys() ?? [])].sort()) {
      if (!idx.has(w)) { strong(w); low.set(v, Math.min(low.get(v), low.get(w))); }
      else if (on.has(w)) low.set(v, Math.min(low.get(v), idx.get(w)));
    }
    if (low.get(v) === idx.get(v)) {
      const comp = [];
      let w;
      do { w = stack.pop(); on.delete(w); comp.push(w); } while (w !== v);
      if (comp.length > 1) {
        comp.sort();
        const inside = [];
        for (const a of comp) for (const [b, why] of edges.get(a) ?? []) if (comp.includes(b)) inside.push(`${a} -> ${b} (src/${why})`);
        problems.push(`folder cycle between ${comp.map((c) => `src/${c}`).join(', ')}: ${inside.join('; ')}`);
      }
    }
  };
  for (const u of units) if (!idx.has(u)) strong(u);
  return problems;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const src = process.argv[2] ?? join(dirname(fileURLToPath(import.meta.url)), '..', 'src');
  const problems = checkLayers(src);
  for (const p of problems) process.stdout.write(`${p}\n`);
  process.exitCode = problems.length ? 1 : 0;
}
