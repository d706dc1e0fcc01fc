// Files a user cares about are never left half-written: everything goes to a temp file beside the
// target, is fsynced, and only then renamed over it (rename is atomic within one directory).
import { open, rename, unlink } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { dirname } from 'node:path';

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
 * `path`. If anything fails the temp file is removed and the error rethrown; `path` is untouched.
 */
export async function withAtomicFile<T>(path: string, fill: (handle: FileHandle) => Promise<T>): Promise<T> {
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`;
  const handle = await open(tmp, 'wx');
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
    throw err;
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
