/**
 * An input the user gave is wrong — a flag, a path, a run that cannot be resumed with these
 * settings — as opposed to a fault while working. The CLI prints its message and exits 2.
 */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}
