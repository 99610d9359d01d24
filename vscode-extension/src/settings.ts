// The extension's settings and what `banger lsp` receives from them
// (initializationOptions and workspace/didChangeConfiguration, both
// `{"banger": {...}}`; see docs/lsp.md). Pure: no `vscode` import.

/** The `banger.*` settings, normalised. */
export interface ExtensionSettings {
  /** The banger executable. */
  path: string;
  vm: string;
  testCommand: string;
  syncOnSave: boolean;
  vcpu: number | null;
  /** MiB as a number, or a size such as "2G". */
  memory: number | string | null;
  /** Outbound network access for a sandbox it creates; null: unset. */
  nat: boolean | null;
  /** Egress rules (HOST, HOST:PORT, *.DOMAIN); null: unset. */
  allow: string[] | null;
  /** The image a sandbox it creates boots; '': unset. */
  image: string;
}

/** What the server is sent under `banger`. */
export interface ServerSettings {
  vm: string;
  testCommand: string;
  syncOnSave: boolean;
  vcpu: number | null;
  memory: number | string | null;
  nat: boolean | null;
  allow: string[] | null;
  image: string;
  trusted: boolean;
}

export interface Problem {
  setting: string;
  message: string;
}

/** Reads `banger.<key>` (a `WorkspaceConfiguration.get` bound to "banger"). */
export type Getter = (key: string) => unknown;

function str(v: unknown): string {
  return typeof v === 'string' ? v.trim() : '';
}

/**
 * Normalises the settings. Invalid values fall back to "unset" (the
 * server's default) and are reported, never sent.
 */
export function readSettings(get: Getter): { settings: ExtensionSettings; problems: Problem[] } {
  const problems: Problem[] = [];
  const path = str(get('path')) || 'banger';

  let vcpu: number | null = null;
  const rawVcpu = get('vcpu');
  if (rawVcpu !== undefined && rawVcpu !== null && rawVcpu !== '') {
    if (typeof rawVcpu === 'number' && Number.isInteger(rawVcpu) && rawVcpu >= 1) {
      vcpu = rawVcpu;
    } else {
      problems.push({ setting: 'banger.vcpu', message: `banger.vcpu must be a whole number of at least 1, not ${JSON.stringify(rawVcpu)}; using the default` });
    }
  }

  let memory: number | string | null = null;
  const rawMemory = get('memory');
  if (typeof rawMemory === 'number') {
    if (Number.isInteger(rawMemory) && rawMemory >= 1) {
      memory = rawMemory;
    } else {
      problems.push({ setting: 'banger.memory', message: `banger.memory must be a positive number of MiB or a size such as "2G", not ${rawMemory}; using the default` });
    }
  } else if (typeof rawMemory === 'string' && rawMemory.trim() !== '') {
    const m = rawMemory.trim();
    // A bare number is MiB, as the number form is: the server would read
    // the string "2048" as bytes.
    if (/^\d+$/.test(m)) {
      memory = Number(m);
    } else if (/^\d+[kKmMgGtT](iB|B)?$/.test(m)) {
      memory = m;
    } else {
      problems.push({ setting: 'banger.memory', message: `banger.memory must be MiB (2048) or a size such as "2G", not "${m}"; using the default` });
    }
  } else if (rawMemory !== undefined && rawMemory !== null && rawMemory !== '') {
    problems.push({ setting: 'banger.memory', message: `banger.memory must be MiB (2048) or a size such as "2G"; using the default` });
  }

  const rawNat = get('nat');
  let nat: boolean | null = null;
  if (typeof rawNat === 'boolean') {
    nat = rawNat;
  } else if (rawNat !== undefined && rawNat !== null) {
    problems.push({ setting: 'banger.nat', message: 'banger.nat must be true or false; using the default' });
  }

  const rawAllow = get('allow');
  let allow: string[] | null = null;
  if (Array.isArray(rawAllow)) {
    const rules = rawAllow.filter((r): r is string => typeof r === 'string').map((r) => r.trim()).filter((r) => r !== '');
    if (rules.length !== rawAllow.length) {
      problems.push({ setting: 'banger.allow', message: 'banger.allow must be a list of host names (HOST, HOST:PORT or *.DOMAIN); other entries are left out' });
    }
    allow = rules;
  } else if (rawAllow !== undefined && rawAllow !== null) {
    problems.push({ setting: 'banger.allow', message: 'banger.allow must be a list of host names; using the default' });
  }

  const sync = get('syncOnSave');
  return {
    settings: {
      path,
      vm: str(get('vm')),
      testCommand: str(get('testCommand')),
      syncOnSave: typeof sync === 'boolean' ? sync : true,
      vcpu,
      memory,
      nat,
      allow,
      image: str(get('image')),
    },
    problems,
  };
}

/**
 * `{"banger": {...}}` for initializationOptions and didChangeConfiguration.
 * Every key is always present (empty string or null meaning "unset"): the
 * server merges a configuration change over what it had, so a key left
 * out would keep its old value instead of being cleared.
 */
export function serverOptions(s: ExtensionSettings, trusted: boolean): { banger: ServerSettings } {
  return {
    banger: {
      vm: s.vm,
      testCommand: s.testCommand,
      syncOnSave: s.syncOnSave,
      vcpu: s.vcpu,
      memory: s.memory,
      nat: s.nat,
      allow: s.allow,
      image: s.image,
      trusted,
    },
  };
}

/** Whether a change of settings needs `banger lsp` restarted (not just told). */
export function needsRestart(before: ExtensionSettings, after: ExtensionSettings): boolean {
  // The server starts its file watcher when it binds, only with syncOnSave.
  return before.path !== after.path || before.syncOnSave !== after.syncOnSave;
}
