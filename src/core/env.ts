/**
 * Environments for the processes medv starts. A child inherits nothing it was not meant to see:
 * secrets (MEDV_PASSPHRASE, admin tokens, anything named like a key, token, password or secret,
 * and any URL that carries a password, whatever its variable is called) never reach one, and
 * external programs (QEMU, passt, flock, debugfs) get only what they need to run.
 */

/** Names whose value may be a secret: never passed to a child. */
const SECRET_NAME = /PASS|SECRET|TOKEN|KEY|CREDENTIAL|COOKIE|^MEDV_DB$|_AUTH$/i;

/** A URL that carries a password (`scheme://user:password@host…`), whatever its variable is called. */
const SECRET_VALUE = /^[a-z][a-z0-9+.-]*:\/\/[^/?#@\s]*:[^/?#@\s]*@/i;

/** Is this environment variable one a child must not get? */
export function isSecretName(name: string): boolean {
  return SECRET_NAME.test(name);
}

/** Is this variable (by its name, or a value that is a URL with a password) one a child must not get? */
export function isSecretVariable(name: string, value: string): boolean {
  return isSecretName(name) || SECRET_VALUE.test(value);
}

/** This process's environment without anything that may be a secret (for medv's own children). */
export function scrubbedEnv(env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const out: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(env)) if (v !== undefined && !isSecretVariable(k, v)) out[k] = v;
  return out;
}

/** Only the named variables (those set), plus PATH and the locale, for an external program. */
export function minimalEnv(names: readonly string[] = [], env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const out: NodeJS.ProcessEnv = {};
  for (const k of ['PATH', 'LANG', 'LC_ALL', ...names]) {
    const v = env[k];
    if (v !== undefined && !isSecretVariable(k, v)) out[k] = v;
  }
  out.PATH ??= '/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin';
  return out;
}
