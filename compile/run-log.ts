/**
 * RUN/log.jsonl: one JSON line per logged step. Lines are appended whole or not at all, so a
 * crash or a full disk never leaves half a line; a log that has one anyway (a power cut, an
 * older writer) loses just that line on resume, with a message.
 */
import { open, readFile, type FileHandle } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { ioError, writeAllAt, writeFileAtomic } from '../formats/atomic-write.ts';
import type { StepLosses } from './train.ts';

/** Sample quality of the EMA weights at a step (mdt train --eval-every). */
export interface EvalMetrics {
  readonly fid?: number;
  readonly class_accuracy?: number;
  readonly eval_samples?: number;
}

export type LogRecord = { readonly step: number } & StepLosses & EvalMetrics;

/**
 * Appends `rec` as one line. A write cut short (ENOSPC, EIO) is cut back to the previous end of
 * the file before the error, which names the file, is rethrown.
 */
export async function appendLogLine(path: string, rec: LogRecord): Promise<void> {
  const line = Buffer.from(`${JSON.stringify(rec)}\n`, 'utf8');
  let handle: FileHandle;
  try {
    handle = await open(path, 'a');
  } catch (e) {
    throw ioError('appending to', path, e);
  }
  try {
    const { size } = await handle.stat();
    try {
      await writeAllAt(handle, line, size);
    } catch (e) {
      await handle.truncate(size).catch(() => undefined);
      throw e;
    }
  } catch (e) {
    throw ioError('appending to', path, e);
  } finally {
    await handle.close().catch(() => undefined);
  }
}

/**
 * The records of steps ≤ `upTo`, with the file rewritten to hold just those (a resumed run
 * writes the later steps again). Lines that do not parse are dropped, each reported through
 * `onMessage`: a torn last line is the trace of an interrupted append, not an error.
 */
export async function keepLogUpTo(path: string, upTo: number, onMessage: (text: string) => void): Promise<LogRecord[]> {
  if (!existsSync(path)) return [];
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw ioError('reading', path, e);
  }
  const lines = text.split('\n');
  const kept: LogRecord[] = [];
  const keptLines: string[] = [];
  lines.forEach((line, i) => {
    if (line.trim() === '') return;
    const torn = i === lines.length - 1;
    let rec: LogRecord | null = null;
    try {
      rec = JSON.parse(line) as LogRecord;
    } catch {
      // handled below
    }
    if (rec === null || typeof rec !== 'object' || !Number.isInteger(rec.step)) {
      onMessage(torn
        ? `${path}: dropped a torn last line (${line.length} characters without a newline: an append cut short by a crash or a full disk)`
        : `${path}: dropped line ${i + 1}, which is not a log record: ${JSON.stringify(line.slice(0, 60))}`);
      return;
    }
    if (rec.step > upTo) return;
    kept.push(rec);
    keptLines.push(`${line}\n`);
  });
  await writeFileAtomic(path, keptLines.join(''));
  return kept;
}
