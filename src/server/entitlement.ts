/**
 * Who gets which workspace, as pure functions over policy documents:
 *
 * - A policy version entitles a user when its `users` names the user or its `groups` names one of
 *   the user's groups. (store.ts policiesFor is the same rule in SQL, for the grant's one user;
 *   test/server/policy-preview.test.ts checks the two agree.)
 * - A user's workspace W comes from the first policy, by policy name, among the newest versions
 *   that entitle the user, with a workspace named W (the grant, keyservice.ts; the console's
 *   preview of a change, policy-preview.ts).
 */
export interface PolicyDoc { users?: string[]; groups?: string[]; workspaces?: { name?: unknown; image?: unknown; [k: string]: unknown }[] }
export interface PolicyEntry { name: string; version: number; document: unknown }
export interface Picked { policy: { name: string; version: number }; settings: Record<string, unknown> }

export function entitles(doc: PolicyDoc, user: string, groups: readonly string[]): boolean {
  return (doc.users ?? []).includes(user) || (doc.groups ?? []).some((g) => groups.includes(g));
}

/** The workspace `workspace` from `policies` (those entitling the user), first by policy name; undefined when none has it. */
export function pickWorkspace(policies: readonly PolicyEntry[], workspace: string): Picked | undefined {
  for (const p of [...policies].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
    const ws = ((p.document as PolicyDoc).workspaces ?? []).find((w) => w.name === workspace);
    if (ws) return { policy: { name: p.name, version: p.version }, settings: ws as Record<string, unknown> };
  }
  return undefined;
}

/** Every workspace a user gets from `policies` (those entitling the user), by workspace name. */
export function workspacesOf(policies: readonly PolicyEntry[]): Map<string, Picked> {
  const out = new Map<string, Picked>();
  for (const p of policies) {
    for (const w of (p.document as PolicyDoc).workspaces ?? []) {
      if (typeof w.name === 'string' && !out.has(w.name)) out.set(w.name, pickWorkspace(policies, w.name)!);
    }
  }
  return out;
}
