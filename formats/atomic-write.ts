// Files a user cares about are never left half-written: everything goes to a temp file beside the
// target, is fsynced, and only then renamed over it (rename is atomic within one directory).
import { open, readdir, rename, rm, unlink } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';

/**
 * An fs error that says what was being done to which path: Node's own message names no path for
 * a write on an open handle (`ENOSPC: no space left on device, write`). The errno code is kept.
 */
export function ioError(doing: string, path: string, cause: unknown): Error {
  const code = (cause as NodeJS.ErrnoException | null)?.code;
  const err: NodeJS.ErrnoException = new Error(`${doing} ${path}: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
  if (code !== undefined) err.code = code;
  return err;
}

/**
 * The temporary name of `path` for this process. The PID in it lets a later run tell a dead
 * writer's leftover from a live writer's file (removeStaleTemps).
 */
export function tempPath(path: string): string {
  return `${path}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`;
}

// What tempPath makes, and the NNNNNN.tmp-PID checkpoint folders of older writers.
const TEMP_NAME = /^(?:.+\.tmp-(\d+)-[0-9a-f]{12}|\d{6}\.tmp-(\d+))$/;

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    // EPERM: the process exists but belongs to another user.
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Removes the temporary files and folders in `dir` (not below it) left by writers that are no
 * longer running, and returns their names. Call it before this process writes into `dir`: a
 * leftover carrying this process's own PID is then one of an earlier process that had the same
 * PID (common in containers, where the same PID comes back on every start).
 */
export async function removeStaleTemps(dir: string): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw ioError('listing', dir, e);
  }
  const stale = names.filter((n) => {
    const m = TEMP_NAME.exec(n);
    const pid = Number(m?.[1] ?? m?.[2]);
    return m !== null && (pid === process.pid || !processAlive(pid));
  });
  for (const n of stale) {
    try {
      await rm(join(dir, n), { recursive: true, force: true });
    } catch (e) {
      throw ioError('removing the leftover', join(dir, n), e);
    }
  }
  return stale;
}

/** Writes `bytes` fully at `position`, looping because a single write may be short. */
export async function writeAllAt(handle: FileHandle, bytes: Uint8Array, position: number): Promise<void> {
  // Chunked so that no single write call approaches the 2 GiB per-call limit of the OS/libuv.
  const chunk = 1 << 30;
  let done = 0;
  while (done < bytes.byteLength) {
    const len = Math.min(chunk, bytes.byteLength - done);
    const { bytesWritten } = await handle.write(bytes, done, len, position + done);
    if (bytesWritten <= 0) throw new Error(`write made no progress at byte ${position + done}`);
    done += bytesWritten;
  }
}

/**
 * Runs `fill` on a handle to a fresh temp file next to `path`, then fsyncs and renames it over
 * `path`. If anything fails the temp file is removed and the error rethrown naming `path`; `path`
 * is untouched.
 */
export async function withAtomicFile<T>(path: string, fill: (handle: FileHandle) => Promise<T>): Promise<T> {
  const tmp = tempPath(path);
  let handle: FileHandle;
  try {
    handle = await open(tmp, 'wx');
  } catch (e) {
    throw ioError('writing', path, e);
  }
  let closed = false;
  try {
    const result = await fill(handle);
    await handle.sync();
    await handle.close();
    closed = true;
    await rename(tmp, path);
    await syncDirectory(dirname(path));
    return result;
  } catch (err) {
    if (!closed) await handle.close().catch(() => undefined);
    await unlink(tmp).catch(() => undefined);
    // A system error (ENOSPC, EACCES, …) is named with the file; what `fill` itself rejects
    // (a corrupt input, say) already names its own subject.
    throw (err as NodeJS.ErrnoException | null)?.code !== undefined ? ioError('writing', path, err) : err;
  }
}

/** Atomically replaces `path` with `data` (a buffer, a UTF-8 string, or buffers written in order). */
export async function writeFileAtomic(path: string, data: Uint8Array | string | readonly Uint8Array[]): Promise<void> {
  const parts = typeof data === 'string' ? [Buffer.from(data, 'utf8')] : data instanceof Uint8Array ? [data] : data;
  await withAtomicFile(path, async (handle) => {
    let position = 0;
    for (const part of parts) {
      await writeAllAt(handle, part, position);
      position += part.byteLength;
    }
  });
}

// The rename itself only survives a crash once the directory entry is flushed too. Windows cannot
// open a directory for fsync, and there the rename is already as durable as the OS makes it.
async function syncDirectory(dir: string): Promise<void> {
  if (process.platform === 'win32') return;
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
