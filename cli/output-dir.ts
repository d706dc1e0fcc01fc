/** Output folders are checked before the work that fills them, not after. */
import { constants, statSync, type Stats } from 'node:fs';
import { access } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { UsageError } from './options.ts';

/**
 * A usage error unless `dir` is a writable folder or can be created as one: the nearest part of
 * it that exists must be a folder this process may write into. Nothing is created.
 */
export async function checkOutputDir(flag: string, dir: string): Promise<void> {
  const target = resolve(dir);
  for (let p = target; ; p = dirname(p)) {
    const st = existing(p);
    if (st === undefined) {
      if (dirname(p) === p) return;
      continue;
    }
    if (!st.isDirectory()) {
      throw new UsageError(p === target
        ? `${flag}: ${dir} is a file; expected a folder (or a path that does not exist yet)`
        : `${flag}: cannot create ${dir}: ${p} is a file, not a folder`);
    }
    try {
      await access(p, constants.W_OK);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      throw new UsageError(`${flag}: ${p === target ? dir : `cannot create ${dir}: ${p}`} is not writable (${code === 'EROFS' ? 'a read-only file system' : code ?? String(e)})`);
    }
    return;
  }
}

/** The stats of `path`, or undefined where nothing is (ENOTDIR too: a file stands on the way, found higher up). */
function existing(path: string): Stats | undefined {
  try {
    return statSync(path, { throwIfNoEntry: false });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOTDIR') return undefined;
    throw e;
  }
}
