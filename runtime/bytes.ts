/** Byte counts as people write them: 51.5 MiB out, 2G or 512M in. */

export function formatBytes(b: number): string {
  if (b < 1024) return `${b} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = b / 1024;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v.toFixed(v < 10 ? 2 : 1)} ${units[u]}`;
}

/** Bytes from "3.5G", "512MiB", "1048576" (binary units); throws naming `what` on anything else. */
export function parseBytes(text: string, what: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(?:([KMG])(?:i?B)?)?\s*$/i.exec(text);
  if (m === null) throw new Error(`${what}: expected a byte count like 2G, 512M or 1048576, got ${JSON.stringify(text)}`);
  const scale = { K: 2 ** 10, M: 2 ** 20, G: 2 ** 30 }[(m[2] ?? '').toUpperCase() as 'K' | 'M' | 'G'] ?? 1;
  return Math.floor(Number(m[1]) * scale);
}
