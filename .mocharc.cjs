/**
 * mocha's settings (JavaScript, not JSON: the job count and the file order are computed).
 * - Files run side by side (`--parallel`), as many at once as the machine has cores (at least 2):
 *   each test file is independent (its own temp folders, run root, ports and sockets).
 * - The files that take longest start first, so the last minutes are not one slow file alone
 *   (figures: MEDV_TEST_TIMES=FILE npm test, then node scripts/test-times.js FILE).
 * - MEDV_TEST_JOBS overrides the job count (1: one file at a time, still in a worker).
 * - `npx mocha dist/test/x/y.test.js` runs the files named instead of all of them: mocha adds a
 *   config's `spec` to the files on the command line, so the list of all files is given only when
 *   the command line names none.
 */
const { availableParallelism } = require('node:os');
const { readdirSync } = require('node:fs');
const { join } = require('node:path');
const { aliases, types } = require('mocha/lib/cli/run-option-metadata.js');

const SLOW_FIRST = [ // measured (scripts/test-times.js), slowest first
  'workspace/workspace', 'e2e/linux-guest', 'host/vm', 'host/linux', 'server/api', 'e2e/guest', 'e2e/boot-export',
  'host/savedstate', 'cli/admin', 'host/binding', 'cli/locks', 'e2e/crash', 'cli/image-repo', 'cli/outputs', 'host/disks',
];

function testFiles(dir) {
  try {
    return readdirSync(dir, { recursive: true }).filter((f) => f.endsWith('.test.js')).map((f) => join(dir, f));
  } catch {
    return []; // not built yet: mocha then says there are no test files
  }
}

/** Whether mocha's command line names test files (a positional argument, or --spec). */
function namesFiles(argv) {
  const withValue = new Set([...types.array, ...types.number, ...types.string].flatMap((k) => [k, ...(aliases[k] ?? [])]));
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--') return i + 1 < argv.length;
    if (!a.startsWith('-') || a === '-') return true;
    const [name, value] = a.replace(/^--?/, '').split(/=(.*)/s);
    if (name === 'spec') return true;
    if (value === undefined && withValue.has(name)) i++; // its value is the next argument
  }
  return false;
}

const rank = (f) => {
  const i = SLOW_FIRST.findIndex((s) => f.endsWith(`${s}.test.js`));
  return i < 0 ? SLOW_FIRST.length : i;
};

module.exports = {
  timeout: 120000,
  reporter: 'spec',
  exit: true,
  parallel: true,
  jobs: Number(process.env.MEDV_TEST_JOBS) || Math.max(2, availableParallelism()),
  require: ['dist/test/helpers/timing.js'],
  ...(namesFiles(process.argv.slice(2)) ? {} : { spec: testFiles('dist/test').sort((a, b) => rank(a) - rank(b) || a.localeCompare(b)) }),
};
